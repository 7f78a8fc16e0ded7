import { test } from 'node:test';
import assert from 'node:assert/strict';
import { goQuote, goUnquote } from '../../src/repository/goquote.js';
import { IntegrityError } from '../../src/core/errors.js';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
const raw = (...parts: Array<string | number[]>): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

// Expected bodies written from Go's strconv.Quote rules (reference §9.4).
const CASES: Array<[Buffer, string]> = [
  [b('plain.txt'), 'plain.txt'],
  [b('with space'), 'with space'],
  [b('a\\b'), 'a\\\\b'],
  [b('q"t'), 'q\\"t'],
  [b("it's"), "it's"],
  [b('nl\nx'), 'nl\\nx'],
  [b('tab\tx'), 'tab\\tx'],
  [b('\x07\b\f\r\v'), '\\a\\b\\f\\r\\v'],
  [b('\x00\x01\x1f'), '\\x00\\x01\\x1f'],
  [b('del\x7f'), 'del\\x7f'],
  [raw('bad', [0xff], 'byte'), 'bad\\xffbyte'],
  [b('café'), 'café'],
  [b('ls\u2028x'), 'ls\\u2028x'],
  [b('ps\u2029'), 'ps\\u2029'],
  [b('<&>'), '<&>'],
  [b('nbsp\u00a0'), 'nbsp\\u00a0'],
  [b('shy\u00ad'), 'shy\\u00ad'],
  [b('zwsp\u200b'), 'zwsp\\u200b'],
  [b('\u00a1\u00ff'), '\u00a1\u00ff'],
  [b('emoji😀'), 'emoji😀'],
  [b('日本語'), '日本語'],
  [b('\ue000'), '\\ue000'], // private use
  [b('\u{f0000}'), '\\U000f0000'], // supplementary private use
  [b('\u0378'), '\\u0378'], // unassigned
  [b('\ufffd'), '\ufffd'], // a real U+FFFD is printable
  [raw([0xed, 0xa0, 0x80]), '\\xed\\xa0\\x80'], // UTF-8-encoded surrogate is invalid
  [raw([0xc0, 0xaf]), '\\xc0\\xaf'], // overlong
  [raw('x', [0xe2, 0x82]), 'x\\xe2\\x82'], // truncated at the end
  [raw([0xe2, 0x82], 'A'), '\\xe2\\x82A'],
  [raw([0xf4, 0x90, 0x80, 0x80]), '\\xf4\\x90\\x80\\x80'], // above U+10FFFF
  [raw([0x80]), '\\x80'],
  [b(''), ''],
];

test('goQuote matches Go strconv.Quote bodies', () => {
  for (const [name, want] of CASES) assert.equal(goQuote(name), want, name.toString('hex'));
});

test('goUnquote inverts goQuote byte-exactly', () => {
  for (const [name, body] of CASES) assert.deepEqual(goUnquote(body), name, body);
});

test('goUnquote accepts every Go escape form', () => {
  assert.deepEqual(goUnquote('\\101\\x42\\u00e9\\U0001F600\\377'), raw('AB', [0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80, 0xff]));
  assert.deepEqual(goUnquote('\\X'.replace('X', 'x') + 'FF'), raw([0xff])); // upper-case hex digits
  assert.deepEqual(goUnquote("it's"), b("it's"));
  assert.deepEqual(goUnquote('tab\tliteral'), b('tab\tliteral')); // a literal tab is allowed by Unquote
});

test('goUnquote rejects what Go rejects', () => {
  for (const bad of ['"', 'a"b', "\\'", '\\q', '\\u12', '\\x4', '\\400', '\\ud800', '\\U00110000', 'x\\', 'nl\nx', '\\8']) {
    assert.throws(() => goUnquote(bad), IntegrityError, JSON.stringify(bad));
  }
});
