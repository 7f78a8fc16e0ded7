// zstd through both bindings (src/repository/compression.ts): frames written by one are read by
// the other at every size class, zstd CLI frames without a content size are read, damaged input is
// an IntegrityError, and the install built the synchronous binding used for small blobs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { compress as zc, decompress as zd } from '@mongodb-js/zstd';
import { compress, decompress, smallBlobZstd, SYNC_ZSTD_MAX } from '../../src/repository/compression.js';
import { IntegrityError } from '../../src/core/errors.js';

function sample(size: number, seed: number): Buffer {
  // Half text-like (compressible), half random.
  const b = Buffer.alloc(size);
  const r = crypto.createHash('sha256').update(String(seed)).digest();
  for (let i = 0; i < size; i++) b[i] = i % 2 ? r[i % 32]! ^ (i & 0xff) : 0x61 + (i % 7);
  return b;
}

test('the install built zstd-napi, used for small blobs', () => {
  assert.equal(smallBlobZstd(), 'zstd-napi');
});

test('frames of either binding are read by the other, at every size', async () => {
  for (const size of [0, 1, 100, 4096, SYNC_ZSTD_MAX - 1, SYNC_ZSTD_MAX, 300_000, 8 * 1024 * 1024]) {
    const plain = sample(size, size);
    const ours = await compress(plain);
    assert.ok((await zd(ours)).equals(plain), `size ${size}: ours read by @mongodb-js/zstd`);
    const theirs = await zc(plain, 3);
    assert.ok((await decompress(theirs)).equals(plain), `size ${size}: @mongodb-js/zstd's read by ours`);
    if (size > 1000) assert.ok(ours.length < size, `size ${size}: compressed (${ours.length})`);
  }
  // Highly compressible: a small frame that expands to 8 MiB.
  const zeros = Buffer.alloc(8 * 1024 * 1024);
  const z = await compress(zeros);
  assert.ok(z.length < SYNC_ZSTD_MAX);
  assert.ok((await decompress(z)).equals(zeros));
});

function words(size: number, seed: number): Buffer {
  // Text from a small vocabulary in pseudo-random order: levels differ in how well they find matches.
  const vocab = ['select', 'insert', 'into', 'values', 'customer', 'order', 'amount', 'NULL', "'2024-01-0", 'where', 'id', '=', ',', '(', ')'];
  const out: string[] = [];
  let x = seed >>> 0 || 1;
  let n = 0;
  while (n < size) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const w = vocab[x % vocab.length]! + ((x >>> 8) % 1000);
    out.push(w);
    n += w.length + 1;
  }
  return Buffer.from(out.join(' ')).subarray(0, size);
}

test('the level reaches both bindings: a higher level stores text smaller', async () => {
  for (const size of [16 * 1024, 2 * 1024 * 1024]) {
    const plain = words(size, size);
    const fast = await compress(plain, 1);
    const best = await compress(plain, 11);
    assert.ok(best.length < fast.length, `size ${size}: level 11 gave ${best.length} bytes, level 1 ${fast.length}`);
    assert.ok((await decompress(best)).equals(plain));
    assert.ok((await decompress(fast)).equals(plain));
  }
});

test('a frame without a content size (zstd CLI from a pipe) is read', async () => {
  const plain = sample(50_000, 7);
  const frame = execFileSync('zstd', ['-c', '-q'], { input: plain });
  assert.ok((await decompress(frame)).equals(plain));
});

test('damaged frames are IntegrityErrors naming the object', async () => {
  const frame = await compress(sample(20_000, 3));
  const bad = Buffer.from(frame);
  bad[bad.length >> 1] ^= 0xff;
  bad[6] ^= 0xff;
  for (const b of [bad, Buffer.from('not zstd at all'), frame.subarray(0, frame.length - 10)]) {
    await assert.rejects(decompress(b, 'blob 1234'), (err: unknown) => err instanceof IntegrityError && /blob 1234: zstd decompression failed/.test(err.message));
  }
});
