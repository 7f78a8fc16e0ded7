// The unmodified restic 0.14 client against `dmctl server start` over HTTPS (generated certificate, --cacert):
// a full user runs the whole cycle with its own password (opened by the key file the server wrote for it);
// an append user can back up but not forget/prune; a removed user loses login and key.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp, readdirSync } from 'node:fs';
import path from 'node:path';
import { dmctl, restic, restUrl, startServerProcess, tmpDir, writeSecret, type ServerProcess } from '../support/server-helpers.js';

const dir = tmpDir('server-interop');
const repoDir = path.join(dir, 'repo');
const usersFile = path.join(dir, 'users.json');
const tlsDir = path.join(dir, 'tls');
const cacert = path.join(tlsDir, 'cert.pem');
const REPO_PW = 'repo-' + crypto.randomBytes(6).toString('hex');
const CAROL_PW = 'carol-' + crypto.randomBytes(6).toString('hex');
const BOB_PW = 'bob:with@odd/chars ' + crypto.randomBytes(3).toString('hex');
let srv: ServerProcess;
let admin: string[];

before(async () => {
  const repoPwFile = await writeSecret(path.join(dir, 'repo.pw'), REPO_PW);
  // The admin logs in with the repository password (it initialises the repository).
  const add = await dmctl(['server', 'users', 'add', 'admin', '--role', 'full', '--password-file', repoPwFile, '--users-file', usersFile]);
  assert.equal(add.code, 0, add.stderr);
  srv = await startServerProcess(['--repo', repoDir, '--tls-generate-cert', '--tls-out-dir', tlsDir, '--users-file', usersFile, '--password-file', repoPwFile], dir);
  admin = ['--server', `https://127.0.0.1:${srv.port}/`, '--server-cert-fingerprint', srv.fingerprint!, '--admin-user', 'admin', '--admin-password-file', repoPwFile];
});

after(async () => {
  const code = await srv?.stop();
  assert.equal(code, 0, 'server exits cleanly on SIGTERM');
  await fsp.rm(dir, { recursive: true, force: true });
});

test('the generated certificate is what the data file announces', async () => {
  const pem = await fsp.readFile(cacert, 'utf8');
  const fp = crypto.createHash('sha256').update(new crypto.X509Certificate(pem).raw).digest('hex');
  assert.equal(srv.fingerprint, fp);
});

test('restic init through the server creates the restic layout', async () => {
  const r = await restic(['init'], { repo: restUrl(srv.port, 'admin', REPO_PW), password: REPO_PW, cacert });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /created restic repository/);
  assert.equal(readdirSync(path.join(repoDir, 'keys')).length, 1);
  assert.equal(readdirSync(path.join(repoDir, 'data')).length, 256);
});

test('full user with its own key file: backup tree and stdin, snapshots, restore, forget --prune, check --read-data', async () => {
  const fpw = await writeSecret(path.join(dir, 'carol.pw'), CAROL_PW);
  const add = await dmctl(['server', 'users', 'add', 'carol', '--role', 'full', '--password-file', fpw, '--json', ...admin]);
  assert.equal(add.code, 0, add.stderr);
  const info = JSON.parse(add.stdout) as { name: string; role: string; keyId?: string };
  assert.equal(info.role, 'full');
  assert.match(info.keyId ?? '', /^[0-9a-f]{64}$/);
  assert.ok(readdirSync(path.join(repoDir, 'keys')).includes(info.keyId!), 'key file written into the repository');

  const o = { repo: restUrl(srv.port, 'carol', CAROL_PW), password: CAROL_PW, cacert };
  const src = path.join(dir, 'src');
  await fsp.mkdir(path.join(src, 'sub'), { recursive: true });
  const big = crypto.randomBytes(5 * 1024 * 1024 + 123);
  await fsp.writeFile(path.join(src, 'big.bin'), big);
  await fsp.writeFile(path.join(src, 'sub', 'small.txt'), 'hello server\n');
  await fsp.writeFile(path.join(src, 'empty'), '');
  let r = await restic(['backup', src], o);
  assert.equal(r.code, 0, r.stderr);
  await fsp.writeFile(path.join(src, 'sub', 'small.txt'), 'changed\n');
  r = await restic(['backup', src], o);
  assert.equal(r.code, 0, r.stderr);
  const stdinData = crypto.randomBytes(300_000);
  r = await restic(['backup', '--stdin', '--stdin-filename', 'dump.sql'], { ...o, input: stdinData });
  assert.equal(r.code, 0, r.stderr);

  r = await restic(['snapshots', '--json'], o);
  assert.equal(r.code, 0, r.stderr);
  const snaps = JSON.parse(r.stdout) as { id: string; paths: string[] }[];
  assert.equal(snaps.length, 3);

  const target = path.join(dir, 'restore');
  r = await restic(['restore', 'latest', '--path', src, '--target', target], o);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await fsp.readFile(path.join(target, src, 'big.bin')), big);
  assert.equal(await fsp.readFile(path.join(target, src, 'sub', 'small.txt'), 'utf8'), 'changed\n');
  assert.equal((await fsp.stat(path.join(target, src, 'empty'))).size, 0);
  r = await restic(['dump', 'latest', '/dump.sql', '--path', '/dump.sql'], o);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha256(r.stdoutBytes!), sha256(stdinData));

  r = await restic(['forget', '--keep-last', '1', '--prune'], o);
  assert.equal(r.code, 0, r.stderr);
  r = await restic(['snapshots', '--json'], o);
  assert.equal((JSON.parse(r.stdout) as unknown[]).length, 2, 'one snapshot per path group kept');
  r = await restic(['check', '--read-data'], o);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /no errors were found/);
});

test('append user: backup works, forget and prune are refused, data stays', async () => {
  const fpw = await writeSecret(path.join(dir, 'bob.pw'), BOB_PW);
  const add = await dmctl(['server', 'users', 'add', 'bob', '--role', 'append', '--password-file', fpw, ...admin]);
  assert.equal(add.code, 0, add.stderr);
  const o = { repo: restUrl(srv.port, 'bob', BOB_PW), password: BOB_PW, cacert };
  let r = await restic(['backup', '--stdin', '--stdin-filename', 'bob.txt'], { ...o, input: 'bob was here\n' });
  assert.equal(r.code, 0, r.stderr);
  r = await restic(['backup', '--stdin', '--stdin-filename', 'bob.txt'], { ...o, input: 'bob was here again\n' });
  assert.equal(r.code, 0, r.stderr);
  const before = (JSON.parse((await restic(['snapshots', '--json'], o)).stdout) as { id: string }[]).map((s) => s.id).sort();
  const packsBefore = readdirSync(path.join(repoDir, 'data')).flatMap((d) => readdirSync(path.join(repoDir, 'data', d))).sort();
  // Two bob.txt snapshots: keep-last 1 must delete one. (restic retries the refused DELETE with back-off for
  // ~45 s before giving up.)
  r = await restic(['forget', '--keep-last', '1', '--prune'], o);
  assert.match(r.stdout, /remove 1 snapshots/);
  assert.notEqual(r.code, 0, 'forget --prune must fail for an append user');
  const after = (JSON.parse((await restic(['snapshots', '--json'], o)).stdout) as { id: string }[]).map((s) => s.id).sort();
  assert.deepEqual(after, before);
  const packsAfter = readdirSync(path.join(repoDir, 'data')).flatMap((d) => readdirSync(path.join(repoDir, 'data', d))).sort();
  assert.deepEqual(packsAfter, packsBefore);
  // its locks were removed again (append users may delete locks)
  assert.deepEqual(readdirSync(path.join(repoDir, 'locks')), []);
});

test('removing a user revokes its login and its key file', async () => {
  const list = await dmctl(['server', 'users', 'list', '--json', ...admin]);
  assert.equal(list.code, 0, list.stderr);
  const bob = (JSON.parse(list.stdout) as { name: string; keyId?: string }[]).find((u) => u.name === 'bob')!;
  assert.ok(bob.keyId);
  const rm = await dmctl(['server', 'users', 'remove', 'bob', ...admin]);
  assert.equal(rm.code, 0, rm.stderr);
  assert.ok(!readdirSync(path.join(repoDir, 'keys')).includes(bob.keyId!));
  const r = await restic(['snapshots'], { repo: restUrl(srv.port, 'bob', BOB_PW), password: BOB_PW, cacert });
  assert.notEqual(r.code, 0);
  // the repository password still opens it through another login
  const ok = await restic(['snapshots'], { repo: restUrl(srv.port, 'carol', CAROL_PW), password: REPO_PW, cacert });
  assert.equal(ok.code, 0, ok.stderr);
});

test('server status reports version, repository id and users', async () => {
  const st = await dmctl(['server', 'status', '--json', '--server', `https://127.0.0.1:${srv.port}/`, '--server-cert-fingerprint', srv.fingerprint!, '--user', 'admin', '--password-file', path.join(dir, 'repo.pw')]);
  assert.equal(st.code, 0, st.stderr);
  const s = JSON.parse(st.stdout) as { healthy: boolean; ready: boolean; repositoryId?: string; users: { name: string }[]; counters: { requests: number } };
  assert.equal(s.healthy && s.ready, true);
  const cfg = await restic(['cat', 'config'], { repo: restUrl(srv.port, 'carol', CAROL_PW), password: CAROL_PW, cacert });
  assert.equal(s.repositoryId, (JSON.parse(cfg.stdout) as { id: string }).id);
  assert.deepEqual(s.users.map((u) => u.name).sort(), ['admin', 'carol']);
  assert.ok(s.counters.requests > 10);
  // stdout of the server: one JSON line per request
  const lines = srv.stdout().trim().split('\n').map((l) => JSON.parse(l) as { msg: string; method?: string });
  assert.ok(lines.filter((l) => l.msg === 'request' && l.method === 'POST').length > 5);
  assert.ok(!srv.stdout().includes(CAROL_PW) && !srv.stdout().includes(REPO_PW), 'no secrets in logs');
});

function sha256(b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}
