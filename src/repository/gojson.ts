// Go encoding/json compatibility for restic's trees and snapshots: the exact string escaping of
// go1.19's encoder, and a small parser that keeps numbers as their raw text (uint64 fields such as
// inode or size exceed 2^53) and keeps object keys in order.
//
// Invalid UTF-8 in Go strings: Go's encoder writes every byte that is not part of a valid UTF-8
// sequence as the six characters `\ufffd`. A JS string cannot hold such bytes, so this module uses
// a lone surrogate code unit (INVALID_MARK) as the in-memory stand-in: goStringFromBytes turns each
// invalid byte into INVALID_MARK, goJsonString writes INVALID_MARK (any lone surrogate) as `\ufffd`,
// and the parser turns the escape `\ufffd` back into INVALID_MARK. That way a tree restic wrote
// re-encodes to the same bytes. (A real U+FFFD character is written literally by Go, and is kept
// literal here too.) The original invalid byte values are lost, as in restic.

import { IntegrityError } from '../core/errors.js';
import { decodeRuneGo } from './goquote.js';

/** Stand-in for "a byte Go would write as \ufffd" inside JS strings. */
export const INVALID_MARK = '\udfff';
/** Byte used for INVALID_MARK when a lossy string becomes bytes again (e.g. a symlink target). */
export const INVALID_BYTE = 0xff;

const HEX = '0123456789abcdef';

function isHtmlUnsafeAscii(c: number): boolean {
  return c < 0x20 || c === 0x22 || c === 0x5c || c === 0x3c || c === 0x3e || c === 0x26;
}

/**
 * A JSON string literal (with quotes) exactly as go1.19 `encoding/json` writes a Go string
 * (HTML-safe escaping on, as json.Marshal does). Lone surrogates are written as `\ufffd`.
 */
export function goJsonString(s: string): string {
  let out = '"';
  let start = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      if (!isHtmlUnsafeAscii(c)) continue;
      out += s.slice(start, i);
      switch (c) {
        case 0x5c: out += '\\\\'; break;
        case 0x22: out += '\\"'; break;
        case 0x0a: out += '\\n'; break;
        case 0x0d: out += '\\r'; break;
        case 0x09: out += '\\t'; break;
        default: out += '\\u00' + HEX[c >> 4] + HEX[c & 15];
      }
      start = i + 1;
      continue;
    }
    if (c === 0x2028 || c === 0x2029) {
      out += s.slice(start, i) + (c === 0x2028 ? '\\u2028' : '\\u2029');
      start = i + 1;
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++; // valid pair: literal
        continue;
      }
      out += s.slice(start, i) + '\\ufffd';
      start = i + 1;
    }
  }
  return out + s.slice(start) + '"';
}

/**
 * Bytes as Go sees them in a `string`: valid UTF-8 sequences become their characters, each byte of
 * an invalid sequence becomes INVALID_MARK (decoded exactly like Go's utf8.DecodeRune).
 */
export function goStringFromBytes(b: Uint8Array): string {
  let ascii = true;
  for (let i = 0; i < b.length; i++) {
    if (b[i]! >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
  let out = '';
  let i = 0;
  while (i < b.length) {
    const [cp, w] = decodeRuneGo(b, i);
    out += cp < 0 ? INVALID_MARK : String.fromCodePoint(cp);
    i += w;
  }
  return out;
}

/** Inverse of goStringFromBytes: UTF-8, with each lone surrogate (INVALID_MARK) as byte 0xFF. */
export function bytesFromGoString(s: string): Buffer {
  if (!/[\ud800-\udfff]/.test(s)) return Buffer.from(s, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
    if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      i++;
      continue;
    }
    parts.push(Buffer.from(s.slice(start, i), 'utf8'), Buffer.of(INVALID_BYTE));
    start = i + 1;
  }
  parts.push(Buffer.from(s.slice(start), 'utf8'));
  return Buffer.concat(parts);
}

/**
 * JSON string literal (with quotes) for bytes held in a Go `string` field that is not Go-quoted
 * (symlink target, user/group, xattr name): invalid UTF-8 is written as `\ufffd`, lossy as in restic.
 */
export function bytesToGoJsonLossy(b: Uint8Array): string {
  return goJsonString(goStringFromBytes(b));
}

// ---------------------------------------------------------------------------------------------
// Parser

/** A JSON number kept as its source text. */
export class JsonNumber {
  constructor(readonly raw: string) {}
  toString(): string {
    return this.raw;
  }
}

/** A JSON object: [key, value, raw source text of the value] in source order (duplicates kept). */
export class JsonObject {
  constructor(readonly entries: Array<[string, JsonValue, string]>) {}
}

export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;

/** Raw JSON text kept verbatim for re-encoding (unknown keys of trees and snapshots). */
export class RawJson {
  constructor(readonly text: string) {}
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

class Parser {
  private i = 0;
  constructor(private readonly s: string, private readonly what: string) {}

  fail(why: string): never {
    throw new IntegrityError(`${this.what} is not valid JSON: ${why} at offset ${this.i}`, {
      hint: 'the repository object is damaged or was not written by restic; run `dmctl check`',
    });
  }

  ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.i++;
      else break;
    }
  }

  document(): JsonValue {
    this.ws();
    const v = this.value();
    this.ws();
    if (this.i !== this.s.length) this.fail('trailing data');
    return v;
  }

  /** Parses one value and returns it together with its raw source text. */
  valueWithRaw(): [JsonValue, string] {
    const start = this.i;
    const v = this.value();
    return [v, this.s.slice(start, this.i)];
  }

  value(): JsonValue {
    const s = this.s;
    if (this.i >= s.length) this.fail('unexpected end');
    const c = s[this.i]!;
    switch (c) {
      case '{': return this.object();
      case '[': return this.array();
      case '"': return this.string();
      case 't': return this.literal('true', true);
      case 'f': return this.literal('false', false);
      case 'n': return this.literal('null', null);
      default:
        if (c === '-' || (c >= '0' && c <= '9')) return this.number();
        this.fail(`unexpected character ${JSON.stringify(c)}`);
    }
  }

  literal<T extends JsonValue>(word: string, v: T): T {
    if (!this.s.startsWith(word, this.i)) this.fail('bad literal');
    this.i += word.length;
    return v;
  }

  /** A JSON number (the longest prefix the grammar allows, as a sticky regex would match), scanned without allocating a match. */
  number(): JsonNumber {
    const s = this.s;
    const start = this.i;
    let i = start;
    if (s.charCodeAt(i) === 0x2d) i++;
    const first = s.charCodeAt(i);
    if (first === 0x30) i++;
    else if (first >= 0x31 && first <= 0x39) {
      i++;
      while (isDigit(s.charCodeAt(i))) i++;
    } else this.fail('bad number');
    if (s.charCodeAt(i) === 0x2e && isDigit(s.charCodeAt(i + 1))) {
      i += 2;
      while (isDigit(s.charCodeAt(i))) i++;
    }
    const e = s.charCodeAt(i);
    if (e === 0x65 || e === 0x45) {
      let j = i + 1;
      const sign = s.charCodeAt(j);
      if (sign === 0x2b || sign === 0x2d) j++;
      if (isDigit(s.charCodeAt(j))) {
        j++;
        while (isDigit(s.charCodeAt(j))) j++;
        i = j;
      }
    }
    this.i = i;
    return new JsonNumber(s.slice(start, i));
  }

  string(): string {
    const s = this.s;
    this.i++; // opening quote
    // fast path: no escapes and no control characters up to the closing quote
    const close = s.indexOf('"', this.i);
    if (close >= 0) {
      let plain = true;
      for (let k = this.i; k < close; k++) {
        const c = s.charCodeAt(k);
        if (c === 0x5c || c < 0x20) {
          plain = false;
          break;
        }
      }
      if (plain) {
        const v = s.slice(this.i, close);
        this.i = close + 1;
        return v;
      }
    }
    let out = '';
    let start = this.i;
    for (;;) {
      if (this.i >= s.length) this.fail('unterminated string');
      const c = s.charCodeAt(this.i);
      if (c === 0x22) {
        out += s.slice(start, this.i);
        this.i++;
        return out;
      }
      if (c < 0x20) this.fail('control character in string');
      if (c !== 0x5c) {
        this.i++;
        continue;
      }
      out += s.slice(start, this.i);
      const e = s[this.i + 1];
      this.i += 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const u = this.hex4();
          if (u === 0xfffd && /^fffd$/i.test(s.slice(this.i - 4, this.i))) {
            out += INVALID_MARK; // Go's encoding of an invalid byte: see the file comment
          } else if (u >= 0xd800 && u <= 0xdbff && s.startsWith('\\u', this.i)) {
            const save = this.i;
            this.i += 2;
            const lo = this.hex4();
            if (lo >= 0xdc00 && lo <= 0xdfff) out += String.fromCharCode(u, lo);
            else {
              out += '\ufffd'; // Go: an unpaired surrogate decodes to U+FFFD
              this.i = save;
            }
          } else if (u >= 0xd800 && u <= 0xdfff) {
            out += '\ufffd';
          } else {
            out += String.fromCharCode(u);
          }
          break;
        }
        default:
          this.i -= 1;
          this.fail('bad escape');
      }
      start = this.i;
    }
  }

  hex4(): number {
    const h = this.s.slice(this.i, this.i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) this.fail('bad \\u escape');
    this.i += 4;
    return parseInt(h, 16);
  }

  array(): JsonValue[] {
    this.i++;
    const out: JsonValue[] = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value());
      this.ws();
      const c = this.s[this.i];
      this.i++;
      if (c === ']') return out;
      if (c !== ',') {
        this.i--;
        this.fail('expected , or ]');
      }
    }
  }

  object(): JsonObject {
    this.i++;
    const entries: Array<[string, JsonValue, string]> = [];
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return new JsonObject(entries);
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('expected object key');
      const k = this.string();
      this.ws();
      if (this.s[this.i] !== ':') this.fail('expected :');
      this.i++;
      this.ws();
      const [v, raw] = this.valueWithRaw();
      entries.push([k, v, raw]);
      this.ws();
      const c = this.s[this.i];
      this.i++;
      if (c === '}') return new JsonObject(entries);
      if (c !== ',') {
        this.i--;
        this.fail('expected , or }');
      }
    }
  }
}

/**
 * Parses JSON text (a Buffer is decoded as UTF-8, invalid bytes becoming U+FFFD as in Go).
 * `what` names the object in error messages ("tree", "snapshot").
 */
export function parseGoJson(input: Uint8Array | string, what = 'data'): JsonValue {
  const text = typeof input === 'string' ? input : new TextDecoder('utf-8').decode(input);
  return new Parser(text, what).document();
}

/** Looks a key up like Go's decoder: keys match case-insensitively and the last duplicate wins. */
export function getKey(obj: JsonObject, key: string): JsonValue | undefined {
  let found: JsonValue | undefined;
  const lower = key.toLowerCase();
  for (const [k, v] of obj.entries) if (k === key || k.toLowerCase() === lower) found = v;
  return found;
}

/** Encodes a value of `extra` (RawJson verbatim; plain JS values as JSON). */
export function encodeExtraValue(v: unknown): string {
  if (v instanceof RawJson) return v.text;
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'string') return goJsonString(v);
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return '[' + v.map(encodeExtraValue).join(',') + ']';
  if (typeof v === 'object') {
    return '{' + Object.entries(v as Record<string, unknown>).map(([k, x]) => goJsonString(k) + ':' + encodeExtraValue(x)).join(',') + '}';
  }
  return JSON.stringify(v);
}
