// Locks between dmctl and restic around prune: while an exclusive lock is held (by this test, with
// the same lock code dmctl prune uses, or by a running dmctl prune), backups of both tools fail
// cleanly ("locked", exit 11 for dmctl) or wait with --retry-lock; no snapshot ever references a
// deleted pack. Also unlock (stale vs --remove-all) and --retry-lock on prune/forget/check.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, restic, toolEnv, json, type ToolEnv, type RunResult } from '../support/run.js';
import { LocalBackend } from '../../src/storage/local.js';
import { Repository } from '../../src/repository/repository.js';
import { RepoLock, encodeLock } from '../../src/repository/lock.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-locks-'));
const src = path.join(work, 'src');
let t: ToolEnv;

before(async () => {
  t = toolEnv(path.join(work, 'repo'));
  await fsp.mkdir(src, { recursive: true });
  for (let i = 0; i < 20; i++) await fsp.writeFile(path.join(src, `f${i}`), crypto.randomBytes(100_000));
  ok(await dmctl(t, ['repo', 'init']));
  ok(await dmctl(t, ['backup', '-q', src]));
  ok(await restic(t, ['backup', '-q', src]));
});

after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

async function open(): Promise<Repository> {
  return Repository.open(new LocalBackend(t.repo), t.password);
}

async function lockFiles(): Promise<string[]> {
  return fsp.readdir(path.join(t.repo, 'locks'));
}

test('while an exclusive lock is held, dmctl and restic backups fail cleanly; --retry-lock waits', async () => {
  const repo = await open();
  const lock = await RepoLock.acquire(repo, { exclusive: true });
  try {
    const d = await dmctl(t, ['backup', '-q', src]);
    assert.equal(d.code, 11, d.stderr);
    assert.match(d.stderr, /locked/);
    assert.equal(d.stderr.trim().split('\n').length <= 2, true, 'one line + hint, no stack');
    const r = await restic(t, ['backup', '-q', src]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /locked/);
    for (const args of [['prune'], ['forget', '--keep-last', '1'], ['check'], ['key', 'list'], ['stats'], ['snapshots'], ['ls', 'latest']]) {
      const x = await dmctl(t, args);
      assert.equal(x.code, 11, `${args.join(' ')}: ${x.stderr}`);
    }
    // Read-only commands can skip the lock, as with restic's --no-lock.
    const listed = await dmctl(t, ['snapshots', '--no-lock', '--json']);
    ok(listed);
    assert.equal(json<unknown[]>(listed).length, 2);
    ok(await dmctl(t, ['ls', '--no-lock', 'latest']));
    // With --retry-lock the backup waits until the lock goes away.
    const waiting = dmctl(t, ['backup', '-q', '--retry-lock', '30s', src]);
    await new Promise((res) => setTimeout(res, 2500));
    await lock.release();
    const w = await waiting;
    ok(w);
    assert.ok(w.durationMs >= 2000, `returned after ${w.durationMs} ms, before the lock was released`);
  } finally {
    await lock.release();
    await repo.backend.close();
  }
  assert.deepEqual(await lockFiles(), [], 'no lock left behind');
  // snapshots and ls release their shared lock.
  ok(await dmctl(t, ['snapshots']));
  ok(await dmctl(t, ['ls', 'latest']));
  assert.deepEqual(await lockFiles(), [], 'snapshots and ls leave no lock behind');
});

test('prune --retry-lock waits for a backup-style (shared) lock', async () => {
  const repo = await open();
  const lock = await RepoLock.acquire(repo, { exclusive: false });
  const started = Date.now();
  const p = dmctl(t, ['prune', '--retry-lock', '30s']);
  await new Promise((res) => setTimeout(res, 2000));
  await lock.release();
  await repo.backend.close();
  ok(await p);
  assert.ok(Date.now() - started >= 2000);
});

test('backups of both tools racing a running prune: each waits or fails cleanly; nothing references a deleted pack', async () => {
  // Something to prune: forget all but the newest snapshot, and change data between backups.
  const results: { tool: string; r: RunResult }[] = [];
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 20; i += 3) await fsp.writeFile(path.join(src, `f${i}`), crypto.randomBytes(100_000));
    ok(await dmctl(t, ['backup', '-q', src]));
    ok(await dmctl(t, ['forget', '--keep-last', '1']));
    const prune = dmctl(t, ['prune', '--max-unused', '0', '--retry-lock', '60s']);
    // Start backups at staggered moments while the prune runs.
    const backups: Promise<void>[] = [];
    for (let k = 0; k < 4; k++) {
      backups.push(
        (async () => {
          await new Promise((res) => setTimeout(res, 150 * k));
          await fsp.writeFile(path.join(src, `new-${round}-${k}`), crypto.randomBytes(50_000));
          const tool = k % 2 ? 'restic' : 'dmctl';
          const r = tool === 'dmctl' ? await dmctl(t, ['backup', '-q', src]) : await restic(t, ['backup', '-q', src]);
          results.push({ tool, r });
        })(),
      );
    }
    ok(await prune);
    await Promise.all(backups);
    for (const { tool, r } of results) {
      if (r.code === 0) continue;
      // A clean failure: the repository was locked.
      assert.match(r.stderr, /locked/, `${tool} backup failed otherwise: ${r.stderr}`);
      if (tool === 'dmctl') assert.equal(r.code, 11);
    }
    // Every snapshot (including those written beside the prune) is complete.
    ok(await restic(t, ['check', '--read-data']));
    const chk = await dmctl(t, ['check', '--read-data', '--json']);
    assert.equal(chk.code, 0, chk.stdout.toString());
  }
  assert.ok(results.length === 12);
});

test('unlock removes stale locks only; --remove-all removes every lock', async () => {
  const repo = await open();
  // A stale lock: this host, a process that does not exist.
  const stale = await repo.saveUnpacked('locks', encodeLock({ time: new Date().toISOString(), exclusive: true, hostname: os.hostname(), username: 'x', pid: 2 ** 22 + 12345 }));
  // A live lock: held by this process.
  const live = await RepoLock.acquire(repo, { exclusive: false });
  try {
    const u = json<{ removed: string[] }>(ok(await dmctl(t, ['unlock', '--json'])));
    assert.deepEqual(u.removed, [stale]);
    assert.deepEqual(await lockFiles(), [live.id]);
    const all = json<{ removed: string[] }>(ok(await dmctl(t, ['unlock', '--remove-all', '--json'])));
    assert.deepEqual(all.removed, [live.id]);
    assert.deepEqual(await lockFiles(), []);
  } finally {
    await live.release();
    await repo.backend.close();
  }
});
