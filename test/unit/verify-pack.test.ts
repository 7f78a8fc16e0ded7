// Pack verification (check --read-data): the same problems are found on the main thread (thread-
// pool operations) and in the worker threads (synchronous operations, plaintexts decompressed into
// one reused buffer), and the worker pool passes answers, failures and crashes back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { newMasterKey, open, openInPlace, seal, sha256hex } from '../../src/repository/crypto.js';
import { compress, ScratchDecompressor } from '../../src/repository/compression.js';
import { PackBuilder } from '../../src/repository/pack.js';
import { verifyPackBytes, threadPoolOps, VerifyOps } from '../../src/maintenance/verify-pack.js';
import { WorkerPool } from '../../src/core/worker-pool.js';

const key = newMasterKey();

/** A pack of compressed blobs of several sizes (small ones and ones over the 64 KiB offload size). */
async function makePack() {
  const pb = new PackBuilder('data');
  const plains: Buffer[] = [];
  for (const size of [10, 5000, 70_000, 300_000, 2_000_000]) {
    const text = Buffer.from(Array.from({ length: size }, (_, i) => String.fromCharCode(97 + ((i * 7 + (i >> 5)) % 26))).join(''));
    const plain = Buffer.concat([text, crypto.randomBytes(100)]);
    plains.push(plain);
    const z = await compress(plain);
    pb.add(sha256hex(plain), seal(key, z), plain.length);
  }
  return { ...pb.finish(key), plains };
}

const scratch = new ScratchDecompressor();
const syncOps: VerifyOps = { open, decompress: (d, what) => scratch.decompress(d, what), sha256hex, blobConcurrency: 1 };

function workerPool(): WorkerPool {
  return new WorkerPool(new URL('../../src/maintenance/verify-worker.js', import.meta.url), 2, { encrypt: key.encrypt, macK: key.macK, macR: key.macR });
}

/** As check runs it: the pack copied into a larger shared buffer (a reused slot), verified in place. */
async function inWorker(pool: WorkerPool, id: string, data: Buffer, blobs: readonly { id: string }[]) {
  const buf = new SharedArrayBuffer(data.length + 4096);
  Buffer.from(buf).fill(0xa5).set(data);
  return pool.run<{ kind: string; id: string; message: string }[]>({ id, buf, size: data.length, blobs });
}

const inPlaceOps: VerifyOps = { ...syncOps, openInPlace };

test('an intact pack: no problems, on the main thread, with synchronous ops and in a worker', async () => {
  const { id, data, blobs } = await makePack();
  assert.deepEqual(await verifyPackBytes(key, id, data, blobs, threadPoolOps), []);
  assert.deepEqual(await verifyPackBytes(key, id, data, blobs, syncOps), []);
  const pool = workerPool();
  try {
    assert.deepEqual(await inWorker(pool, id, data, blobs), []);
  } finally {
    await pool.close();
  }
});

test('a flipped bit in each blob in turn: every way names that blob and the pack hash', async () => {
  const { id, data, blobs } = await makePack();
  const pool = workerPool();
  try {
    for (const b of blobs) {
      const bad = Buffer.from(data);
      bad[b.offset + Math.floor(b.length / 2)] ^= 0x10;
      for (const problems of [
        await verifyPackBytes(key, id, bad, blobs, threadPoolOps),
        await verifyPackBytes(key, id, bad, blobs, syncOps),
        await verifyPackBytes(key, id, Buffer.from(bad), blobs, inPlaceOps),
        await inWorker(pool, id, bad, blobs),
      ]) {
        const kinds = problems.map((p) => `${p.kind}:${p.id}`).sort();
        assert.deepEqual(kinds, [`blob:${b.id}`, `pack-hash:${id}`].sort(), JSON.stringify(problems));
        assert.match(problems.find((p) => p.kind === 'blob')!.message, /MAC mismatch/);
      }
    }
  } finally {
    await pool.close();
  }
});

test('a blob stored under the wrong ID is named, and the reused buffer gives each blob its own bytes', async () => {
  const { plains } = await makePack();
  // Header and index agree, but two blobs are filed under IDs their plaintext does not hash to.
  const pb = new PackBuilder('data');
  const wrong = new Set<string>();
  for (let i = 0; i < plains.length; i++) {
    const plain = plains[i]!;
    let bid = sha256hex(plain);
    if (i === 1 || i === 3) {
      bid = sha256hex(Buffer.concat([plain, Buffer.from('other')]));
      wrong.add(bid);
    }
    pb.add(bid, seal(key, await compress(plain)), plain.length);
  }
  const { id, data, blobs } = pb.finish(key);
  const pool = workerPool();
  try {
    for (const problems of [await verifyPackBytes(key, id, data, blobs, threadPoolOps), await verifyPackBytes(key, id, data, blobs, syncOps), await inWorker(pool, id, data, blobs)]) {
      assert.deepEqual(problems.map((p) => p.id).sort(), [...wrong].sort(), JSON.stringify(problems));
      for (const p of problems) assert.match(p.message, /content does not match its ID/);
    }
  } finally {
    await pool.close();
  }
  // Decompressing one blob after another into the same buffer gives each its own bytes.
  for (let i = 0; i < blobs.length; i++) {
    const b = blobs[i]!;
    const plain = await scratch.decompress(open(key, data.subarray(b.offset, b.offset + b.length)));
    assert.ok(Buffer.from(plain).equals(plains[i]!), `blob ${i}`);
  }
});

test('the worker pool: answers in order of jobs, passes failures, and rejects when a worker dies', async () => {
  const pool = new WorkerPool(new URL('../support/exit-worker.js', import.meta.url), 2);
  try {
    const answers = await Promise.all([1, 2, 3, 4, 5].map((n) => pool.run<number>({ n })));
    assert.deepEqual(answers, [2, 4, 6, 8, 10]);
    await assert.rejects(pool.run({ fail: 'no such thing' }), /no such thing/);
    assert.equal(await pool.run<number>({ n: 21 }), 42, 'a failed job leaves the worker usable');
    await assert.rejects(pool.run({ exit: 3 }), /exited \(code 3\)/);
    await assert.rejects(pool.run({ n: 1 }), /exited/, 'a pool with a dead worker refuses further jobs');
  } finally {
    await pool.close();
  }
});

test('in-place decryption: the plaintext of every blob, and a damaged one is left as it was', async () => {
  const { data, blobs, plains } = await makePack();
  const copy = Buffer.from(data);
  for (let i = 0; i < blobs.length; i++) {
    const b = blobs[i]!;
    const plain = await scratch.decompress(openInPlace(key, copy.subarray(b.offset, b.offset + b.length)));
    assert.ok(Buffer.from(plain).equals(plains[i]!), `blob ${i}`);
  }
  const b = blobs[3]!;
  const bad = Buffer.from(data);
  bad[b.offset + 40] ^= 1;
  const before = Buffer.from(bad);
  assert.throws(() => openInPlace(key, bad.subarray(b.offset, b.offset + b.length), 'blob x'), /blob x: ciphertext verification failed/);
  assert.ok(bad.equals(before), 'a blob whose MAC fails is not touched');
});

test('overlapping entries (unreadable header, index listing a blob twice): each verified from the original bytes', async () => {
  const { id, data, blobs } = await makePack();
  const bad = Buffer.from(data);
  bad[bad.length - 10] ^= 0xff; // the header's MAC fails: verification goes by the index entries
  const listed = [...blobs, { ...blobs[2]! }, { ...blobs[4]! }];
  const pool = workerPool();
  try {
    for (const problems of [
      await verifyPackBytes(key, id, Buffer.from(bad), listed, syncOps),
      await verifyPackBytes(key, id, Buffer.from(bad), listed, inPlaceOps),
      await inWorker(pool, id, bad, listed),
    ]) {
      // Decrypting a doubly listed blob twice in place would fail its second MAC check.
      assert.deepEqual(problems.map((p) => p.kind).sort(), ['pack-hash', 'pack-header'], JSON.stringify(problems));
    }
  } finally {
    await pool.close();
  }
});

test("a packer's header size, kept as blobs are added, is the size of the header it writes", async () => {
  const pb = new PackBuilder('data');
  for (let i = 0; i < 300; i++) {
    const plain = crypto.randomBytes(1 + (i % 50));
    // compressed and uncompressed entries have different header sizes
    pb.add(sha256hex(plain), seal(key, plain), i % 3 === 0 ? 0 : plain.length);
    if (i % 37 === 0) assert.equal(pb.headerSize(), 4 + 32 + pb.blobs.reduce((s, b) => s + (b.uncompressedLength ? 41 : 37), 0));
  }
  const before = pb.headerSize();
  const blobBytes = pb.size;
  const { data } = pb.finish(key);
  assert.equal(data.length - blobBytes, before);
});
