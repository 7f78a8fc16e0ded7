// The restore's data phase for one read region of a pack (restore-region.ts): on the main thread with
// synchronous operations and in the worker threads the restorer uses, an intact region creates whole
// files with their metadata and writes parts of larger files at their offsets; a damaged blob writes
// nothing and is named; a write that fails stops the job and says where.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { newMasterKey, open, seal, sha256hex } from '../../src/repository/crypto.js';
import { compress, ScratchDecompressor } from '../../src/repository/compression.js';
import { PackBuilder } from '../../src/repository/pack.js';
import { createSized, restoreRegion, type DecodeJob, type DecodeResult, type RegionBlob, type RegionJob, type RegionResult } from '../../src/restorer/restore-region.js';
import { WorkerPool } from '../../src/core/worker-pool.js';

const key = newMasterKey();
let dir: string;

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'dm-restore-region-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Three blobs: a small compressible one, a random one stored uncompressed, a large compressible one. */
async function makePack() {
  const pb = new PackBuilder('data');
  const plains = [Buffer.from('hello, restore\n'.repeat(40)), crypto.randomBytes(70_000), Buffer.from('x'.repeat(300_000) + 'end')];
  for (const [i, plain] of plains.entries()) {
    if (i === 1) pb.add(sha256hex(plain), seal(key, plain), 0);
    else pb.add(sha256hex(plain), seal(key, await compress(plain)), plain.length);
  }
  return { ...pb.finish(key), plains };
}

const meta = { mode: 0o640, uid: process.getuid!(), gid: process.getgid!(), atime: '1700000000.000123500', mtime: '1600000000.000456500' };

/** Blob 0 is two whole files (deduplicated), blobs 1 and 2 are the two parts of `big`. */
function regionBlobs(sub: string, packed: { id: string; offset: number; length: number; uncompressedLength?: number }[], plains: Buffer[]): RegionBlob[] {
  const p = (name: string) => Buffer.from(path.join(dir, sub, name));
  return [
    { id: packed[0]!.id, at: packed[0]!.offset, length: packed[0]!.length, uncompressedLength: packed[0]!.uncompressedLength ?? 0, targets: [{ path: p('a'), offset: 0, whole: { meta } }, { path: p('a-copy'), offset: 0, whole: {} }] },
    { id: packed[1]!.id, at: packed[1]!.offset, length: packed[1]!.length, uncompressedLength: packed[1]!.uncompressedLength ?? 0, targets: [{ path: p('big'), offset: 0 }] },
    { id: packed[2]!.id, at: packed[2]!.offset, length: packed[2]!.length, uncompressedLength: packed[2]!.uncompressedLength ?? 0, targets: [{ path: p('big'), offset: plains[1]!.length }] },
  ];
}

const scratch = new ScratchDecompressor();
const mainThread = (job: RegionJob) => restoreRegion(key, job, { open, decompress: (d, what) => scratch.decompress(d, what), sha256hex });

function workerPool(): WorkerPool {
  return new WorkerPool(new URL('../../src/restorer/restore-worker.js', import.meta.url), 2, { encrypt: key.encrypt, macK: key.macK, macR: key.macR });
}

async function both(sub: string, data: Buffer, packed: Parameters<typeof regionBlobs>[1], plains: Buffer[], pool: WorkerPool) {
  const results: RegionResult[] = [];
  for (const way of ['main', 'worker'] as const) {
    const d = `${sub}-${way}`;
    rmSync(path.join(dir, d), { recursive: true, force: true });
    mkdirSync(path.join(dir, d));
    createSized(Buffer.from(path.join(dir, d, 'big')), plains[1]!.length + plains[2]!.length);
    const blobs = regionBlobs(d, packed, plains);
    const buf = new Uint8Array(data).buffer;
    const job: RegionJob = { packId: 'ab'.repeat(32), buf, blobs, owner: false };
    results.push(way === 'main' ? await mainThread(job) : await pool.run<RegionResult>(job, [buf]));
  }
  return results;
}

test('an intact region: whole files with their metadata, parts at their offsets; the same in a worker', async () => {
  const { data, blobs: packed, plains } = await makePack();
  const pool = workerPool();
  try {
    const results = await both('intact', data, packed, plains, pool);
    for (const [i, res] of results.entries()) {
      const d = path.join(dir, `intact-${i ? 'worker' : 'main'}`);
      assert.deepEqual(res.damaged, []);
      assert.deepEqual(res.metaErrors, []);
      assert.equal(res.fatal, undefined);
      assert.equal(res.done, 3);
      assert.equal(res.bytes, 2 * plains[0]!.length + plains[1]!.length + plains[2]!.length);
      // Times first: reading the file may update its atime.
      const st = statSync(path.join(d, 'a'), { bigint: true });
      assert.equal(Number(st.mode) & 0o7777, 0o640);
      assert.equal(st.mtimeNs, 1600000000000456000n);
      assert.equal(st.atimeNs, 1700000000000123000n);
      assert.deepEqual(readFileSync(path.join(d, 'a')), plains[0]);
      assert.deepEqual(readFileSync(path.join(d, 'a-copy')), plains[0]);
      assert.deepEqual(readFileSync(path.join(d, 'big')), Buffer.concat([plains[1]!, plains[2]!]));
      // No metadata asked for: created private, the restorer sets it later.
      assert.equal(statSync(path.join(d, 'a-copy')).mode & 0o7777, 0o600);
    }
  } finally {
    await pool.close();
  }
});

test('whole files get their exact owner and mode whatever the umask and the directory\'s group, in a worker too', async () => {
  // Whole files are created with their permission bits and only what then differs is changed
  // (fsmeta.ts applyFileMetaFd): a restrictive umask, a setgid directory of another group, setuid
  // and setgid bits (which a chown clears) and a read-only mode must all still come out exact.
  const root = process.getuid!() === 0;
  const { data, blobs: packed, plains } = await makePack();
  const wanted = [
    { name: 'plain', mode: 0o644, uid: process.getuid!(), gid: process.getgid!() },
    { name: 'setuid', mode: 0o4755, uid: process.getuid!(), gid: process.getgid!() },
    { name: 'readonly', mode: 0o444, uid: process.getuid!(), gid: process.getgid!() },
    { name: 'none', mode: 0o000, uid: process.getuid!(), gid: process.getgid!() },
    // Only root can give a file away; as anyone else the owner is not restored (owner: false).
    ...(root ? [{ name: 'given', mode: 0o2750, uid: 1234, gid: 5678 }] : []),
  ];
  const pool = workerPool();
  const umask = process.umask(0o077);
  try {
    for (const way of ['main', 'worker'] as const) {
      const d = path.join(dir, `exact-${way}`);
      mkdirSync(d);
      // New files in a setgid directory take its group: the restored group must win over it.
      if (root) chownSync(d, 0, 4321);
      chmodSync(d, 0o2777);
      const blobs: RegionBlob[] = [
        {
          id: packed[0]!.id,
          at: packed[0]!.offset,
          length: packed[0]!.length,
          uncompressedLength: packed[0]!.uncompressedLength ?? 0,
          targets: wanted.map((w) => ({ path: Buffer.from(path.join(d, w.name)), offset: 0, whole: { meta: { ...meta, mode: w.mode, uid: w.uid, gid: w.gid } } })),
        },
      ];
      const buf = new Uint8Array(data).buffer;
      const job: RegionJob = { packId: 'ab'.repeat(32), buf, blobs, owner: root };
      const res = way === 'main' ? await mainThread(job) : await pool.run<RegionResult>(job, [buf]);
      assert.deepEqual(res.metaErrors, []);
      assert.equal(res.fatal, undefined);
      for (const w of wanted) {
        const st = statSync(path.join(d, w.name), { bigint: true });
        assert.equal((Number(st.mode) & 0o7777).toString(8), w.mode.toString(8), `${way} ${w.name}: mode`);
        if (root) assert.deepEqual([Number(st.uid), Number(st.gid)], [w.uid, w.gid], `${way} ${w.name}: owner`);
        assert.equal(st.mtimeNs, 1600000000000456000n, `${way} ${w.name}: mtime`);
        assert.deepEqual(readFileSync(path.join(d, w.name)), plains[0], `${way} ${w.name}: content`);
      }
    }
  } finally {
    process.umask(umask);
    await pool.close();
  }
});

test('a flipped bit in a blob: that blob is named and nothing of it is written; the others are', async () => {
  const { data, blobs: packed, plains } = await makePack();
  const pool = workerPool();
  try {
    for (const bad of [0, 1, 2]) {
      const broken = Buffer.from(data);
      broken[packed[bad]!.offset + Math.floor(packed[bad]!.length / 2)] ^= 0x04;
      const results = await both(`flip${bad}`, broken, packed, plains, pool);
      for (const [i, res] of results.entries()) {
        const d = path.join(dir, `flip${bad}-${i ? 'worker' : 'main'}`);
        assert.equal(res.damaged.length, 1);
        assert.equal(res.damaged[0]!.blob, bad);
        assert.match(res.damaged[0]!.message, new RegExp(`data blob ${packed[bad]!.id.slice(0, 10)} in pack abababab.*MAC`));
        assert.equal(res.fatal, undefined);
        assert.equal(res.done, 3);
        const big = readFileSync(path.join(d, 'big'));
        const n1 = plains[1]!.length;
        assert.deepEqual(big.subarray(0, n1), bad === 1 ? Buffer.alloc(n1) : plains[1]);
        assert.deepEqual(big.subarray(n1), bad === 2 ? Buffer.alloc(plains[2]!.length) : plains[2]);
        assert.equal(statSync(path.join(d, 'a'), { throwIfNoEntry: false }) !== undefined, bad !== 0);
      }
    }
  } finally {
    await pool.close();
  }
});

test('a write that fails stops the job at that blob with the error code; what came before is complete, nothing after is written', async () => {
  const { data, blobs: packed, plains } = await makePack();
  const blobs = regionBlobs('fatal', packed, plains);
  mkdirSync(path.join(dir, 'fatal'));
  createSized(Buffer.from(path.join(dir, 'fatal', 'big')), plains[1]!.length + plains[2]!.length);
  // The second whole file's directory does not exist.
  blobs[0]!.targets[1]!.path = Buffer.from(path.join(dir, 'fatal', 'missing', 'a-copy'));
  const res = await mainThread({ packId: 'cd'.repeat(32), buf: new Uint8Array(data).buffer, blobs, owner: false });
  assert.deepEqual(res.fatal && { blob: res.fatal.blob, target: res.fatal.target, code: res.fatal.code }, { blob: 0, target: 1, code: 'ENOENT' });
  assert.equal(res.done, 0);
  assert.deepEqual(readFileSync(path.join(dir, 'fatal', 'a')), plains[0]);
  assert.deepEqual(readFileSync(path.join(dir, 'fatal', 'big')), Buffer.alloc(plains[1]!.length + plains[2]!.length));
});

test('the read ring: a region at an offset of shared memory is restored in a worker; a run is decoded into an output ring, damage named', async () => {
  const { data, blobs: packed, plains } = await makePack();
  const pool = workerPool();
  try {
    // A region in the middle of a shared buffer, as the restorer's read ring holds it.
    const sab = new SharedArrayBuffer(data.length + 1000);
    Buffer.from(sab).set(data, 500);
    mkdirSync(path.join(dir, 'ring'));
    createSized(Buffer.from(path.join(dir, 'ring', 'big')), plains[1]!.length + plains[2]!.length);
    const res = await pool.run<RegionResult>({ packId: 'ef'.repeat(32), buf: sab, base: 500, size: data.length, blobs: regionBlobs('ring', packed, plains), owner: false } satisfies RegionJob);
    assert.deepEqual(res.damaged, []);
    assert.equal(res.done, 3);
    assert.deepEqual(readFileSync(path.join(dir, 'ring', 'a')), plains[0]);
    assert.deepEqual(readFileSync(path.join(dir, 'ring', 'big')), Buffer.concat([plains[1]!, plains[2]!]));

    // restore-stream: the three blobs as one run, decoded in order into an output ring at an offset.
    const total = plains.reduce((n, p) => n + p.length, 0);
    const decode = async (input: Buffer, plainOf: (i: number) => number): Promise<{ res: DecodeResult; out: Buffer }> => {
      const inSab = new SharedArrayBuffer(input.length + 64);
      Buffer.from(inSab).set(input, 64);
      const outSab = new SharedArrayBuffer(total + 100);
      const job: DecodeJob = {
        packId: '12'.repeat(32),
        buf: inSab,
        base: 64,
        size: input.length,
        blobs: packed.map((b, i) => ({ id: b.id, at: b.offset, length: b.length, uncompressedLength: b.uncompressedLength ?? 0, plain: plainOf(i) })),
        out: outSab,
        outBase: 7,
      };
      return { res: await pool.run<DecodeResult>(job), out: Buffer.from(outSab, 7, total) };
    };
    const ok = await decode(data, (i) => plains[i]!.length);
    assert.deepEqual(ok.res, {});
    assert.deepEqual(ok.out, Buffer.concat(plains));

    const broken = Buffer.from(data);
    broken[packed[1]!.offset + 40] ^= 0x10;
    const flipped = await decode(broken, (i) => plains[i]!.length);
    assert.equal(flipped.res.damaged?.blob, 1);
    assert.match(flipped.res.damaged!.message, new RegExp(`data blob ${packed[1]!.id.slice(0, 10)} in pack 12121212.*MAC`));
    assert.deepEqual(flipped.out.subarray(0, plains[0]!.length), plains[0], 'the blob before the damage is decoded');

    // An index that gives the wrong plaintext size (compressed and stored blobs alike) is damage too.
    for (const wrong of [1, 2]) {
      const sized = await decode(data, (i) => plains[i]!.length - (i === wrong ? 1 : 0));
      assert.equal(sized.res.damaged?.blob, wrong, `blob ${wrong}`);
    }
  } finally {
    await pool.close();
  }
});

test('prestarted restore workers: handed out once, to the same key only; discarded ones are stopped', async (t) => {
  const { prestartRestoreWorkers, restoreWorkers, discardRestoreWorkers } = await import('../../src/restorer/restorer.js');
  const pools = new Set<WorkerPool>();
  const track = (p: WorkerPool | undefined) => {
    assert.ok(p);
    pools.add(p);
    return p;
  };
  t.after(async () => {
    discardRestoreWorkers();
    await Promise.all([...pools].map((p) => p.close()));
  });
  const { data, blobs: packed, plains } = await makePack();
  // A pool restores this region (the workers decrypt with the key given to them).
  const works = async (pool: WorkerPool, sub: string) => {
    const [main, worker] = await both(sub, data, packed, plains, pool);
    assert.deepEqual(worker, main);
    assert.ok(readFileSync(path.join(dir, `${sub}-worker`, 'big')).equals(Buffer.concat([plains[1]!, plains[2]!])));
  };
  const other = newMasterKey();
  const warm = track(prestartRestoreWorkers(key));
  const forOther = track(restoreWorkers(other));
  assert.notEqual(forOther, warm);
  const taken = track(restoreWorkers(key));
  assert.equal(taken, warm);
  await works(taken, 'warm');
  const next = track(restoreWorkers(key));
  assert.notEqual(next, warm);

  const unused = track(prestartRestoreWorkers(key));
  discardRestoreWorkers();
  await assert.rejects(unused.run({}), /closed/);
  const fresh = track(restoreWorkers(key));
  assert.notEqual(fresh, unused);
  await works(fresh, 'fresh');
});
