// Kanister phase-output lines: the expected strings below are written by hand from Go's rules
// (fmt.Fprintln puts one space between operands and a "\n" at the end; encoding/json Marshal
// escapes " \ and control characters, and in its default HTML-safe mode < > & U+2028 U+2029).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PHASE_OUTPUT_MARKER, goJsonString, phaseOutputLine, validatePhaseOutputKey } from '../../src/kanister/output.js';
import { DmctlError, EXIT_CODES } from '../../src/core/errors.js';

test('marker and line shape', () => {
  assert.equal(PHASE_OUTPUT_MARKER, '###Phase-output###:');
  assert.equal(phaseOutputLine('snapshotID', 'abc123'), '###Phase-output###: {"key":"snapshotID","value":"abc123"}\n');
  assert.equal(phaseOutputLine('k', ''), '###Phase-output###: {"key":"k","value":""}\n');
});

test('HTML characters are escaped as Go does', () => {
  assert.equal(phaseOutputLine('k', 'a<b>c&d'), '###Phase-output###: {"key":"k","value":"a\\u003cb\\u003ec\\u0026d"}\n');
});

test('quotes, backslashes, slashes', () => {
  assert.equal(goJsonString('say "hi" \\ /path'), '"say \\"hi\\" \\\\ /path"');
});

test('control characters: short escapes and lowercase \\u00XX', () => {
  assert.equal(goJsonString('a\nb\rc\td'), '"a\\nb\\rc\\td"');
  assert.equal(goJsonString('\b\f'), '"\\b\\f"');
  assert.equal(goJsonString('\u0000\u0001\u001b\u001f'), '"\\u0000\\u0001\\u001b\\u001f"');
  // DEL is not escaped by Go.
  assert.deepEqual(Buffer.from(goJsonString('\u007f')), Buffer.from([0x22, 0x7f, 0x22]));
});

test('non-ASCII stays raw UTF-8, except U+2028/U+2029', () => {
  const line = phaseOutputLine('k', 'é😀\u2028\u2029');
  const expected = Buffer.concat([
    Buffer.from('###Phase-output###: {"key":"k","value":"', 'latin1'),
    Buffer.from([0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80]),
    Buffer.from('\\u2028\\u2029"}\n', 'latin1'),
  ]);
  assert.deepEqual(Buffer.from(line, 'utf8'), expected);
});

test('lone surrogates become \\ufffd (Go replaces invalid UTF-8 the same way)', () => {
  assert.equal(goJsonString('a\ud800b'), '"a\\ufffdb"');
  assert.equal(goJsonString('\udc00'), '"\\ufffd"');
  assert.equal(goJsonString('x\ud83d'), '"x\\ufffd"');
});

test('a value mixing everything', () => {
  const v = '{"id":"4f2a","size":12}\n<é>';
  assert.equal(
    phaseOutputLine('backupInfo', v),
    '###Phase-output###: {"key":"backupInfo","value":"{\\"id\\":\\"4f2a\\",\\"size\\":12}\\n\\u003cé\\u003e"}\n',
  );
});

test('the JSON after the marker parses back to key and value', () => {
  const samples = ['', 'plain', '<&>', '"\\', '\u0000\u001f\u007f', 'é中😀', '\u2028x\u2029', 'line1\nline2\r\n'];
  for (const v of samples) {
    const line = phaseOutputLine('k_1', v);
    assert.ok(line.startsWith(PHASE_OUTPUT_MARKER + ' '));
    assert.ok(line.endsWith('}\n'));
    assert.equal(line.indexOf('\n'), line.length - 1, 'exactly one newline, at the end');
    assert.deepEqual(JSON.parse(line.slice(PHASE_OUTPUT_MARKER.length + 1)), { key: 'k_1', value: v });
  }
});

test('keys: non-empty, letters digits underscore only', () => {
  for (const ok of ['a', 'A_1', 'snapshot_id', '123', '_']) assert.doesNotThrow(() => validatePhaseOutputKey(ok));
  for (const bad of ['', 'a-b', 'a b', 'é', 'a.b', 'a\n', 'key"']) {
    assert.throws(
      () => phaseOutputLine(bad, 'v'),
      (e: unknown) => e instanceof DmctlError && e.exitCode === EXIT_CODES.USAGE && !e.message.includes('\n'),
      `key ${JSON.stringify(bad)} must be rejected`,
    );
  }
});
