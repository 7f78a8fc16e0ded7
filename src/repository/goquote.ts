// Go strconv.Quote / strconv.Unquote on raw bytes. restic stores every node name as the body of
// strconv.Quote(name) (outer quotes removed) before JSON-encoding it, which makes names of any
// bytes (invalid UTF-8, control characters) survive losslessly. Names are Buffers end to end here.

import { IntegrityError } from '../core/errors.js';

// Go's unicode.IsPrint (Go 1.19, Unicode 13): letters, marks, numbers, punctuation, symbols and the
// ASCII space. We approximate it with the JS Unicode property classes below, which follow the ICU
// Unicode version Node ships (15.x): code points assigned after Unicode 13 count as printable here
// but not in Go 1.19. Everything else (other spaces like U+00A0, format chars like U+00AD/U+200B,
// line/paragraph separators U+2028/U+2029, private use, unassigned) is escaped as \u / \U.
const PRINTABLE_RE = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;

const HEX = '0123456789abcdef';

function hex2(b: number): string {
  return HEX[b >> 4]! + HEX[b & 15]!;
}

function isPrint(cp: number): boolean {
  if (cp < 0x80) return cp >= 0x20 && cp < 0x7f;
  if (cp < 0x100) return cp >= 0xa1 && cp !== 0xad; // Go's Latin-1 fast path (same result as the tables)
  return PRINTABLE_RE.test(String.fromCodePoint(cp));
}

/**
 * Decodes one UTF-8 sequence at `i` exactly like Go's utf8.DecodeRune: returns [rune, width], or
 * [-1, 1] for an invalid/truncated/overlong/surrogate sequence (Go's (RuneError, 1)).
 */
export function decodeRuneGo(b: Uint8Array, i: number): [number, number] {
  const c0 = b[i]!;
  if (c0 < 0x80) return [c0, 1];
  let need: number;
  let lo = 0x80;
  let hi = 0xbf;
  let cp: number;
  if (c0 >= 0xc2 && c0 <= 0xdf) {
    need = 1;
    cp = c0 & 0x1f;
  } else if (c0 >= 0xe0 && c0 <= 0xef) {
    need = 2;
    cp = c0 & 0x0f;
    if (c0 === 0xe0) lo = 0xa0;
    else if (c0 === 0xed) hi = 0x9f; // no surrogates
  } else if (c0 >= 0xf0 && c0 <= 0xf4) {
    need = 3;
    cp = c0 & 0x07;
    if (c0 === 0xf0) lo = 0x90;
    else if (c0 === 0xf4) hi = 0x8f;
  } else {
    return [-1, 1];
  }
  if (i + need >= b.length) return [-1, 1]; // truncated
  const c1 = b[i + 1]!;
  if (c1 < lo || c1 > hi) return [-1, 1];
  cp = (cp << 6) | (c1 & 0x3f);
  for (let k = 2; k <= need; k++) {
    const ck = b[i + k]!;
    if (ck < 0x80 || ck > 0xbf) return [-1, 1];
    cp = (cp << 6) | (ck & 0x3f);
  }
  return [cp, need + 1];
}

/** Body of Go's strconv.Quote(string(name)), without the surrounding double quotes. */
export function goQuote(name: Uint8Array): string {
  let out = '';
  let i = 0;
  const n = name.length;
  while (i < n) {
    const c = name[i]!;
    // ASCII fast path
    if (c < 0x80) {
      i++;
      if (c === 0x22) out += '\\"';
      else if (c === 0x5c) out += '\\\\';
      else if (c >= 0x20 && c < 0x7f) out += String.fromCharCode(c);
      else {
        switch (c) {
          case 0x07: out += '\\a'; break;
          case 0x08: out += '\\b'; break;
          case 0x0c: out += '\\f'; break;
          case 0x0a: out += '\\n'; break;
          case 0x0d: out += '\\r'; break;
          case 0x09: out += '\\t'; break;
          case 0x0b: out += '\\v'; break;
          default: out += '\\x' + hex2(c);
        }
      }
      continue;
    }
    const [cp, width] = decodeRuneGo(name, i);
    if (cp < 0) {
      out += '\\x' + hex2(c);
      i += 1;
      continue;
    }
    i += width;
    if (isPrint(cp)) out += String.fromCodePoint(cp);
    else if (cp < 0x10000) out += '\\u' + cp.toString(16).padStart(4, '0');
    else out += '\\U' + cp.toString(16).padStart(8, '0');
  }
  return out;
}

function bad(body: string, why: string): IntegrityError {
  const shown = body.length > 80 ? body.slice(0, 80) + '…' : body;
  return new IntegrityError(`invalid Go-quoted name ${JSON.stringify(shown)}: ${why}`, {
    hint: 'the tree was not written by restic or is damaged; run `dmctl check`',
  });
}

function hexVal(ch: number): number {
  if (ch >= 0x30 && ch <= 0x39) return ch - 0x30;
  if (ch >= 0x61 && ch <= 0x66) return ch - 0x61 + 10;
  if (ch >= 0x41 && ch <= 0x46) return ch - 0x41 + 10;
  return -1;
}

/**
 * Inverse of goQuote: Go's strconv.Unquote(`"` + body + `"`) as bytes. Accepts every escape Go
 * accepts in a double-quoted string (\a \b \f \n \r \t \v \\ \" \' is rejected, \xNN, octal \NNN,
 * \uNNNN, \UNNNNNNNN). Throws IntegrityError on malformed input (bare `"`, newline, bad escape).
 */
export function goUnquote(body: string): Buffer {
  // Fast path: nothing to unescape.
  if (!/[\\"\n]/.test(body)) return Buffer.from(body, 'utf8');
  const parts: Buffer[] = [];
  let lit = '';
  const flush = (): void => {
    if (lit !== '') {
      parts.push(Buffer.from(lit, 'utf8'));
      lit = '';
    }
  };
  let i = 0;
  const n = body.length;
  while (i < n) {
    const ch = body.charCodeAt(i);
    if (ch === 0x22) throw bad(body, 'unescaped double quote');
    if (ch === 0x0a) throw bad(body, 'newline');
    if (ch !== 0x5c) {
      lit += body[i];
      i++;
      continue;
    }
    if (i + 1 >= n) throw bad(body, 'trailing backslash');
    const e = body[i + 1]!;
    i += 2;
    switch (e) {
      case 'a': lit += '\x07'; break;
      case 'b': lit += '\b'; break;
      case 'f': lit += '\f'; break;
      case 'n': lit += '\n'; break;
      case 'r': lit += '\r'; break;
      case 't': lit += '\t'; break;
      case 'v': lit += '\v'; break;
      case '\\': lit += '\\'; break;
      case '"': lit += '"'; break;
      case 'x': {
        if (i + 2 > n) throw bad(body, 'short \\x escape');
        const h = hexVal(body.charCodeAt(i));
        const l = hexVal(body.charCodeAt(i + 1));
        if (h < 0 || l < 0) throw bad(body, 'bad \\x escape');
        flush();
        parts.push(Buffer.of(h * 16 + l));
        i += 2;
        break;
      }
      case 'u':
      case 'U': {
        const len = e === 'u' ? 4 : 8;
        if (i + len > n) throw bad(body, `short \\${e} escape`);
        let v = 0;
        for (let k = 0; k < len; k++) {
          const d = hexVal(body.charCodeAt(i + k));
          if (d < 0) throw bad(body, `bad \\${e} escape`);
          v = v * 16 + d;
        }
        if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) throw bad(body, `invalid code point in \\${e} escape`);
        lit += String.fromCodePoint(v);
        i += len;
        break;
      }
      case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
        if (i + 2 > n) throw bad(body, 'short octal escape');
        let v = Number(e);
        for (let k = 0; k < 2; k++) {
          const d = body.charCodeAt(i + k) - 0x30;
          if (d < 0 || d > 7) throw bad(body, 'bad octal escape');
          v = v * 8 + d;
        }
        if (v > 255) throw bad(body, 'octal escape out of range');
        flush();
        parts.push(Buffer.of(v));
        i += 2;
        break;
      }
      default:
        throw bad(body, `unknown escape \\${e}`);
    }
  }
  flush();
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}
