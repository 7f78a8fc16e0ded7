// Kanister phase outputs: the one line Kanister's output parser picks out of a phase's stdout.
// Byte-for-byte what kando writes: fmt.Fprintln(w, "###Phase-output###:", json.Marshal(Output{key, value})),
// i.e. the marker, one space, the JSON object with Go's string escaping, and "\n".

import { UsageError } from '../core/errors.js';

export const PHASE_OUTPUT_MARKER = '###Phase-output###:';

/** Keys Kanister accepts (pkg/output: non-empty, letters, digits and underscore). */
export const PHASE_OUTPUT_KEY_RE = /^[a-zA-Z0-9_]*$/;

export function validatePhaseOutputKey(key: string): void {
  if (key === '') throw new UsageError('phase output key is empty', 'use letters, digits and underscore, e.g. backupInfo');
  if (!PHASE_OUTPUT_KEY_RE.test(key)) {
    throw new UsageError(`invalid phase output key ${JSON.stringify(key)}: only letters, digits and underscore are allowed`, 'e.g. backupInfo or snapshot_id');
  }
}

const HEX = '0123456789abcdef';

/**
 * A JSON string literal exactly as Go's encoding/json Marshal writes it (HTML-safe mode):
 * `"` and `\` backslash-escaped; \b \f \n \r \t short escapes; other control characters as \u00XX
 * (lowercase hex); `<` `>` `&` as \u003c \u003e \u0026; U+2028 and U+2029 as \u2028 \u2029;
 * invalid UTF-16 (lone surrogates, which is what invalid UTF-8 becomes here) as \ufffd; everything
 * else, including DEL and non-ASCII, as raw UTF-8.
 */
export function goJsonString(s: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | undefined;
    if (c < 0x20 || c === 0x22 || c === 0x5c || c === 0x3c || c === 0x3e || c === 0x26) {
      switch (c) {
        case 0x22: esc = '\\"'; break;
        case 0x5c: esc = '\\\\'; break;
        case 0x08: esc = '\\b'; break;
        case 0x0c: esc = '\\f'; break;
        case 0x0a: esc = '\\n'; break;
        case 0x0d: esc = '\\r'; break;
        case 0x09: esc = '\\t'; break;
        default: esc = '\\u00' + HEX[c >> 4] + HEX[c & 0xf];
      }
    } else if (c === 0x2028 || c === 0x2029) {
      esc = c === 0x2028 ? '\\u2028' : '\\u2029';
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const isHigh = c <= 0xdbff;
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (isHigh && next >= 0xdc00 && next <= 0xdfff) {
        i++; // a valid pair: raw
        continue;
      }
      esc = '\\ufffd';
    }
    if (esc !== undefined) {
      out += s.slice(start, i) + esc;
      start = i + 1;
    }
  }
  return out + s.slice(start) + '"';
}

/**
 * The phase-output line for `key` and `value`, ending in "\n":
 * `###Phase-output###: {"key":"<k>","value":"<v>"}`. Throws UsageError for an invalid key.
 */
export function phaseOutputLine(key: string, value: string): string {
  validatePhaseOutputKey(key);
  return `${PHASE_OUTPUT_MARKER} {"key":${goJsonString(key)},"value":${goJsonString(value)}}\n`;
}
