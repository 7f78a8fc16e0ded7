// zstd through both bindings (src/repository/compression.ts): frames written by one are read by
// the other at every size class, zstd CLI frames without a content size are read, damaged input is
// an IntegrityError, and the install built the synchronous binding used for small blobs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { compress as zc, decompress as zd } from '@mongodb-js/zstd';
import { compress, decompress, looksCompressed, smallBlobZstd, SYNC_ZSTD_MAX } from '../../src/repository/compression.js';
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

test('looksCompressed: signatures of compressed formats, not text or short data', async () => {
  const { gzipSync } = await import('node:zlib');
  const text = Buffer.from('a line of text that compresses well\n'.repeat(100));
  assert.equal(looksCompressed(gzipSync(text)), true, 'gzip');
  assert.equal(looksCompressed(await compress(text)), true, 'zstd');
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), crypto.randomBytes(100)]);
  assert.equal(looksCompressed(png), true, 'png');
  const webp = Buffer.concat([Buffer.from('RIFF'), Buffer.from([1, 2, 3, 4]), Buffer.from('WEBPVP8 '), crypto.randomBytes(100)]);
  assert.equal(looksCompressed(webp), true, 'webp');
  assert.equal(looksCompressed(text), false, 'text');
  assert.equal(looksCompressed(gzipSync(text).subarray(0, 10)), false, 'too short to tell');
  assert.equal(looksCompressed(Buffer.concat([Buffer.from([0x1f, 0x8b, 0x00]), text])), false, 'gzip magic with another method byte');
});

test('a backup in auto mode stores data that is compressed already as it is; max and prune compress it; all read back', async () => {
  const { gzipSync } = await import('node:zlib');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { LocalBackend } = await import('../../src/storage/local.js');
  const { Repository } = await import('../../src/repository/repository.js');
  const { sha256hex } = await import('../../src/repository/crypto.js');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dmctl-precompressed-'));
  try {
    const repo = await Repository.init(new LocalBackend(path.join(dir, 'repo')), 'pw');
    const text = Buffer.from('compressible text, line after line\n'.repeat(2000));
    const gz = gzipSync(Buffer.concat([text, crypto.randomBytes(3000)]));
    // (prune's writer leaves storeCompressedAsIs off: --repack-uncompressed must converge)
    for (const [mode, asIs, gzCompressed] of [['auto', true, false], ['max', true, true], ['auto', false, true]] as const) {
      const w = repo.newWriter({ compression: mode, storeCompressedAsIs: asIs });
      const t = Buffer.concat([text, Buffer.from(mode + asIs)]);
      const g = Buffer.concat([gz, Buffer.from(mode + asIs)]);
      await w.save('data', sha256hex(t), t);
      await w.save('data', sha256hex(g), g);
      await w.flush();
      assert.ok(repo.index.lookup('data', sha256hex(t))!.uncompressedLength > 0, `${mode}: text is compressed`);
      assert.equal((repo.index.lookup('data', sha256hex(g))!.uncompressedLength ?? 0) > 0, gzCompressed, `${mode}: gzip data`);
      assert.ok((await repo.loadBlob('data', sha256hex(t))).equals(t));
      assert.ok((await repo.loadBlob('data', sha256hex(g))).equals(g));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
