// dmctl's own REST client against dmctl's server: `repo connect --server URL --user U --password-file F
// --server-cert-fingerprint HEX` makes every later repository command go through the server (no --repo,
// no cloud credentials), pinned to the certificate; a wrong fingerprint is refused before any request.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { dmctl, startServerProcess, tmpDir, writeSecret, type ServerProcess } from '../support/server-helpers.js';

const dir = tmpDir('server-connect');
const repoDir = path.join(dir, 'repo');
const usersFile = path.join(dir, 'users.json');
const REPO_PW = 'repo-' + crypto.randomBytes(6).toString('hex');
const ALICE_PW = 'alice-' + crypto.randomBytes(6).toString('hex');
let srv: ServerProcess;
let admin: string[];
let env: NodeJS.ProcessEnv;

before(async () => {
  const repoPwFile = await writeSecret(path.join(dir, 'repo.pw'), REPO_PW);
  // the repository exists before the server serves it
  const init = await dmctl(['repo', 'init', '-r', repoDir, '--password-file', repoPwFile]);
  assert.equal(init.code, 0, init.stderr);
  const add = await dmctl(['server', 'users', 'add', 'admin', '--role', 'full', '--password-file', repoPwFile, '--users-file', usersFile]);
  assert.equal(add.code, 0, add.stderr);
  srv = await startServerProcess(['--repo', repoDir, '--tls-generate-cert', '--tls-out-dir', path.join(dir, 'tls'), '--users-file', usersFile, '--password-file', repoPwFile], dir);
  admin = ['--server', `https://127.0.0.1:${srv.port}/`, '--server-cert-fingerprint', srv.fingerprint!, '--admin-user', 'admin', '--admin-password-file', repoPwFile];
  // an isolated home: the connection file must be the only source of the repository
  env = { HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'config'), DM_REPOSITORY: '', DM_PASSWORD: '', DM_PASSWORD_FILE: '', RESTIC_REPOSITORY: '', RESTIC_PASSWORD: '', NO_COLOR: '1' };
});

after(async () => {
  await srv?.stop();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('repo connect --server: backup, snapshots and restore go through the server, pinned to its certificate', async () => {
  const alicePw = await writeSecret(path.join(dir, 'alice.pw'), ALICE_PW);
  const add = await dmctl(['server', 'users', 'add', 'alice', '--role', 'append', '--password-file', alicePw, ...admin]);
  assert.equal(add.code, 0, add.stderr);

  // a wrong fingerprint is refused
  const bad = await dmctl(['repo', 'connect', '--server', `https://127.0.0.1:${srv.port}/`, '--user', 'alice', '--password-file', alicePw, '--server-cert-fingerprint', '00'.repeat(32)], env);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /fingerprint/i);

  const conn = await dmctl(['repo', 'connect', '--server', `https://127.0.0.1:${srv.port}/`, '--user', 'alice', '--password-file', alicePw, '--server-cert-fingerprint', srv.fingerprint!, '--json'], env);
  assert.equal(conn.code, 0, conn.stderr);
  // the connection file holds no repository password in clear and no cloud credentials
  const cf = JSON.parse(conn.stdout) as { configFile: string };
  const text = await fsp.readFile(cf.configFile, 'utf8');
  assert.ok(!text.includes(REPO_PW));

  const src = path.join(dir, 'src');
  await fsp.mkdir(src, { recursive: true });
  const data = crypto.randomBytes(3 * 1024 * 1024 + 7);
  await fsp.writeFile(path.join(src, 'blob.bin'), data);
  const b = await dmctl(['backup', src, '--json'], env);
  assert.equal(b.code, 0, b.stderr);
  const snaps = await dmctl(['snapshots', '--json'], env);
  assert.equal(snaps.code, 0, snaps.stderr);
  assert.equal((JSON.parse(snaps.stdout) as unknown[]).length, 1);
  const target = path.join(dir, 'restored');
  const r = await dmctl(['restore', 'latest', '--target', target, '--verify'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.ok((await fsp.readFile(path.join(target, src, 'blob.bin'))).equals(data));
  // the data really went through the server into its repository
  const packs = (await fsp.readdir(path.join(repoDir, 'data'), { recursive: true })).filter((n) => /[0-9a-f]{64}$/.test(String(n)));
  assert.ok(packs.length > 0);
});
