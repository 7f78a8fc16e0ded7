// A backup killed with SIGKILL at a random moment must leave a repository that restic accepts, no
// snapshot that claims data the repository lacks, and a stale lock that the next dmctl backup steps
// over by itself (same host, dead PID). Trials alternate between `backup` of a tree of a few hundred
// files (some of several MiB, so packs are being written) and `backup-stream` of a 50 MiB stream; the
// kill moments are seeded and spread over a whole normal run, measured first and then re-measured
// with every uninterrupted run (the machine's load changes how long a run takes).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ToolEnv, toolEnv, dmctl, restic, ok, json, run } from '../support/run.js';
import { dmctlPipe, hashTree, prng, seededBytes, sha256, GEN_STREAM } from '../support/proc.js';

const TRIALS = 20;
const SMALL_FILES = 300;
const BIG_FILES = 5;
const STREAM_SIZE = '50M';
const SEED = 20240601;

let work: string;
let src: string;
let t: ToolEnv;
const sizes: number[] = [];

/** Expected content per tag: a tree (relative path → SHA-256) or a stream's SHA-256. */
const expected = new Map<string, { kind: 'tree'; files: Map<string, string> } | { kind: 'stream'; sha: string }>();
/** Snapshots already restored and compared. */
const verified = new Set<string>();

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-crash-'));
  src = path.join(work, 'src');
  t = toolEnv(path.join(work, 'repo'), 'crash-test-pw', path.join(work, 'home'));
  await fsp.mkdir(t.home, { recursive: true });
  const rnd = prng(SEED);
  for (let i = 0; i < SMALL_FILES; i++) sizes.push(Math.floor(rnd() * 96 * 1024));
  for (let i = 0; i < BIG_FILES; i++) sizes.push(2 * 1024 * 1024 + Math.floor(rnd() * 4 * 1024 * 1024));
  ok(await dmctl(t, ['repo', 'init']));
});

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

/** Rewrites every file of the tree with content unique to `gen` (so a backup has new packs to write). */
async function writeTree(gen: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  await fsp.mkdir(path.join(src, 'small', 'a'), { recursive: true });
  await fsp.mkdir(path.join(src, 'small', 'b'), { recursive: true });
  await fsp.mkdir(path.join(src, 'big'), { recursive: true });
  for (let i = 0; i < sizes.length; i++) {
    const rel = i < SMALL_FILES ? `small/${i % 2 ? 'a' : 'b'}/f${i}` : `big/b${i}`;
    const data = seededBytes(sizes[i]!, `${gen}/${i}`);
    await fsp.writeFile(path.join(src, rel), data);
    files.set(rel, sha256(data));
  }
  return files;
}

async function streamSha(seed: string): Promise<string> {
  const shaFile = path.join(work, `sha-${seed}`);
  ok(await run(process.execPath, [GEN_STREAM, STREAM_SIZE, '--seed', seed, '--sha256-file', shaFile], { onStdout: () => {} }));
  return (await fsp.readFile(shaFile, 'utf8')).trim();
}

interface SnapInfo {
  id: string;
  short_id: string;
  tags?: string[];
}

async function snapshots(): Promise<SnapInfo[]> {
  return json<SnapInfo[] | null>(ok(await restic(t, ['--no-lock', 'snapshots', '--json']))) ?? [];
}

async function lockFiles(): Promise<string[]> {
  return (await fsp.readdir(path.join(t.repo, 'locks'))).filter((n) => /^[0-9a-f]{64}$/.test(n));
}

/** Restores every snapshot not checked yet and compares it with what was backed up under its tag. */
async function verifyNewSnapshots(): Promise<number> {
  let n = 0;
  for (const s of await snapshots()) {
    if (verified.has(s.id)) continue;
    const tag = s.tags?.[0];
    assert.ok(tag, `snapshot ${s.short_id} has no tag`);
    const exp = expected.get(tag);
    assert.ok(exp, `snapshot ${s.short_id}: unknown tag ${tag}`);
    if (exp.kind === 'tree') {
      const target = path.join(work, 'restore');
      await fsp.rm(target, { recursive: true, force: true });
      const r = await dmctl(t, ['restore', s.id, '--target', target]);
      assert.equal(r.code, 0, `restore of snapshot ${s.short_id} (${tag}): ${r.stderr}`);
      const got = await hashTree(path.join(target, src));
      assert.deepEqual(got, exp.files, `snapshot ${s.short_id} (${tag}) restored with different content`);
      await fsp.rm(target, { recursive: true, force: true });
    } else {
      const h = crypto.createHash('sha256');
      const r = await dmctlPipe(t, ['restore-stream', s.id], { onStdout: (c) => h.update(c) });
      assert.equal(r.code, 0, `restore-stream of snapshot ${s.short_id} (${tag}): ${r.stderr}`);
      assert.equal(h.digest('hex'), exp.sha, `snapshot ${s.short_id} (${tag}) streams different bytes`);
    }
    verified.add(s.id);
    n++;
  }
  return n;
}

/** The process ID of the last dmctl started (to tell whose lock is left, should one be). */
let lastPid = 0;
const onSpawn = (pid: number) => {
  lastPid = pid;
};

function backupTree(tag: string, killAfterMs?: number) {
  return dmctlPipe(t, ['backup', src, '--tag', tag], { killAfterMs, onSpawn });
}

function backupStream(tag: string, seed: string, killAfterMs?: number) {
  return dmctlPipe(t, ['backup-stream', '--name', 'dump.bin', '--tag', tag], { gen: [STREAM_SIZE, '--seed', seed], killAfterMs, onSpawn });
}

test(`SIGKILL at ${TRIALS} random moments of backup and backup-stream: restic check passes, snapshots restore, the next backup runs`, { timeout: 480_000 }, async () => {
  const started = Date.now();
  // A normal run of each kind first: the kill moments are spread over that duration.
  expected.set('base-tree', { kind: 'tree', files: await writeTree('base') });
  const baseTree = await backupTree('base-tree');
  assert.equal(baseTree.code, 0, baseTree.stderr);
  expected.set('base-stream', { kind: 'stream', sha: await streamSha('base') });
  const baseStream = await backupStream('base-stream', 'base');
  assert.equal(baseStream.code, 0, baseStream.stderr);
  const duration = { tree: baseTree.durationMs, stream: baseStream.durationMs };

  const rnd = prng(SEED + 1);
  const perKind = TRIALS / 2;
  let killedMidRun = 0;
  let staleLockSeen = 0;
  let snapshotsOfKilledRuns = 0;
  const log: string[] = [];
  for (let trial = 0; trial < TRIALS; trial++) {
    const kind = trial % 2 === 0 ? 'tree' : 'stream';
    const k = Math.floor(trial / 2);
    // Stratified: trial k of a kind lands in the k-th slice of the run, at a random point in it.
    const delay = Math.round(((k + rnd()) / perKind) * duration[kind] * 0.97);
    const tag = `trial-${trial}`;
    const before = new Set((await snapshots()).map((s) => s.id));

    let r;
    let killedPid = 0;
    if (kind === 'tree') {
      expected.set(tag, { kind: 'tree', files: await writeTree(tag) });
      r = await backupTree(tag, delay);
    } else {
      expected.set(tag, { kind: 'stream', sha: await streamSha(tag) });
      r = await backupStream(tag, tag, delay);
    }
    killedPid = lastPid;
    // The kill timer can fire just as the run ends on its own: what counts is how it ended.
    if (r.signal === 'SIGKILL') {
      killedMidRun++;
    } else {
      assert.equal(r.code, 0, `trial ${trial}: run finished before the kill but failed: ${r.stderr}`);
    }
    const afterKill = await snapshots();
    snapshotsOfKilledRuns += afterKill.filter((s) => !before.has(s.id)).length;

    // 1. The repository as the crash left it (stale lock included) passes restic's check.
    const check1 = await restic(t, ['--no-lock', 'check']);
    assert.equal(check1.code, 0, `trial ${trial} (${kind}, kill at ${delay} ms): restic check after the kill failed:\n${check1.stdout}\n${check1.stderr}`);

    // 2. The next dmctl backup completes without anyone unlocking: it skips the dead process's lock.
    const stale = await lockFiles();
    if (r.killed && stale.length) staleLockSeen++;
    const next = kind === 'tree' ? await backupTree(tag) : await backupStream(tag, tag);
    assert.equal(next.code, 0, `trial ${trial} (${kind}, kill at ${delay} ms): next backup failed with ${stale.length} stale lock(s): ${next.stderr}`);
    // A normal run of the same size: the current length of a run for the next kill of this kind.
    duration[kind] = next.durationMs;
    const left = (await lockFiles()).filter((l) => !stale.includes(l));
    if (left.length) {
      // Whose lock it is (pid, time) tells a lock the next run failed to remove from one written late.
      const shown = await Promise.all(left.map(async (id) => `${id}: ${(await restic(t, ['--no-lock', 'cat', 'lock', id])).stdout.toString().trim()}`));
      assert.fail(
        `trial ${trial} (${kind}, kill at ${delay} ms, killed pid ${killedPid}${r.killed ? '' : ', finished first'}): the completed backup (pid ${lastPid}) ` +
          `left a lock behind; stale before it: [${stale.join(', ')}]\n${shown.join('\n')}`,
      );
    }

    // 3. What a user does after a crash: restic unlock, restic check.
    const unlock = await restic(t, ['unlock']);
    assert.equal(unlock.code, 0, unlock.stderr);
    assert.deepEqual(await lockFiles(), [], 'restic unlock left a lock');
    const check2 = await restic(t, ['check']);
    assert.equal(check2.code, 0, `trial ${trial}: restic check after the next backup failed:\n${check2.stdout}\n${check2.stderr}`);

    // 4. Every snapshot that exists restores completely, with the bytes that were backed up.
    const n = await verifyNewSnapshots();
    assert.ok(n >= 1, `trial ${trial}: no new snapshot was verified`);
    log.push(`${kind}@${delay}ms${r.killed ? '' : '(done)'}${stale.length ? '+lock' : ''}`);
  }
  const elapsed = Date.now() - started;
  // eslint-disable-next-line no-console
  console.log(
    `crash-safety: normal run tree ${duration.tree} ms, stream ${duration.stream} ms; ${killedMidRun}/${TRIALS} killed mid-run, ` +
      `${staleLockSeen} left a stale lock, ${snapshotsOfKilledRuns} snapshot(s) by killed runs; ${verified.size} snapshots restored; ${Math.round(elapsed / 1000)} s\n  ${log.join(' ')}`,
  );
  // The kills must really have hit running backups, many of them while the lock was held.
  assert.ok(killedMidRun >= TRIALS - 3, `only ${killedMidRun} of ${TRIALS} runs were killed before they finished`);
  assert.ok(staleLockSeen >= TRIALS / 4, `only ${staleLockSeen} kills left a stale lock: the kill moments miss the backup phase`);
});
