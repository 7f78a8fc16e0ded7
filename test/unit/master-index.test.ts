// The compact master index: what addIndexBytes builds from an index file's bytes must answer every
// question exactly as the object path (decodeIndex + addFile) does, and a bad file must change nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { MasterIndex, decodeIndex, encodeIndex, type IndexFile, type IndexPack } from '../../src/repository/index-file.js';
import { IntegrityError } from '../../src/core/errors.js';
import type { PackedBlob } from '../../src/repository/pack.js';

const hex = () => crypto.randomBytes(32).toString('hex');

function randomPack(blobs: number, reuse: PackedBlob[] = []): IndexPack {
  const out: PackedBlob[] = [];
  let offset = 0;
  for (let i = 0; i < blobs; i++) {
    const length = 33 + crypto.randomInt(9_000_000);
    const type = crypto.randomInt(5) === 0 ? 'tree' : 'data';
    const compressed = crypto.randomInt(3) > 0;
    out.push({ id: hex(), type, offset, length, uncompressedLength: compressed ? length * 2 : 0 });
    offset += length;
  }
  // blobs stored again in this pack (the first location seen must win)
  for (const b of reuse) {
    out.push({ ...b, offset });
    offset += b.length;
  }
  return { id: hex(), blobs: out };
}

/** Every question the rest of dmctl asks, answered by both indexes alike. */
function assertSame(a: MasterIndex, b: MasterIndex, files: IndexFile[]): void {
  assert.equal(a.count(), b.count());
  assert.equal(a.count('data'), b.count('data'));
  assert.equal(a.count('tree'), b.count('tree'));
  assert.equal(a.packs.size, b.packs.size);
  assert.deepEqual([...a.packs.keys()], [...b.packs.keys()]);
  for (const [id, blobs] of b.packs) assert.deepEqual(a.packs.get(id), blobs, `pack ${id}`);
  for (const f of files) {
    for (const p of f.packs) {
      for (const blob of p.blobs) {
        for (const type of ['data', 'tree'] as const) {
          assert.deepEqual(a.lookup(type, blob.id), b.lookup(type, blob.id), `${type} ${blob.id}`);
          assert.equal(a.has(type, blob.id), b.has(type, blob.id));
        }
      }
    }
  }
  assert.deepEqual([...a.files].sort(), [...b.files].sort());
}

test('index files read from their bytes answer as the decoded objects do (duplicates, repeated packs, tables that grow)', () => {
  const first = randomPack(700);
  const files: IndexFile[] = [
    // 3700 blobs: the tables grow past their first size
    { packs: [first, randomPack(3000), randomPack(0)] },
    // blobs again in another pack, and the first file's pack listed again
    { supersedes: [hex()], packs: [randomPack(50, first.blobs.slice(0, 20)), first] },
    // the same pack twice in one file
    (() => {
      const p = randomPack(30);
      return { packs: [p, randomPack(10), p] };
    })(),
  ];
  const fast = new MasterIndex();
  const slow = new MasterIndex();
  files.forEach((f, i) => {
    const bytes = encodeIndex(f);
    fast.addIndexBytes(`file${i}`, bytes);
    slow.addFile(`file${i}`, decodeIndex(bytes));
  });
  assert.equal(fast.packs.size, 6);
  assertSame(fast, slow, files);
  // the first location of a blob stored twice wins
  const twice = first.blobs[3]!;
  assert.equal(fast.lookup(twice.type, twice.id)!.packId, first.id);
  assert.equal(fast.lookup(twice.type, twice.id)!.offset, twice.offset);
});

test('JSON restic may write differently: whitespace, key order, legacy list of packs, unknown keys, large numbers', () => {
  const a = hex();
  const b = hex();
  const p = hex();
  const text = `[ {"blobs": [ {"length": 6000000000, "uncompressed_length": 9007199254740991, "offset": 5000000000, "type": "tree", "id": "${a}", "extra": {"x": [1]}},
      {"type":"data","id":"${b}","length":44} ], "id": "${p}"} ]\n`;
  const fast = new MasterIndex();
  const slow = new MasterIndex();
  fast.addIndexBytes('legacy', Buffer.from(text));
  slow.addFile('legacy', decodeIndex(Buffer.from(text)));
  assert.deepEqual(fast.lookup('tree', a), { packId: p, type: 'tree', offset: 5_000_000_000, length: 6_000_000_000, uncompressedLength: 9007199254740991 });
  assert.deepEqual(fast.lookup('data', b), { packId: p, type: 'data', offset: 0, length: 44, uncompressedLength: 0 });
  assertSame(fast, slow, [decodeIndex(Buffer.from(text))]);
  // a blob added after the 64-bit switch keeps small values exact too
  const c = hex();
  fast.addPack(hex(), [{ id: c, type: 'data', offset: 7, length: 8, uncompressedLength: 9 }]);
  assert.deepEqual({ ...fast.lookup('data', c), packId: '' }, { packId: '', type: 'data', offset: 7, length: 8, uncompressedLength: 9 });
});

test('a bad index file: decodeIndex\'s error, and nothing of it is added', () => {
  const good = { packs: [randomPack(40)] };
  const idx = new MasterIndex();
  idx.addIndexBytes('good', encodeIndex(good));
  const before = { count: idx.count(), packs: idx.packs.size };
  const valid = randomPack(2000);
  const json = (last: string) => `{"packs":[${JSON.stringify({ id: valid.id, blobs: valid.blobs.map((b) => ({ id: b.id, type: b.type, offset: b.offset, length: b.length })) })},${last}]}`;
  const bad: [string, string][] = [
    ['not JSON', '{"packs":['],
    ['a pack ID that is not one', json(`{"id":"xyz","blobs":[]}`)],
    ['an unknown blob type', json(`{"id":"${hex()}","blobs":[{"id":"${hex()}","type":"snapshot","offset":0,"length":1}]}`)],
    ['an upper-case blob ID', json(`{"id":"${hex()}","blobs":[{"id":"${hex().toUpperCase()}","type":"data","offset":0,"length":1}]}`)],
    ['"packs" not a list', '{"packs":{}}'],
    ['a number', '42'],
  ];
  for (const [why, text] of bad) {
    let expected: unknown;
    try {
      decodeIndex(Buffer.from(text), 'index bad');
    } catch (err) {
      expected = err;
    }
    assert.ok(expected instanceof IntegrityError, `${why}: decodeIndex rejects it`);
    assert.throws(() => idx.addIndexBytes('bad', Buffer.from(text), 'index bad'), (err: unknown) => err instanceof IntegrityError && err.message === (expected as Error).message, why);
    assert.deepEqual({ count: idx.count(), packs: idx.packs.size }, before, `${why}: nothing added`);
    assert.equal(idx.lookup('data', valid.blobs[0]!.id), undefined, `${why}: the valid pack before the bad one is not added`);
    assert.equal(idx.files.has('bad'), false);
  }
  // the index still works, and takes the valid pack in a later file
  idx.addIndexBytes('valid', encodeIndex({ packs: [valid] }));
  assert.equal(idx.count(), before.count + 2000);
  for (const b of valid.blobs) assert.equal(idx.lookup(b.type, b.id)!.offset, b.offset);
  for (const b of good.packs[0]!.blobs) assert.equal(idx.lookup(b.type, b.id)!.length, b.length);
});

test('lookups of unknown, malformed and wrong-type IDs; clear() and loading again', () => {
  const idx = new MasterIndex();
  assert.equal(idx.lookup('data', hex()), undefined);
  const p = randomPack(300);
  idx.addPack(p.id, p.blobs);
  const blob = p.blobs[0]!;
  const other = blob.type === 'data' ? 'tree' : 'data';
  assert.equal(idx.has(other, blob.id), false);
  assert.equal(idx.lookup(blob.type, blob.id.slice(0, 63)), undefined);
  assert.equal(idx.lookup(blob.type, `${blob.id.slice(0, 62)}zz`), undefined);
  assert.equal(idx.lookup(blob.type, hex()), undefined);
  assert.throws(() => idx.addPack(hex(), [{ ...blob, id: 'nothex' }]), IntegrityError);
  assert.equal(idx.packs.size, 1);
  idx.clear();
  assert.equal(idx.count(), 0);
  assert.equal(idx.packs.size, 0);
  assert.equal(idx.has(blob.type, blob.id), false);
  idx.addIndexBytes('again', encodeIndex({ packs: [p] }));
  assert.equal(idx.count(), 300);
  assert.deepEqual(idx.packs.get(p.id), p.blobs.map((b) => ({ ...b, packId: p.id })));
});

test('index files as restic writes them are read by the byte scanner, whatever the whitespace and key order', () => {
  const p1 = randomPack(500);
  const p2 = randomPack(3);
  const plain = encodeIndex({ supersedes: [hex(), hex()], packs: [p1, p2] });
  const shapes: [string, Buffer][] = [
    ['as restic writes it', plain],
    ['empty', Buffer.from('{"packs":[]}\n')],
    ['no keys', Buffer.from('{}')],
    ['legacy list', Buffer.from(JSON.stringify([{ id: p2.id, blobs: p2.blobs.map((b) => ({ id: b.id, type: b.type, offset: b.offset, length: b.length })) }]))],
    ['indented, keys reordered', Buffer.from(JSON.stringify({ packs: [p1, p2].map((p) => ({ blobs: p.blobs.map((b) => ({ length: b.length, offset: b.offset, ...(b.uncompressedLength ? { uncompressed_length: b.uncompressedLength } : {}), type: b.type, id: b.id })), id: p.id })) }, null, '\t').replace(/\n/g, '\r\n'))],
  ];
  for (const [what, bytes] of shapes) {
    const fast = new MasterIndex();
    const slow = new MasterIndex();
    fast.addIndexBytes('f', bytes);
    slow.addFile('f', decodeIndex(bytes));
    assert.equal(fast.scanned, 1, `${what}: read by the scanner`);
    assertSame(fast, slow, [decodeIndex(bytes)]);
  }
  // an escape, an unknown key or a key given twice: JSON.parse's reading, the same answers
  const odd = [
    plain.toString().replace(`"id":"${p2.id}"`, `"\\u0069d":"${p2.id}"`),
    plain.toString().replace('"packs":', '"x":{"y":[1,"]"]},"packs":'),
    plain.toString().replace(`"id":"${p2.blobs[0]!.id}",`, `"id":"${hex()}","id":"${p2.blobs[0]!.id}",`),
    plain.toString().replace('"offset":0,', '"offset":0.0,'),
  ].map((t) => Buffer.from(t));
  for (const bytes of odd) {
    const fast = new MasterIndex();
    const slow = new MasterIndex();
    fast.addIndexBytes('f', bytes);
    slow.addFile('f', decodeIndex(bytes));
    assert.equal(fast.scanned, 0);
    assertSame(fast, slow, [decodeIndex(bytes)]);
  }
});

test('damaged index bytes: the scanner never accepts or reads what JSON.parse would not (500 random byte edits)', () => {
  const base = encodeIndex({ supersedes: [hex()], packs: [randomPack(6), randomPack(4)] });
  const alphabet = Buffer.from('{}[]:,"0123456789abcdef xyz-.eE\\\n');
  const b = base.toString();
  // edits that JSON.parse rejects or reads its own way, then random ones
  const chosen = [
    b.replace('"offset":0,', '"offset":00,'),
    b.replace('"offset":0,', '"offset":-0,'),
    b.replace('"offset":0,', '"offset":1e3,'),
    b.replace('"offset":0,', '"offset":12345678901234567890,'),
    b.replace('"type":"data"', '"type":"da\tta"'),
    b.replace('"type":"data"', '"type":"da\\u0074a"'),
    b.replace(']}]}', ']},]}'),
    b.replace('"packs":[', `"packs":[{"id":"${hex()}","blobs":[]}],"packs":[`),
    `${b} x`,
    `\ufeff${b}`,
  ].map((t) => Buffer.from(t));
  let accepted = 0;
  let rejected = 0;
  for (let n = 0; n < 500 + chosen.length; n++) {
    let text = Buffer.from(base);
    if (n < chosen.length) text = chosen[n]!;
    else {
      const edits = 1 + crypto.randomInt(3);
      for (let e = 0; e < edits; e++) {
        const at = crypto.randomInt(text.length);
        const c = alphabet[crypto.randomInt(alphabet.length)]!;
        const kind = crypto.randomInt(3);
        if (kind === 0) text[at] = c;
        else if (kind === 1) text = Buffer.concat([text.subarray(0, at), Buffer.from([c]), text.subarray(at)]);
        else text = Buffer.concat([text.subarray(0, at), text.subarray(at + 1)]);
      }
    }
    let reference: IndexFile | undefined;
    let expected: Error | undefined;
    try {
      reference = decodeIndex(text, 'index x');
    } catch (err) {
      expected = err as Error;
    }
    const fast = new MasterIndex();
    if (expected) {
      assert.throws(() => fast.addIndexBytes('x', text, 'index x'), (err: unknown) => err instanceof IntegrityError && err.message === expected!.message, text.toString());
      assert.equal(fast.count(), 0);
      assert.equal(fast.packs.size, 0);
      rejected++;
    } else {
      fast.addIndexBytes('x', text, 'index x');
      const slow = new MasterIndex();
      slow.addFile('x', reference!);
      assertSame(fast, slow, [reference!]);
      accepted++;
    }
  }
  // both outcomes were exercised
  assert.ok(accepted > 20 && rejected > 20, `accepted ${accepted}, rejected ${rejected}`);
});
