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
import { decodeIndex, encodeIndex, type IndexFile } from '../../src/repository/index-file.js';
import type { FileInfo } from '../../src/storage/backend.js';
import { backup } from '../../src/archiver/archiver.js';
import { restore } from '../../src/restorer/restorer.js';
import { dumpFile } from '../../src/restorer/dump.js';
import { Writable } from 'node:stream';
import { spawn } from 'node:child_process';
import { DMCTL_BIN } from '../support/run.js';
import { GEN_STREAM } from '../support/proc.js';

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

/** A local backend that runs `onLockSaved` right after a lock file is written (inside the 200 ms wait). */
class HookedBackend extends LocalBackend {
  onLockSaved?: () => Promise<void>;
  /** Listings of locks/ after our lock was written (the second check) wait for this. */
  holdRecheck?: Promise<void>;
  private lockSaved = false;
  override async save(type: Parameters<LocalBackend['save']>[0], name: string, data: Uint8Array): Promise<void> {
    await super.save(type, name, data);
    if (type === 'locks') this.lockSaved = true;
    if (type === 'locks' && this.onLockSaved) {
      const hook = this.onLockSaved;
      this.onLockSaved = undefined;
      setTimeout(() => void hook(), 60);
    }
  }
  override async *list(type: Parameters<LocalBackend['list']>[0]): AsyncIterable<FileInfo> {
    if (type === 'locks' && this.lockSaved && this.holdRecheck) await this.holdRecheck;
    yield* super.list(type);
  }
}

/** Every file under the repository's data/, index/ and snapshots/ (temp packs included). */
async function storedFiles(repoDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of ['data', 'index', 'snapshots']) {
    for (const e of await fsp.readdir(path.join(repoDir, d), { recursive: true, withFileTypes: true })) {
      if (e.isFile()) out.push(path.join(e.parentPath ?? e.path, e.name));
    }
  }
  return out.sort();
}

/** A folder of `n` files of fresh random data, 400 KB each. */
async function freshSource(name: string, n: number): Promise<string> {
  const dir = path.join(work, name);
  await fsp.mkdir(dir, { recursive: true });
  for (let i = 0; i < n; i++) await fsp.writeFile(path.join(dir, `f${i}`), crypto.randomBytes(400_000));
  return dir;
}

// The early lock (backup, backup-stream, restore, dump): the work starts while the lock is checked
// again. The second check is held here until the backup has read everything and waits only for the
// verdict, so without the writer's gate its packs, index and snapshot would already be stored.
test('early lock: a backup that loses the second check stores nothing and fails cleanly', async () => {
  const { env } = await twoIndexRepo('early-conflict');
  const source = await freshSource('early-conflict-src', 40);
  const be = new HookedBackend(env.repo);
  const repo = await Repository.open(be, env.password);
  const other = await Repository.open(new LocalBackend(env.repo), env.password);
  const stored = await storedFiles(env.repo);
  let release!: () => void;
  be.holdRecheck = new Promise((r) => (release = r));
  be.onLockSaved = async () => {
    await other.saveUnpacked('locks', encodeLock({ time: new Date().toISOString(), exclusive: true, hostname: os.hostname(), username: 'prune', pid: process.pid }));
  };
  let filesDone = 0;
  const running = backup(repo, { paths: [source], progress: (p) => (filesDone = Math.max(filesDone, p.filesDone ?? 0)) });
  running.catch(() => {});
  for (let i = 0; i < 600 && filesDone < 40; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(filesDone, 40, 'the backup read its files before the second check');
  await new Promise((r) => setTimeout(r, 300));
  release();
  await assert.rejects(running, /already locked/);
  assert.deepEqual(await storedFiles(env.repo), stored, 'nothing was stored');
  assert.equal((await fsp.readdir(path.join(env.repo, 'locks'))).length, 1, 'our lock file is gone');
  await other.backend.remove('locks', (await fsp.readdir(path.join(env.repo, 'locks')))[0]!);
  ok(await restic(env, ['check']));
});

test('early lock: a prune that finished inside the window fails the backup before anything is stored', async () => {
  const { env, indexFiles } = await twoIndexRepo('early-pruned');
  const source = await freshSource('early-pruned-src', 10);
  const be = new HookedBackend(env.repo);
  const repo = await Repository.open(be, env.password);
  const other = await Repository.open(new LocalBackend(env.repo), env.password);
  await other.loadIndex();
  const kept = await decodeIndexFile(other, indexFiles[0]!);
  const before = await storedFiles(env.repo);
  let release!: () => void;
  be.holdRecheck = new Promise((r) => (release = r));
  let filesDone = 0;
  const running = backup(repo, { paths: [source], progress: (p) => (filesDone = Math.max(filesDone, p.filesDone ?? 0)) });
  running.catch(() => {});
  for (let i = 0; i < 600 && filesDone < 10; i++) await new Promise((r) => setTimeout(r, 20));
  // What a prune does when it started just before us and finishes now: index files replaced.
  const newIndex = await other.saveUnpacked('index', encodeIndex({ packs: kept.packs }));
  for (const id of indexFiles) await other.backend.remove('index', id);
  await new Promise((r) => setTimeout(r, 300));
  release();
  const stored = [...before.filter((f) => !indexFiles.includes(path.basename(f))), path.join(env.repo, 'index', newIndex)].sort();
  await assert.rejects(running, /pruned while this operation was starting; nothing was written/);
  assert.deepEqual(await storedFiles(env.repo), stored, 'nothing was stored');
  assert.deepEqual(await fsp.readdir(path.join(env.repo, 'locks')), []);
});

test('early lock: restore and dump that lose the second check write no byte', async () => {
  const { env } = await twoIndexRepo('early-read');
  for (const op of ['restore', 'dump'] as const) {
    const be = new HookedBackend(env.repo);
    const repo = await Repository.open(be, env.password);
    const other = await Repository.open(new LocalBackend(env.repo), env.password);
    let release!: () => void;
    be.holdRecheck = new Promise((r) => (release = r));
    let otherLock = '';
    be.onLockSaved = async () => {
      otherLock = await other.saveUnpacked('locks', encodeLock({ time: new Date().toISOString(), exclusive: true, hostname: os.hostname(), username: 'prune', pid: process.pid }));
    };
    const target = path.join(work, `early-read-${op}`);
    const chunks: Buffer[] = [];
    const output = new Writable({ write: (c: Buffer, _e, cb) => (chunks.push(c), cb()) });
    const running = op === 'restore' ? restore(repo, { snapshot: 'latest', target }) : dumpFile(repo, { snapshot: 'latest', name: path.join(work, 'early-read-b', 'data'), output });
    running.catch(() => {});
    await new Promise((r) => setTimeout(r, 500));
    release();
    await assert.rejects(running, /already locked/, op);
    assert.equal(await fsp.stat(target).then(() => true, () => false), false, `${op}: no target created`);
    assert.equal(Buffer.concat(chunks).length, 0, `${op}: nothing written to the output`);
    await other.backend.remove('locks', otherLock);
  }
});

/** A repository of its own with two index files (two backups of different data). */
async function twoIndexRepo(name: string): Promise<{ env: ToolEnv; indexFiles: string[] }> {
  const env = toolEnv(path.join(work, name), 'lock-index-pw', t.home);
  ok(await dmctl(env, ['repo', 'init']));
  for (const part of ['a', 'b']) {
    const dir = path.join(work, `${name}-${part}`);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(path.join(dir, 'data'), crypto.randomBytes(50_000));
    ok(await dmctl(env, ['backup', '-q', dir]));
  }
  const indexFiles = (await fsp.readdir(path.join(env.repo, 'index'))).sort();
  assert.equal(indexFiles.length, 2);
  return { env, indexFiles };
}

test('the index read while waiting for the lock check is read again when a prune replaced index files meanwhile', async () => {
  const { env, indexFiles } = await twoIndexRepo('replaced');
  const be = new HookedBackend(env.repo);
  const repo = await Repository.open(be, env.password);
  // What a prune finishing during the wait does: one new index file with part of the packs, the old ones deleted.
  const other = await Repository.open(new LocalBackend(env.repo), env.password);
  await other.loadIndex();
  const kept = await decodeIndexFile(other, indexFiles[0]!);
  const dropped = await decodeIndexFile(other, indexFiles[1]!);
  let newIndex = '';
  be.onLockSaved = async () => {
    newIndex = await other.saveUnpacked('index', encodeIndex({ packs: kept.packs }));
    for (const id of indexFiles) await other.backend.remove('index', id);
  };
  const lock = await RepoLock.acquire(repo, { exclusive: false, loadIndex: () => {} });
  try {
    assert.ok(newIndex, 'the replacement ran during the wait');
    assert.deepEqual([...repo.index.files], [newIndex]);
    for (const p of dropped.packs) assert.equal(repo.index.packs.has(p.id), false, `pack ${p.id} of a deleted index file is still known`);
    for (const p of kept.packs) assert.ok(repo.index.packs.has(p.id));
  } finally {
    await lock.release();
  }
});

test('a conflicting lock found at the second check drops the index read while waiting', async () => {
  const { env } = await twoIndexRepo('conflict');
  const be = new HookedBackend(env.repo);
  const repo = await Repository.open(be, env.password);
  const other = await Repository.open(new LocalBackend(env.repo), env.password);
  be.onLockSaved = async () => {
    await other.saveUnpacked('locks', encodeLock({ time: new Date().toISOString(), exclusive: true, hostname: os.hostname(), username: 'prune', pid: process.pid }));
  };
  await assert.rejects(RepoLock.acquire(repo, { exclusive: false, loadIndex: () => {} }), /locked/);
  assert.equal(repo.index.files.size, 0);
  assert.equal(repo.index.packs.size, 0);
  // Our own lock file was removed; only the other one is left.
  assert.equal((await fsp.readdir(path.join(env.repo, 'locks'))).length, 1);
});

async function decodeIndexFile(repo: Repository, id: string): Promise<IndexFile> {
  return decodeIndex(await repo.loadUnpacked('index', id), id);
}

/** Lock files in the repository. */
async function lockNames(): Promise<string[]> {
  return (await fsp.readdir(path.join(t.repo, 'locks'))).filter((n) => /^[0-9a-f]{64}$/.test(n));
}

/**
 * Starts dmctl (stdin from gen-stream with `gen`), waits until it has written its lock, sends
 * `sig`, and resolves with its exit status and stderr.
 */
async function interruptOnceLocked(args: string[], sig: NodeJS.Signals, gen?: string[]): Promise<{ code: number | null; stderr: string; lockSeen: boolean }> {
  const g = gen ? spawn(process.execPath, [GEN_STREAM, ...gen], { stdio: ['ignore', 'pipe', 'inherit'] }) : undefined;
  const env: NodeJS.ProcessEnv = { ...process.env, DM_REPOSITORY: t.repo, DM_PASSWORD: t.password, HOME: t.home, NO_COLOR: '1' };
  delete env.DM_PASSWORD_FILE;
  const child = spawn(process.execPath, [DMCTL_BIN, ...args], { env, stdio: [g ? g.stdout! : 'ignore', 'ignore', 'pipe'] });
  g?.stdout?.destroy();
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  const before = new Set(await lockNames());
  let lockSeen = false;
  for (let i = 0; i < 1500 && child.exitCode === null; i++) {
    if ((await lockNames()).some((n) => !before.has(n))) {
      lockSeen = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  child.kill(sig);
  const code = await exited;
  g?.kill('SIGKILL');
  return { code, stderr, lockSeen };
}

test('SIGTERM or SIGINT while a backup holds its lock: exit 130, the lock removed (as restic does), no snapshot', async () => {
  const snapsBefore = (await fsp.readdir(path.join(t.repo, 'snapshots'))).length;
  const cases: { what: string; args: string[]; sig: NodeJS.Signals; gen?: string[] }[] = [
    { what: 'backup-stream', args: ['backup-stream', '--name', 'long.bin'], sig: 'SIGTERM', gen: ['2G', '--seed', 'interrupt'] },
    { what: 'backup-stream (SIGINT)', args: ['backup-stream', '--name', 'long2.bin'], sig: 'SIGINT', gen: ['2G', '--seed', 'interrupt-2'] },
  ];
  for (const c of cases) {
    const r = await interruptOnceLocked(c.args, c.sig, c.gen);
    assert.ok(r.lockSeen, `${c.what}: its lock was never seen (it ended first: ${r.stderr})`);
    assert.equal(r.code, 130, `${c.what}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`interrupted by ${c.sig}`));
    assert.deepEqual(await lockNames(), [], `${c.what}: the lock is removed on ${c.sig}`);
  }
  assert.equal((await fsp.readdir(path.join(t.repo, 'snapshots'))).length, snapsBefore, 'no snapshot from the interrupted runs');
  ok(await restic(t, ['check']));
});
