// Memory stays flat for streams: `gen-stream | dmctl backup-stream` of 4 GiB peaks close to the peak
// for 400 MiB (dmctl's own peak RSS, as GNU time reports the kernel's ru_maxrss), and the big stream
// restores byte for byte.
//
// The issue asks for 10%, and that is what this test holds. It used to allow 25%: RSS climbed over
// the first ~25 s of a long stream and 4 GiB peaked 11-33% above 400 MiB, from per-blob native
// buffers (digest and cipher copies, zstd output, a fresh zstd context per call) that fragmented
// the thread pool's malloc arenas, and from the largest chunk seen so far sizing a reused buffer.
// Now a stream is read into a fixed ring of shared memory, the seal workers compress straight into
// a second fixed ring and encrypt in place there (archiver/chunk-ring.ts, repository/seal-pool.ts):
// nothing is allocated per chunk, so the peak no longer depends on the stream's length (measured
// +0.3%). scripts/test.sh runs this file alone, after the others: a second test process on the
// two cores shifts the peaks. The data is generated on the fly and piped by the OS straight into
// dmctl; the test process never holds it.
//
// DMCTL_TEST_BIG_STREAM overrides the big size (default 4G, e.g. 2G on a slow machine).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ToolEnv, toolEnv, dmctl, ok } from '../support/run.js';
import { dmctlPipe, dmctlPipePeakRss } from '../support/proc.js';

const SMALL = '400M';
const BIG = process.env.DMCTL_TEST_BIG_STREAM ?? '4G';
const TOLERANCE = 0.1;

let work: string;
let t: ToolEnv;

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-stream-mem-'));
  t = toolEnv(path.join(work, 'repo'), 'stream-memory-pw', path.join(work, 'home'));
  await fsp.mkdir(t.home, { recursive: true });
  ok(await dmctl(t, ['repo', 'init']));
});

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

const mib = (kib: number) => (kib / 1024).toFixed(1);

test(`backup-stream peak RSS: ${BIG} within ${TOLERANCE * 100}% of ${SMALL}; the ${BIG} stream restores exactly`, { timeout: 600_000 }, async () => {
  // The 400 MiB peak is taken as the largest of three runs (different data), so that the noise of
  // garbage-collection timing does not make a flat profile look like growth.
  const small: number[] = [];
  for (const seed of ['small-1', 'small-2', 'small-3']) {
    const r = await dmctlPipePeakRss(t, ['backup-stream', '--name', `${seed}.bin`, '--json'], [SMALL, '--seed', seed]);
    assert.equal(r.code, 0, r.stderr);
    small.push(r.peakRssKiB);
  }
  const shaFile = path.join(work, 'big.sha256');
  const big = await dmctlPipePeakRss(t, ['backup-stream', '--name', 'big.bin', '--json'], [BIG, '--seed', 'big', '--sha256-file', shaFile]);
  assert.equal(big.code, 0, big.stderr);
  const snap = (JSON.parse(big.stdout) as { snapshotId: string; totalBytesProcessed: number }).snapshotId;
  const smallPeak = Math.max(...small);
  // eslint-disable-next-line no-console
  console.log(
    `stream-memory: peak RSS ${SMALL}: ${small.map(mib).join(' / ')} MiB; ${BIG}: ${mib(big.peakRssKiB)} MiB ` +
      `(${((big.peakRssKiB / smallPeak - 1) * 100).toFixed(1)}%), ${BIG} backup took ${(big.durationMs / 1000).toFixed(1)} s`,
  );
  assert.ok(
    big.peakRssKiB <= smallPeak * (1 + TOLERANCE),
    `peak RSS grew with the stream: ${mib(big.peakRssKiB)} MiB for ${BIG} vs ${mib(smallPeak)} MiB for ${SMALL}`,
  );

  // The big stream comes back byte for byte.
  const want = (await fsp.readFile(shaFile, 'utf8')).trim();
  const h = crypto.createHash('sha256');
  let n = 0;
  const started = Date.now();
  const r = await dmctlPipe(t, ['restore-stream', snap], {
    onStdout: (c) => {
      h.update(c);
      n += c.length;
    },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(h.digest('hex'), want, `restore-stream of the ${BIG} snapshot gave different bytes (${n} bytes)`);
  // eslint-disable-next-line no-console
  console.log(`stream-memory: ${BIG} restore-stream took ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
