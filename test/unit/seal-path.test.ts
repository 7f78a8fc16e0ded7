// The stream path's moving parts: chunking in a ring of shared memory (chunk-ring.ts), the ring
// allocator (shared-ring.ts), and the seal workers (seal-pool.ts, seal-worker.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Chunker, chunkLengths, MAX_SIZE, MIN_SIZE } from '../../src/chunker/chunker.js';
import { chunkIntoRing, RING_READ } from '../../src/archiver/chunk-ring.js';
import { SharedRing } from '../../src/core/shared-ring.js';
import { SealPool, sealBound } from '../../src/repository/seal-pool.js';
import { newMasterKey, open, sha256hex, OVERHEAD } from '../../src/repository/crypto.js';
import { decompress, ZSTD_LEVEL } from '../../src/repository/compression.js';

const MiB = 1024 * 1024;
const POL = 0x3da3358b4dc173n;

/** Random, zero and repetitive stretches: chunks of every size from MIN_SIZE to MAX_SIZE. */
function data(size: number): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (let n = 0; total < size; n++) {
    const len = [3 * MiB, 2 * MiB, 10 * MiB, 700 * 1024][n % 4];
    const part = n % 4 === 1 ? Buffer.alloc(len) : n % 4 === 2 ? Buffer.from('0123456789abcdef'.repeat(len / 16)) : crypto.randomBytes(len);
    parts.push(part);
    total += len;
  }
  return Buffer.concat(parts).subarray(0, size);
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const [holds, where] of [
  ['the first chunk long', 'here'],
  ['every chunk a random while', 'here'],
  ['every chunk a random while', 'in a seal worker'],
] as const) test(`chunkIntoRing cuts where the chunker does, with any read sizes, across wraps, and never overwrites held chunks (holding ${holds}, cut ${where})`, async (t) => {
  const input = data(48 * MiB);
  const ring = new SharedRing(MAX_SIZE + RING_READ); // the smallest ring allowed: a wrap every few chunks
  let cutter: Chunker | ReturnType<SealPool['cutter']> = new Chunker(POL);
  if (where === 'in a seal worker') {
    const pool = SealPool.create(newMasterKey(), 1)!;
    t.after(() => pool.close());
    cutter = pool.cutter(ring.sab, POL);
  }
  let pos = 0;
  const read = async (buf: Buffer, off: number, len: number) => {
    await tick(0);
    const n = Math.min(len, input.length - pos, 1 + Math.floor(Math.random() * RING_READ));
    input.copy(buf, off, pos, pos + n);
    pos += n;
    return n;
  };
  const chunks: Buffer[] = [];
  const checks: Promise<void>[] = [];
  let wraps = 0;
  let lastStart = -1;
  await chunkIntoRing(ring, cutter, read, async (r, start, end) => {
    if (start < lastStart) wraps++;
    lastStart = start;
    const copy = Buffer.from(r.bytes.subarray(start, end));
    chunks.push(copy);
    // Hold the region for a while, as a worker does, and check nobody wrote into it meanwhile:
    // the first chunk long enough for reading to wrap around to it and wait, or each one a while
    // (reading then catches up with held chunks after a wrap).
    r.hold(start, end);
    const ms = holds === 'the first chunk long' ? (chunks.length === 1 ? 300 : 0) : Math.random() * 100;
    checks.push(
      tick(ms).then(() => {
        assert.ok(r.bytes.subarray(start, end).equals(copy), `held region [${start}, ${end}) was overwritten`);
        r.release(start);
      }),
    );
  });
  await Promise.all(checks);
  assert.ok(wraps >= 3, `the ring wrapped ${wraps} times`);
  assert.ok(Buffer.concat(chunks).equals(input), 'chunks put together give the input back');
  assert.deepEqual(chunks.map((c) => c.length), chunkLengths(input, POL));
  assert.ok(chunks.some((c) => c.length === MAX_SIZE), 'a chunk of MAX_SIZE went through the ring');
});

test('seal workers cut several streams at once, each with its own chunker state', async (t) => {
  const pool = SealPool.create(newMasterKey(), 2)!;
  t.after(() => pool.close());
  // Three streams on two workers: two of them share a worker, their calls interleaved.
  const inputs = [data(20 * MiB), crypto.randomBytes(9 * MiB), data(30 * MiB).subarray(MiB)];
  const cuts = await Promise.all(
    inputs.map(async (input) => {
      const sab = new SharedArrayBuffer(input.length);
      Buffer.from(sab).set(input);
      const c = pool.cutter(sab, POL);
      const found: number[] = [];
      for (let pos = 0; pos < input.length; ) {
        const end = Math.min(input.length, pos + 1 + Math.floor(Math.random() * 2 * MiB));
        found.push(...(await c.cuts(pos, end)));
        await tick(Math.random() * 3);
        pos = end;
      }
      c.close();
      return found;
    }),
  );
  inputs.forEach((input, i) => {
    const lengths = [...cuts[i], input.length].map((c, k, all) => c - (k ? all[k - 1] : 0)).filter((n) => n > 0);
    assert.deepEqual(lengths, chunkLengths(input, POL), `stream ${i}`);
    assert.ok(lengths.length > 3, `stream ${i} has ${lengths.length} chunks`);
  });
});

test('a seal worker hashes a finished pack file as the thread filling it would', async (t) => {
  const { FilePackBuilder, hashFileSync } = await import('../../src/repository/pack.js');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const key = newMasterKey();
  const pool = SealPool.create(key, 1)!;
  t.after(() => pool.close());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmctl-packhash-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const blobs = [crypto.randomBytes(3 * MiB + 17), crypto.randomBytes(100), Buffer.alloc(2 * MiB)];
  const ids: string[] = [];
  for (const hasher of [undefined, (f: string, n: number) => pool.hashFile(f, n), async (f: string, n: number) => hashFileSync(f, n)]) {
    const p = await FilePackBuilder.create('data', dir, hasher);
    for (const b of blobs) p.add(sha256hex(b), Buffer.from(b), 0);
    const done = await p.finish(key);
    const file = fs.readFileSync(done.path);
    assert.equal(file.length, done.size);
    assert.equal(done.id, sha256hex(file), 'the ID is the hash of the file as written');
    ids.push(done.id);
  }
  // (the same blobs with a new random IV for the header each time: IDs differ, each matches its file)
  assert.equal(new Set(ids).size, 3);
  await assert.rejects(pool.hashFile(path.join(dir, 'missing'), 10), /ENOENT/);
  const short = path.join(dir, 'short');
  fs.writeFileSync(short, 'abc');
  await assert.rejects(pool.hashFile(short, 10), /3 bytes, expected 10/);
});

test('chunkIntoRing refuses a ring that cannot hold the largest chunk and a read', async () => {
  await assert.rejects(chunkIntoRing(new SharedRing(MAX_SIZE), new Chunker(POL), async () => 0, async () => {}), RangeError);
});

test('SharedRing.take hands out regions in ring order and waits for held ones', async () => {
  const ring = new SharedRing(100);
  assert.equal(await ring.take(40), 0);
  assert.equal(await ring.take(40), 40);
  let third: number | undefined;
  const p = ring.take(40).then((at) => (third = at));
  await tick(5);
  assert.equal(third, undefined, 'no room: [80, 120) passes the end and [0, 40) is held');
  ring.release(40);
  await tick(5);
  assert.equal(third, undefined, '[0, 40) is still held');
  ring.release(0);
  await p;
  assert.equal(third, 0);
  await assert.rejects(ring.take(101), RangeError);
});

test('the seal workers hash, compress and encrypt as the writer would, reading shared memory in place', async (t) => {
  const key = newMasterKey();
  const pool = SealPool.create(key, 2);
  assert.ok(pool, 'zstd-napi is built (the workers need it)');
  t.after(() => pool.close());
  const ring = new SharedRing(4 * MiB);
  let released = 0;

  const text = Buffer.from('INSERT INTO t VALUES (1, "some text that compresses");\n'.repeat(40_000));
  text.copy(ring.bytes, 0);
  const h1 = await pool.hashShared(ring.sab, 0, text.length, () => released++);
  assert.equal(h1.id, sha256hex(text));
  const s1 = await h1.seal(ZSTD_LEVEL);
  assert.ok(s1.sealed.length < text.length / 4, 'compressed');
  assert.ok(s1.sealed.length <= sealBound(text.length));
  assert.equal(s1.ulen, text.length);
  assert.ok((await decompress(open(key, s1.sealed))).equals(text));
  s1.written();

  const at = 12345 + text.length;
  const random = crypto.randomBytes(MIN_SIZE + 777);
  random.copy(ring.bytes, at);
  const h2 = await pool.hashShared(ring.sab, at, random.length, () => released++);
  assert.equal(h2.id, sha256hex(random));
  assert.equal(released, 1, 'still needed for sealing');
  const s2 = await h2.seal(0);
  assert.equal(released, 2);
  assert.equal(s2.ulen, 0, 'level 0: stored as is');
  assert.equal(s2.sealed.length, random.length + OVERHEAD);
  assert.ok(open(key, s2.sealed).equals(random));
  s2.written();

  // A duplicate is dropped without sealing.
  const h3 = await pool.hashShared(ring.sab, at, random.length, () => released++);
  assert.equal(h3.id, h2.id);
  h3.drop();
  assert.equal(released, 3);
  assert.equal(pool.heldBytes, 0);
});

test('a closed seal pool fails what is in flight instead of hanging', async () => {
  const pool = SealPool.create(newMasterKey(), 1)!;
  const ring = new SharedRing(1024 * 1024);
  let released = 0;
  const h = await pool.hashShared(ring.sab, 0, 200_000, () => released++);
  await pool.close();
  await assert.rejects(h.seal(ZSTD_LEVEL), /closed|exited/);
  assert.equal(released, 1, 'the region is given back');
  await assert.rejects(pool.hashShared(ring.sab, 0, 100_000, () => released++), /closed/);
  assert.equal(released, 2);
});

test('a batch of small files: read and hashed in a worker, then only the kept ones sealed into the ring', async (t) => {
  const { mkdtempSync, writeFileSync, mkdirSync, appendFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { execFileSync } = await import('node:child_process');
  const { gzipSync } = await import('node:zlib');
  const dir = mkdtempSync(join(tmpdir(), 'dmctl-batch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const key = newMasterKey();
  const pool = SealPool.create(key, 1)!;
  t.after(() => pool.close());

  const text = Buffer.from('a line of text that zstd will shrink\n'.repeat(3000));
  const random = crypto.randomBytes(200_000);
  const gz = gzipSync(crypto.randomBytes(50_000));
  // A name that is not UTF-8 and holds a newline: paths travel as bytes.
  const oddName = Buffer.concat([Buffer.from(dir + '/odd\n'), Buffer.from([0xff, 0xfe]), Buffer.from('.bin')]);
  writeFileSync(join(dir, 'text'), text);
  writeFileSync(join(dir, 'random'), random);
  writeFileSync(join(dir, 'empty'), '');
  writeFileSync(join(dir, 'gz'), gz);
  writeFileSync(oddName, random);
  writeFileSync(join(dir, 'grew'), 'x'.repeat(10));
  writeFileSync(join(dir, 'grew-big'), 'y'.repeat(100));
  mkdirSync(join(dir, 'a-dir'));
  execFileSync('mkfifo', [join(dir, 'fifo')]);
  // The walk saw these sizes; the files have grown since (one to MIN_SIZE: it needs the chunker).
  appendFileSync(join(dir, 'grew'), 'more bytes');
  appendFileSync(join(dir, 'grew-big'), Buffer.alloc(MIN_SIZE));
  const files: [Buffer, number][] = [
    [Buffer.from(join(dir, 'text')), text.length],
    [Buffer.from(join(dir, 'random')), random.length],
    [Buffer.from(join(dir, 'empty')), 0],
    [Buffer.from(join(dir, 'gz')), gz.length],
    [Buffer.from(join(dir, 'missing')), 10],
    [Buffer.from(join(dir, 'fifo')), 0],
    [Buffer.from(join(dir, 'a-dir')), 0],
    [oddName, random.length],
    [Buffer.from(join(dir, 'grew')), 10],
    [Buffer.from(join(dir, 'grew-big')), 100],
  ];
  const batch = await pool.readFiles(files.map((f) => f[0]), files.map((f) => f[1]), POL);
  const want = [text, random, Buffer.alloc(0), gz, undefined, undefined, undefined, random, Buffer.from('x'.repeat(10) + 'more bytes'), undefined];
  // Chunk index of each file's first chunk: small files are one chunk each, an empty one none.
  const first: number[] = [];
  let c = 0;
  for (let i = 0; i < files.length; i++) {
    const w = want[i];
    first.push(c);
    if (w) {
      assert.equal(batch.lens[i], w.length, `length of file ${i}`);
      assert.equal(batch.counts[i], w.length ? 1 : 0, `chunks of file ${i}`);
      if (w.length) {
        assert.equal(batch.ids[c], sha256hex(w), `ID of file ${i}`);
        assert.equal(batch.clens[c], w.length);
      }
      assert.equal(batch.errors[i], null);
      c += batch.counts[i];
    } else {
      assert.equal(batch.lens[i], -1, `file ${i} is not read`);
      assert.equal(batch.counts[i], 0);
    }
  }
  assert.equal(batch.ids.length, c, 'one ID per chunk');
  assert.equal(batch.errors[4]?.code, 'ENOENT');
  assert.match(batch.errors[5]?.message ?? '', /not a regular file/, 'a FIFO is refused, not waited on');
  assert.ok(batch.errors[6], 'a directory is refused');
  assert.equal(batch.errors[9], null, 'grown to MIN_SIZE: no error, the caller reads it another way');
  assert.ok(pool.heldBytes > 0, 'the worker holds the contents until sealed');

  // Keep text, gz, the odd-named copy of random and the grown file; random itself counts as known.
  const keep = new Uint8Array(batch.ids.length);
  for (const i of [0, 3, 7, 8]) keep[first[i]] = 1;
  const sealed = await batch.seal(keep, ZSTD_LEVEL, true);
  assert.equal(pool.heldBytes, 0);
  assert.equal(sealed.lens.length, 4);
  let at = 0;
  for (const [k, i] of [0, 3, 7, 8].entries()) {
    const blob = sealed.buf.subarray(at, at + sealed.lens[k]);
    at += sealed.lens[k];
    const plain = open(key, blob);
    const content = sealed.ulens[k] ? await decompress(plain) : plain;
    assert.ok(content.equals(want[i]!), `sealed file ${i} opens to its content`);
  }
  assert.equal(at, sealed.buf.length, 'the blobs lie back to back');
  assert.equal(sealed.ulens[0], text.length, 'text is compressed');
  assert.ok(sealed.lens[0] < text.length / 10);
  assert.equal(sealed.ulens[1], 0, 'gzip data is stored as it is (asIs)');
  sealed.written();

  // Without asIs the gzip data is compressed too; a dropped batch is forgotten.
  const again = await pool.readFiles([files[3][0]], [gz.length], POL);
  const s2 = await again.seal(Uint8Array.of(1), ZSTD_LEVEL, false);
  assert.equal(s2.ulens[0], gz.length);
  s2.written();
  const dropped = await pool.readFiles([files[0][0]], [text.length], POL);
  dropped.drop();
  assert.equal(pool.heldBytes, 0);
});

test('a batch with mid-sized files: chunked in the worker where the chunker cuts them, grown ones left to the caller', async (t) => {
  const { mkdtempSync, writeFileSync, appendFileSync, truncateSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { MID_FILE } = await import('../../src/archiver/read-source.js');
  const dir = mkdtempSync(join(tmpdir(), 'dmctl-midbatch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const key = newMasterKey();
  const pool = SealPool.create(key, 1)!;
  t.after(() => pool.close());

  // Random data cut into several chunks, a zero-filled file (restic's chunker cuts zeros at
  // MIN_SIZE), one that shrank below MIN_SIZE since the walk, one grown past MID_FILE, and a small one.
  const mid = data(MID_FILE - 1);
  const zeros = Buffer.alloc(MIN_SIZE + 12345);
  const small = crypto.randomBytes(1000);
  const names = ['mid', 'zeros', 'shrank', 'grew', 'small'].map((n) => join(dir, n));
  writeFileSync(names[0], mid);
  writeFileSync(names[1], zeros);
  writeFileSync(names[2], mid.subarray(0, MIN_SIZE + 10));
  writeFileSync(names[3], mid.subarray(0, 3 * MiB));
  writeFileSync(names[4], small);
  truncateSync(names[2], 100);
  appendFileSync(names[3], Buffer.alloc(MID_FILE));
  const sizes = [mid.length, zeros.length, MIN_SIZE + 10, 3 * MiB, small.length];
  const batch = await pool.readFiles(names.map((n) => Buffer.from(n)), sizes, POL);

  const want = [mid, zeros, mid.subarray(0, 100), undefined, small];
  let c = 0;
  const chunkAt: number[] = [];
  for (let i = 0; i < names.length; i++) {
    chunkAt.push(c);
    const w = want[i];
    if (!w) {
      assert.equal(batch.lens[i], -1, 'grown past MID_FILE: not read here');
      assert.equal(batch.errors[i], null);
      continue;
    }
    const lengths = w.length < MIN_SIZE ? [w.length] : chunkLengths(w, POL);
    assert.equal(batch.lens[i], w.length);
    assert.deepEqual(batch.clens.slice(c, c + batch.counts[i]), lengths, `file ${i} is cut where the chunker cuts it`);
    let pos = 0;
    for (const n of lengths) {
      assert.equal(batch.ids[c++], sha256hex(w.subarray(pos, pos + n)));
      pos += n;
    }
  }
  assert.ok(batch.counts[0] >= 2, 'the mid-sized random file is more than one chunk');

  // Seal every chunk: each opens to its piece of the file.
  const keep = new Uint8Array(batch.ids.length).fill(1);
  const sealed = await batch.seal(keep, ZSTD_LEVEL, true);
  const opened: Buffer[] = [];
  let at = 0;
  for (let k = 0; k < sealed.lens.length; k++) {
    const plain = open(key, sealed.buf.subarray(at, at + sealed.lens[k]));
    at += sealed.lens[k];
    opened.push(sealed.ulens[k] ? await decompress(plain) : plain);
  }
  sealed.written();
  for (let i = 0; i < names.length; i++) {
    if (!want[i]) continue;
    const whole = Buffer.concat(opened.slice(chunkAt[i], chunkAt[i] + batch.counts[i]));
    assert.ok(whole.equals(want[i]!), `file ${i} is its chunks, in order`);
  }
  assert.equal(pool.heldBytes, 0);
});

test('prestarted seal workers: taken by the next pool of the same key only, and stopped when nobody takes them', async (t) => {
  // (whatever fails, no worker outlives the test)
  const pools = new Set<SealPool>();
  const track = (p: SealPool | undefined) => {
    assert.ok(p, 'no seal pool (zstd-napi missing?)');
    pools.add(p);
    return p;
  };
  t.after(async () => {
    SealPool.discardWarm();
    await Promise.all([...pools].map((p) => p.close()));
  });
  const sealWith = async (pool: SealPool, text: Buffer) => {
    const ring = new SharedRing(4 * MiB);
    ring.bytes.set(text, 0);
    const h = await pool.hashShared(ring.sab, 0, text.length, () => {});
    assert.equal(h.id, sha256hex(text));
    const s = await h.seal(ZSTD_LEVEL);
    const copy = Buffer.from(s.sealed);
    s.written();
    return copy;
  };
  const roundTrip = async (pool: SealPool, key: ReturnType<typeof newMasterKey>) => {
    const text = Buffer.from(`sealed by a pool ${Math.random()} `.repeat(20_000));
    assert.ok((await decompress(open(key, await sealWith(pool, text)))).equals(text));
  };
  const closed = (pool: SealPool) => assert.rejects(pool.hashShared(new SharedArrayBuffer(64), 0, 64, () => {}), /closed/);
  const keyA = newMasterKey();
  const keyB = newMasterKey();

  // Another key's pool is never handed out: what the new pool seals opens with the key asked for.
  const warmA = track(SealPool.prestart(keyA));
  const b = track(SealPool.create(keyB));
  assert.notEqual(b, warmA);
  await roundTrip(b, keyB);
  await b.close();

  // The same key's pool is, once; the next create() starts a pool of its own.
  const a = track(SealPool.create(keyA));
  assert.equal(a, warmA);
  await roundTrip(a, keyA);
  const a2 = track(SealPool.create(keyA));
  assert.notEqual(a2, a);
  await a.close();
  await roundTrip(a2, keyA);
  await a2.close();

  // Discarded (a backup that ended without reading a file): stopped, and not handed out.
  const warmB = track(SealPool.prestart(keyB));
  SealPool.discardWarm();
  await closed(warmB);
  const b2 = track(SealPool.create(keyB));
  assert.notEqual(b2, warmB);
  await roundTrip(b2, keyB);
  await b2.close();

  // A second prestart replaces the first, which is stopped.
  const first = track(SealPool.prestart(keyA));
  const second = track(SealPool.prestart(keyA));
  await closed(first);
  assert.equal(track(SealPool.create(keyA)), second);
  await second.close();

  // Not taken within its time: stopped, and create() starts new workers.
  const late = track(SealPool.prestart(keyA, 50));
  await tick(300);
  await closed(late);
  const a3 = track(SealPool.create(keyA));
  assert.notEqual(a3, late);
  await roundTrip(a3, keyA);
  await a3.close();
});
