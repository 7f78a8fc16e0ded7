// Everything a user can get wrong, and what dmctl must answer: the documented exit code
// (src/core/errors.ts EXIT_CODES), exactly one `dmctl: ...` line on stderr (plus an optional
// `hint: ...`), no stack trace, and under --json one `{"error":...,"exitCode":...}` object on stdout.
// Nothing that fails may leave a snapshot behind, and a full or read-only restore target is
// reported as such (exit 7) without leaving files with wrong bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EXIT_CODES } from '../../src/core/errors.js';
import { ToolEnv, toolEnv, dmctl, ok, restic, run, RunResult, DMCTL_BIN } from '../support/run.js';
import { oneErrorLine, seededBytes, hashTree } from '../support/proc.js';

let work: string;
let t: ToolEnv;
let src: string;
let treeSnap: string;
/** SHA-256 of every file of the tree snapshot, by path relative to `src`. */
let treeFiles: Map<string, string>;
/** Two snapshot IDs that share their first hex digit. */
let ambiguous: string;
const mounts: string[] = [];

async function snapshotFiles(): Promise<string[]> {
  return (await fsp.readdir(path.join(t.repo, 'snapshots'))).filter((n) => /^[0-9a-f]{64}$/.test(n)).sort();
}

/** Asserts the plain-text failure shape; returns the message after `dmctl: `. */
function failsWith(r: RunResult, code: number, what: string): string {
  assert.equal(r.code, code, `${what}: exit ${r.code}, wanted ${code}; stderr:\n${r.stderr}`);
  assert.equal(r.stdout.toString(), '', `${what}: nothing on stdout`);
  return oneErrorLine(r.stderr);
}

/** Asserts the --json failure shape: one JSON object on stdout, no message lines or traces on stderr. */
function failsWithJson(r: RunResult, code: number, errorCode: string | RegExp, what: string): Record<string, unknown> {
  assert.equal(r.code, code, `${what}: exit ${r.code}, wanted ${code}; stderr:\n${r.stderr}`);
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(r.stdout.toString()) as Record<string, unknown>;
  } catch {
    assert.fail(`${what}: stdout is not one JSON object:\n${r.stdout.toString()}`);
  }
  assert.equal(obj.exitCode, code);
  assert.equal(typeof obj.error, 'string');
  if (typeof errorCode === 'string') assert.equal(obj.error, errorCode);
  else assert.match(obj.error as string, errorCode);
  assert.equal(typeof obj.message, 'string');
  assert.ok((obj.message as string).length > 0 && !(obj.message as string).includes('\n'));
  assert.ok(!/\n\s+at /.test(r.stderr), `${what}: stack trace on stderr:\n${r.stderr}`);
  // stderr under --json off a terminal: nothing, or JSON lines (progress events) only.
  for (const l of r.stderr.split('\n').filter(Boolean)) {
    assert.doesNotThrow(() => JSON.parse(l), `${what}: stderr line is not JSON: ${l}`);
  }
  return obj;
}

async function mountTmpfs(dir: string, options: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  ok(await run('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]));
  mounts.push(dir);
}

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-bad-input-'));
  t = toolEnv(path.join(work, 'repo'), 'bad-input-pw', path.join(work, 'home'));
  await fsp.mkdir(t.home, { recursive: true });
  ok(await dmctl(t, ['repo', 'init']));
  // A tree with one 10 MiB file (more than a 2 MiB target holds) and a few small ones.
  src = path.join(work, 'src');
  await fsp.mkdir(path.join(src, 'sub'), { recursive: true });
  await fsp.writeFile(path.join(src, 'big.bin'), seededBytes(10 * 1024 * 1024, 'big'));
  for (let i = 0; i < 20; i++) await fsp.writeFile(path.join(src, 'sub', `s${i}.txt`), seededBytes(1000 + i * 500, `small${i}`));
  treeFiles = await hashTree(src);
  const b = await dmctl(t, ['backup', src, '--json']);
  ok(b);
  treeSnap = (JSON.parse(b.stdout.toString()) as { snapshotId: string }).snapshotId;
  assert.match(treeSnap, /^[0-9a-f]{64}$/);
  // Stream snapshots until two IDs share their first digit (at most 17 by pigeonhole).
  for (let i = 0; ; i++) {
    const ids = await snapshotFiles();
    const seen = new Map<string, number>();
    for (const id of ids) seen.set(id[0]!, (seen.get(id[0]!) ?? 0) + 1);
    const dup = [...seen.entries()].find(([, n]) => n > 1);
    if (dup) {
      ambiguous = dup[0];
      break;
    }
    assert.ok(i < 17, 'no two snapshot IDs share a first digit');
    ok(await dmctl(t, ['backup-stream', '--name', `s${i}.txt`], { input: `stream ${i}\n` }));
  }
});

after(async () => {
  for (const m of mounts.reverse()) await run('umount', [m]);
  await fsp.rm(work, { recursive: true, force: true });
});

test('wrong password: exit 12, one line', async () => {
  const r = await dmctl(t, ['snapshots'], { env: { DM_PASSWORD: 'not-the-password' } });
  const msg = failsWith(r, EXIT_CODES.WRONG_PASSWORD, 'wrong password');
  assert.match(msg, /password/i);
  assert.ok(!msg.includes('not-the-password'), 'the password must not be echoed');
  const b = await dmctl(t, ['backup', src], { env: { DM_PASSWORD: 'not-the-password' } });
  failsWith(b, EXIT_CODES.WRONG_PASSWORD, 'backup with a wrong password');
});

test('wrong password --json: {"error":"wrong-password","exitCode":12} on stdout', async () => {
  const r = await dmctl(t, ['snapshots', '--json'], { env: { DM_PASSWORD: 'not-the-password' } });
  failsWithJson(r, EXIT_CODES.WRONG_PASSWORD, 'wrong-password', 'wrong password --json');
  assert.ok(!r.stdout.toString().includes('not-the-password'));
});

test('missing repository: exit 10, one line naming the location', async () => {
  const where = path.join(work, 'no-repo-here');
  const r = await dmctl(t, ['snapshots'], { env: { DM_REPOSITORY: where } });
  const msg = failsWith(r, EXIT_CODES.NO_REPOSITORY, 'missing repository');
  assert.ok(msg.includes(where), msg);
  const j = await dmctl(t, ['restore', 'latest', '--target', path.join(work, 'x'), '--json'], { env: { DM_REPOSITORY: where } });
  failsWithJson(j, EXIT_CODES.NO_REPOSITORY, 'no-repository', 'missing repository --json');
  // and without a password too (as restic): the location is what is wrong, not the password
  const n = await dmctl(t, ['snapshots'], { env: { DM_REPOSITORY: where, DM_PASSWORD: undefined } });
  assert.ok(failsWith(n, EXIT_CODES.NO_REPOSITORY, 'missing repository, no password').includes(where));
  await assert.rejects(fsp.stat(where), 'dmctl must not create the missing repository');
});

test('repo init on an existing repository: refuses, adds no key, leaves the config alone', async () => {
  const keysBefore = await fsp.readdir(path.join(t.repo, 'keys'));
  const configBefore = await fsp.readFile(path.join(t.repo, 'config'));
  const r = await dmctl(t, ['repo', 'init']);
  const msg = failsWith(r, EXIT_CODES.FAILURE, 'init on existing repository');
  assert.match(msg, /already exists/);
  const j = await dmctl(t, ['repo', 'init', '--json']);
  failsWithJson(j, EXIT_CODES.FAILURE, 'repository-exists', 'init on existing repository --json');
  assert.deepEqual(await fsp.readdir(path.join(t.repo, 'keys')), keysBefore);
  assert.deepEqual(await fsp.readFile(path.join(t.repo, 'config')), configBefore);
  // and the repository still opens
  ok(await dmctl(t, ['snapshots']));
});

test('no password and no terminal: usage error (exit 2), no prompt', async () => {
  // stdin is a pipe (not a TTY), as in scripts and CI.
  const r = await dmctl(t, ['snapshots'], { env: { DM_PASSWORD: undefined } });
  const msg = failsWith(r, EXIT_CODES.USAGE, 'no password');
  assert.match(msg, /password/);
  const j = await dmctl(t, ['snapshots', '--json'], { env: { DM_PASSWORD: undefined } });
  failsWithJson(j, EXIT_CODES.USAGE, 'usage', 'no password --json');
});

test('unknown flag: exit 2, one line', async () => {
  const r = await dmctl(t, ['backup', src, '--no-such-flag']);
  const msg = failsWith(r, EXIT_CODES.USAGE, 'unknown flag');
  assert.match(msg, /no-such-flag/);
  const j = await dmctl(t, ['snapshots', '--no-such-flag', '--json']);
  failsWithJson(j, EXIT_CODES.USAGE, 'usage', 'unknown flag --json');
});

test('backup of a missing path: usage error (exit 2) naming it, no snapshot', async () => {
  const before = await snapshotFiles();
  const missing = path.join(work, 'does', 'not', 'exist');
  const r = await dmctl(t, ['backup', src, missing]);
  const msg = failsWith(r, EXIT_CODES.USAGE, 'backup of a missing path');
  assert.ok(msg.includes(missing), msg);
  const j = await dmctl(t, ['backup', missing, '--json']);
  failsWithJson(j, EXIT_CODES.USAGE, 'usage', 'backup of a missing path --json');
  assert.deepEqual(await snapshotFiles(), before);
});

test('backup-stream -- false: exit 6 naming the status, no snapshot written', async () => {
  const before = await snapshotFiles();
  const r = await dmctl(t, ['backup-stream', '--name', 'db.sql', '--', 'false']);
  const msg = failsWith(r, EXIT_CODES.SOURCE_COMMAND, 'backup-stream -- false');
  assert.match(msg, /false/);
  assert.match(msg, /status 1/);
  assert.deepEqual(await snapshotFiles(), before, 'a snapshot was written for a failed command');
  // A command that writes data and then fails: still no snapshot.
  const r2 = await dmctl(t, ['backup-stream', '--name', 'db.sql', '--', 'sh', '-c', 'head -c 3000000 /dev/urandom; exit 3']);
  const msg2 = failsWith(r2, EXIT_CODES.SOURCE_COMMAND, 'backup-stream of a command that fails after writing');
  assert.match(msg2, /status 3/);
  const j = await dmctl(t, ['backup-stream', '--name', 'db.sql', '--json', '--', 'false']);
  failsWithJson(j, EXIT_CODES.SOURCE_COMMAND, 'source-command-failed', 'backup-stream -- false --json');
  assert.deepEqual(await snapshotFiles(), before, 'a snapshot was written for a failed command');
});

test('backup-stream -- /no/such/cmd: exit 6, no snapshot', async () => {
  const before = await snapshotFiles();
  const r = await dmctl(t, ['backup-stream', '--name', 'db.sql', '--', '/no/such/cmd']);
  const msg = failsWith(r, EXIT_CODES.SOURCE_COMMAND, 'backup-stream -- /no/such/cmd');
  assert.ok(msg.includes('/no/such/cmd'), msg);
  assert.deepEqual(await snapshotFiles(), before);
});

test('backup-stream of empty stdin: fails, no snapshot', async () => {
  const before = await snapshotFiles();
  const r = await dmctl(t, ['backup-stream', '--name', 'empty.sql'], { input: Buffer.alloc(0) });
  const msg = failsWith(r, EXIT_CODES.FAILURE, 'empty stdin');
  assert.match(msg, /no data/);
  assert.deepEqual(await snapshotFiles(), before);
});

test('snapshot ID that does not exist: one line naming it', async () => {
  // A valid-looking ID no snapshot starts with.
  const ids = await snapshotFiles();
  let absent = '';
  for (const c of '0123456789abcdef') {
    const cand = c.repeat(8);
    if (!ids.some((id) => id.startsWith(cand))) {
      absent = cand;
      break;
    }
  }
  const target = path.join(work, 'never-written');
  const r = await dmctl(t, ['restore', absent, '--target', target]);
  const msg = failsWith(r, EXIT_CODES.FAILURE, 'unknown snapshot');
  assert.ok(msg.includes(absent), msg);
  const d = await dmctl(t, ['restore-stream', absent]);
  failsWith(d, EXIT_CODES.FAILURE, 'restore-stream of an unknown snapshot');
  const j = await dmctl(t, ['ls', absent, '--json']);
  failsWithJson(j, EXIT_CODES.FAILURE, 'snapshot-not-found', 'ls of an unknown snapshot --json');
  await assert.rejects(fsp.stat(target), 'nothing may be created for an unknown snapshot');
});

test('ambiguous snapshot ID prefix: usage error (exit 2) saying so', async () => {
  const r = await dmctl(t, ['restore', ambiguous, '--target', path.join(work, 'ambiguous')]);
  const msg = failsWith(r, EXIT_CODES.USAGE, 'ambiguous prefix');
  assert.match(msg, /ambiguous/);
  const j = await dmctl(t, ['restore', ambiguous, '--target', path.join(work, 'ambiguous'), '--json']);
  failsWithJson(j, EXIT_CODES.USAGE, 'usage', 'ambiguous prefix --json');
});

test('restore into a read-only file system: exit 7, one line', async () => {
  const ro = path.join(work, 'ro');
  await mountTmpfs(ro, 'size=1m,ro');
  const r = await dmctl(t, ['restore', treeSnap, '--target', ro]);
  const msg = failsWith(r, EXIT_CODES.TARGET, 'restore into a read-only target');
  assert.match(msg, /read-only/);
  // A target directory that has to be created on the read-only file system: the same answer.
  const r2 = await dmctl(t, ['restore', treeSnap, '--target', path.join(ro, 'new', 'dir')]);
  const msg2 = failsWith(r2, EXIT_CODES.TARGET, 'restore into a missing directory on a read-only target');
  assert.match(msg2, /read-only/);
  const j = await dmctl(t, ['restore', treeSnap, '--target', ro, '--json']);
  failsWithJson(j, EXIT_CODES.TARGET, 'target', 'restore into a read-only target --json');
});

test('restore into a full file system: exit 7 saying so, no file with wrong bytes left', async () => {
  const full = path.join(work, 'full');
  await mountTmpfs(full, 'size=2m');
  const r = await dmctl(t, ['restore', treeSnap, '--target', full]);
  const msg = failsWith(r, EXIT_CODES.TARGET, 'restore into a full target');
  assert.match(msg, /no space left/);
  // Whatever was restored before the disk filled up has exactly the original bytes.
  const restoredRoot = path.join(full, src);
  const got = await hashTree(full).catch(() => new Map<string, string>());
  for (const [rel, h] of got) {
    const abs = path.join(full, rel);
    assert.ok(abs.startsWith(restoredRoot + path.sep), `unexpected file ${rel}`);
    const orig = path.relative(restoredRoot, abs);
    assert.equal(h, treeFiles.get(orig), `${orig} was left in the target with wrong content`);
  }
  assert.ok(!got.has(path.relative(full, path.join(restoredRoot, 'big.bin'))), 'the 10 MiB file cannot fit');
  // --json variant, into a fresh full file system
  await run('umount', [full]);
  mounts.pop();
  await mountTmpfs(full, 'size=2m');
  const j = await dmctl(t, ['restore', treeSnap, '--target', full, '--json']);
  failsWithJson(j, EXIT_CODES.TARGET, 'target', 'restore into a full target --json');
  for (const [rel, h] of await hashTree(full)) {
    assert.equal(h, treeFiles.get(path.relative(restoredRoot, path.join(full, rel))), `${rel} left with wrong content (--json run)`);
  }
});

test('restore-stream into a full file system: exit 7, one line, no stack trace', async () => {
  const full = path.join(work, 'full-stream');
  await mountTmpfs(full, 'size=2m');
  const out = path.join(full, 'big.bin');
  const sh = `exec "$0" "$1" restore-stream "$2" --name "$3" > "$4"`;
  const r = await run('sh', ['-c', sh, process.execPath, DMCTL_BIN, treeSnap, path.join(src, 'big.bin'), out], {
    env: { DM_REPOSITORY: t.repo, DM_PASSWORD: t.password, HOME: t.home, NO_COLOR: '1' },
  });
  const msg = failsWith(r, EXIT_CODES.TARGET, 'restore-stream into a full file system');
  assert.match(msg, /no space left/);
});

test('restore-stream into a pipe closed early (| head): exit 7, one line', async () => {
  const sh = `set -o pipefail; "$0" "$1" restore-stream "$2" --name "$3" | head -c 1000 > /dev/null`;
  const r = await run('bash', ['-c', sh, process.execPath, DMCTL_BIN, treeSnap, path.join(src, 'big.bin')], {
    env: { DM_REPOSITORY: t.repo, DM_PASSWORD: t.password, HOME: t.home, NO_COLOR: '1' },
  });
  const msg = failsWith(r, EXIT_CODES.TARGET, 'restore-stream | head');
  assert.match(msg, /pipe/);
});

test('a repository on a full disk: backup-stream and backup exit 4 saying so, no snapshot, restic check passes, and work again once there is space', async () => {
  const disk = path.join(work, 'full-repo');
  await mountTmpfs(disk, 'size=6m');
  const ft = toolEnv(path.join(disk, 'repo'), 'full-disk-pw', t.home);
  ok(await dmctl(ft, ['repo', 'init']));
  const snaps = async () => (await fsp.readdir(path.join(ft.repo, 'snapshots'))).filter((n) => /^[0-9a-f]{64}$/.test(n));
  const resticCheck = async (what: string) => {
    const c = await restic(ft, ['check', '--read-data']);
    assert.equal(c.code, 0, `${what}: restic check failed\n${c.stdout.toString()}${c.stderr}`);
  };
  // 12 MiB of incompressible data through a pipe: twice what the disk holds.
  const sh = `head -c 12582912 /dev/urandom | exec "$0" "$1" backup-stream --name dump.bin`;
  const env = { DM_REPOSITORY: ft.repo, DM_PASSWORD: ft.password, HOME: ft.home, NO_COLOR: '1' };
  const r = await run('sh', ['-c', sh, process.execPath, DMCTL_BIN], { env });
  const msg = failsWith(r, EXIT_CODES.STORAGE, 'backup-stream into a full repository disk');
  assert.match(msg, /no space left on device/);
  assert.doesNotMatch(r.stderr, /internal error/);
  assert.deepEqual(await snaps(), [], 'no snapshot may claim data that was not stored');
  // A tree (10 MiB file) as well, plain and --json.
  const b = await dmctl(ft, ['backup', src]);
  assert.match(failsWith(b, EXIT_CODES.STORAGE, 'backup into a full repository disk'), /no space left on device/);
  failsWithJson(await dmctl(ft, ['backup', src, '--json']), EXIT_CODES.STORAGE, 'storage-no-space', 'backup --json into a full repository disk');
  assert.deepEqual(await snaps(), []);
  // No temp pack is left to fill the disk further, and restic finds the repository consistent.
  const leftovers = (await fsp.readdir(path.join(ft.repo, 'data'), { recursive: true })).filter((n) => String(n).endsWith('-tmp-dmctl-pack'));
  assert.deepEqual(leftovers, []);
  await resticCheck('after the failed backups');
  // Once there is space, the same backup succeeds and restores exactly.
  ok(await run('mount', ['-o', 'remount,size=64m', disk]));
  ok(await dmctl(ft, ['backup', src]));
  const target = path.join(work, 'full-repo-restore');
  ok(await dmctl(ft, ['restore', 'latest', '--target', target]));
  assert.deepEqual(await hashTree(path.join(target, src)), treeFiles);
  await resticCheck('after the successful backup');
});

test('the repository is intact after all of the above', async () => {
  const target = path.join(work, 'final');
  ok(await dmctl(t, ['restore', treeSnap, '--target', target]));
  assert.deepEqual(await hashTree(path.join(target, src)), treeFiles);
  const r = await run('restic', ['check'], { env: { RESTIC_REPOSITORY: t.repo, RESTIC_PASSWORD: t.password, RESTIC_CACHE_DIR: path.join(t.home, 'rc') } });
  assert.equal(r.code, 0, r.stdout.toString() + r.stderr);
});
