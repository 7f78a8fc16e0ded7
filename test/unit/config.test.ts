import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DmctlError, EXIT_CODES } from '../../src/core/errors.js';
import {
  ENVIRONMENT,
  SETTINGS_RESOLUTION,
  parseDuration,
  passwordFromFileBytes,
  requireRepository,
  resolveSettings,
  type RepoFlagValues,
} from '../../src/config/settings.js';
import {
  defaultConfigFile,
  loadConnection,
  passwordFileFor,
  removeConnection,
  saveConnection,
} from '../../src/config/connection.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dmctl-config-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function fileWith(content: string | Buffer): Promise<string> {
  const p = join(dir, `f${n++}`);
  await writeFile(p, content);
  return p;
}

/** A fresh, empty XDG config home so the user's real connection file never leaks into a test. */
async function isolatedEnv(extra: NodeJS.ProcessEnv = {}): Promise<NodeJS.ProcessEnv> {
  const home = join(dir, `xdg${n++}`);
  await mkdir(home);
  return { XDG_CONFIG_HOME: home, ...extra };
}

const resolve = (flags: RepoFlagValues, env: NodeJS.ProcessEnv, interactive = false, prompt?: (m: string) => Promise<string>) =>
  resolveSettings(flags, { env, interactive, ...(prompt ? { prompt } : {}) });

test('repository: --repo > DM_REPOSITORY > connection file > RESTIC_REPOSITORY', async () => {
  const env = await isolatedEnv({ DM_REPOSITORY: '/dm', RESTIC_REPOSITORY: '/restic' });
  await saveConnection(defaultConfigFile(env), { repository: '/conn' });
  let s = await resolve({ repo: '/flag' }, env);
  assert.deepEqual([s.repository, s.repositorySource], ['/flag', '--repo']);
  s = await resolve({}, env);
  assert.deepEqual([s.repository, s.repositorySource], ['/dm', 'DM_REPOSITORY']);
  delete env.DM_REPOSITORY;
  s = await resolve({}, env);
  assert.deepEqual([s.repository, s.repositorySource], ['/conn', 'connection file']);
  await removeConnection(defaultConfigFile(env));
  s = await resolve({}, env);
  assert.deepEqual([s.repository, s.repositorySource], ['/restic', 'RESTIC_REPOSITORY']);
  delete env.RESTIC_REPOSITORY;
  s = await resolve({}, env);
  assert.equal(s.repository, undefined);
  assert.throws(() => requireRepository(s), (e: unknown) => e instanceof DmctlError && e.exitCode === EXIT_CODES.USAGE);
});

test('repository: empty variables count as unset; RESTIC_REPOSITORY_FILE is read and trimmed', async () => {
  const env = await isolatedEnv({ DM_REPOSITORY: '', RESTIC_REPOSITORY_FILE: await fileWith(' s3:host/bucket/path \n') });
  const s = await resolve({ repo: '' }, env);
  assert.deepEqual([s.repository, s.repositorySource], ['s3:host/bucket/path', 'RESTIC_REPOSITORY_FILE']);
  env.RESTIC_REPOSITORY = '/x';
  await assert.rejects(resolve({}, env), (e: unknown) => e instanceof DmctlError && /both set/.test(e.message));
});

test('password: each source in order, the next one used when the one above is absent', async () => {
  const env = await isolatedEnv({
    DM_PASSWORD_FILE: await fileWith('dm-file\n'),
    DM_PASSWORD: 'dm-env',
    RESTIC_PASSWORD_FILE: await fileWith('restic-file\n'),
    RESTIC_PASSWORD: 'restic-env',
    RESTIC_PASSWORD_COMMAND: "printf ' restic-cmd \\n'",
  });
  const configFile = defaultConfigFile(env);
  await saveConnection(configFile, { repository: '/repo', password: Buffer.from('conn-pw') });
  const flagFile = await fileWith('flag-file\n');
  const prompt = async () => 'prompted';

  const expectations: Array<[string, string, () => void]> = [
    ['flag-file', '--password-file', () => {}],
    ['dm-file', 'DM_PASSWORD_FILE', () => {}],
    ['dm-env', 'DM_PASSWORD', () => delete env.DM_PASSWORD_FILE],
    ['conn-pw', 'connection file', () => delete env.DM_PASSWORD],
    ['restic-file', 'RESTIC_PASSWORD_FILE', () => {}],
    ['restic-env', 'RESTIC_PASSWORD', () => delete env.RESTIC_PASSWORD_FILE],
    ['restic-cmd', 'RESTIC_PASSWORD_COMMAND', () => delete env.RESTIC_PASSWORD],
    ['prompted', 'prompt', () => delete env.RESTIC_PASSWORD_COMMAND],
  ];
  let flags: RepoFlagValues = { 'password-file': flagFile };
  for (const [i, [want, source, drop]] of expectations.entries()) {
    drop();
    if (i === 1) flags = {};
    if (i === 4) await removeConnection(configFile);
    const s = await resolve(flags, env, true, prompt);
    assert.equal(s.passwordSource, source);
    assert.equal((await s.password()).toString(), want, `source ${source}`);
  }
});

test('password: the connection file lends its password only to its own repository', async () => {
  const env = await isolatedEnv({ RESTIC_PASSWORD: 'restic-env' });
  await saveConnection(defaultConfigFile(env), {
    repository: '/repo-a',
    password: Buffer.from('pw-a'),
    options: { cacert: '/ca.pem', connections: 3 },
  });
  const a = await resolve({}, env);
  assert.equal(a.connectionApplies, true);
  assert.equal((await a.password()).toString(), 'pw-a');
  assert.equal(a.cacert, '/ca.pem');
  assert.equal(a.connections, 3);
  const b = await resolve({ repo: '/repo-b' }, env);
  assert.equal(b.connectionApplies, false);
  assert.equal((await b.password()).toString(), 'restic-env');
  assert.equal(b.cacert, undefined);
  assert.equal(b.connections, undefined);
  // Flags beat the connection's options.
  const c = await resolve({ cacert: '/other.pem', connections: 9 }, env);
  assert.equal(c.cacert, '/other.pem');
  assert.equal(c.connections, 9);
});

test('password: none given and no terminal ⇒ usage error with a hint listing the sources', async () => {
  const env = await isolatedEnv({ DM_REPOSITORY: '/r' });
  const s = await resolve({}, env, false);
  assert.equal(s.passwordSource, undefined);
  await assert.rejects(s.password(), (e: unknown) => {
    assert.ok(e instanceof DmctlError);
    assert.equal(e.message, 'no password given');
    assert.equal(e.exitCode, EXIT_CODES.USAGE);
    for (const src of ['--password-file', 'DM_PASSWORD_FILE', 'DM_PASSWORD', 'RESTIC_PASSWORD']) assert.ok(e.hint!.includes(src), src);
    return true;
  });
});

test('password: prompt asks twice on confirm and rejects a mismatch; answers are not in the error', async () => {
  const env = await isolatedEnv();
  const answers = ['first-secret', 'second-secret'];
  const s = await resolve({}, env, true, async () => answers.shift()!);
  await assert.rejects(s.password({ confirm: true }), (e: unknown) => {
    assert.ok(e instanceof DmctlError);
    assert.match(e.message, /do not match/);
    assert.ok(!JSON.stringify(e.toJSON()).includes('secret'));
    return true;
  });
  const asked: string[] = [];
  const t = await resolve({ repo: '/r' }, env, true, async (m) => (asked.push(m), 'same'));
  assert.equal((await t.password({ confirm: true })).toString(), 'same');
  assert.equal(asked.length, 2);
  assert.match(asked[0]!, /\/r/);
});

test('password: each call returns a fresh copy (callers may wipe theirs)', async () => {
  const env = await isolatedEnv({ DM_PASSWORD: 'keep-me' });
  const s = await resolve({}, env);
  const first = await s.password();
  first.fill(0);
  assert.equal((await s.password()).toString(), 'keep-me');
});

test('password file: errors name the file, never its content; empty is refused', async () => {
  const env = await isolatedEnv();
  const missing = join(dir, 'no-such-file');
  await assert.rejects((await resolve({ 'password-file': missing }, env)).password(), (e: unknown) => {
    assert.ok(e instanceof DmctlError && e.exitCode === EXIT_CODES.USAGE);
    assert.ok(e.message.includes(missing) && e.message.includes('does not exist'));
    return true;
  });
  const empty = await fileWith(' \n\n');
  await assert.rejects((await resolve({ 'password-file': empty }, env)).password(), /empty password/);
  const badCmd = await resolve({}, { ...env, RESTIC_PASSWORD_COMMAND: 'echo topsecret; exit 3' });
  await assert.rejects(badCmd.password(), (e: unknown) => {
    assert.ok(e instanceof DmctlError && /exit status 3/.test(e.message));
    assert.ok(!e.message.includes('topsecret') && !(e.hint ?? '').includes('topsecret'));
    return true;
  });
});

test('password file bytes: BOM, UTF-16, surrounding white space (as restic), inner bytes kept', () => {
  const pw = (b: Buffer | string) => passwordFromFileBytes(Buffer.isBuffer(b) ? b : Buffer.from(b, 'utf8'));
  assert.equal(pw('secret\n').toString(), 'secret');
  assert.equal(pw('secret\r\n').toString(), 'secret');
  assert.equal(pw('secret').toString(), 'secret');
  assert.equal(pw('  two words \t\n\n').toString(), 'two words');
  assert.equal(pw('line1\nline2\n').toString(), 'line1\nline2');
  assert.equal(pw('\u00a0nbsp\u0085\u3000').toString(), 'nbsp');
  assert.equal(pw(Buffer.from([0xef, 0xbb, 0xbf, 0x61, 0x62, 0x0a])).toString(), 'ab');
  assert.equal(pw(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('pässword\r\n', 'utf16le')])).toString(), 'pässword');
  const be = Buffer.from('xy\n', 'utf16le').swap16();
  assert.equal(pw(Buffer.concat([Buffer.from([0xfe, 0xff]), be])).toString(), 'xy');
  assert.deepEqual(pw(Buffer.from([0x20, 0xff, 0xfe, 0x80, 0x0a])), Buffer.from([0xff, 0xfe, 0x80]));
  assert.equal(pw('é\n').toString(), 'é');
});

test('password file: restic 0.14 accepts the password dmctl reads from the same file', async (t) => {
  if (!existsSync('/usr/bin/restic')) assert.fail('restic is required for this test (/usr/bin/restic)');
  const file = await fileWith('\u00a0 sp ace\tpw \r\n\n');
  const repo = join(dir, 'restic-repo');
  const env = { ...process.env, RESTIC_CACHE_DIR: join(dir, 'restic-cache') };
  execFileSync('restic', ['init', '-q', '-r', repo, '--password-file', file], { env, stdio: 'pipe' });
  const ours = passwordFromFileBytes(await readFile(file)).toString('utf8');
  assert.equal(ours, 'sp ace\tpw');
  execFileSync('restic', ['-r', repo, 'cat', 'config'], { env: { ...env, RESTIC_PASSWORD: ours }, stdio: 'pipe' });
  // And a password that kept the newline would have been wrong.
  assert.throws(() =>
    execFileSync('restic', ['-r', repo, 'cat', 'config'], { env: { ...env, RESTIC_PASSWORD: '\u00a0 sp ace\tpw ' }, stdio: 'pipe' }),
  );
  t.diagnostic('restic agrees with passwordFromFileBytes');
});

test('connection file: 0600 in a 0700 directory, password persisted next to it, round trip', async () => {
  const configFile = join(dir, 'cfg-a', 'sub', 'connection.json');
  const conn = await saveConnection(configFile, {
    repository: 's3:host/b',
    password: Buffer.from('pw'),
    options: { serverCertFingerprint: 'ab12', profile: '{"Location":{}}', insecureTls: true },
  });
  assert.equal(conn.passwordFile, join(dir, 'cfg-a', 'sub', 'connection.password'));
  assert.equal(passwordFileFor(configFile), conn.passwordFile);
  assert.equal((await stat(configFile)).mode & 0o777, 0o600);
  assert.equal((await stat(conn.passwordFile!)).mode & 0o777, 0o600);
  assert.equal((await stat(join(dir, 'cfg-a', 'sub'))).mode & 0o777, 0o700);
  assert.equal(await readFile(conn.passwordFile!, 'utf8'), 'pw');
  assert.ok(!(await readFile(configFile, 'utf8')).includes('"pw"'), 'the password is not inside the JSON');
  assert.deepEqual(await loadConnection(configFile), conn);

  // --no-persist-password: the old password file goes away.
  const again = await saveConnection(configFile, { repository: 's3:host/b', password: Buffer.from('pw'), persistPassword: false });
  assert.equal(again.passwordFile, undefined);
  assert.equal(existsSync(passwordFileFor(configFile)), false);

  // A referenced password file is stored as a path and never deleted by disconnect.
  const own = await fileWith('mine\n');
  const ref = await saveConnection(configFile, { repository: '/r', passwordFile: own });
  assert.equal(ref.passwordFile, own);
  const s = await resolveSettings({ 'config-file': configFile }, { env: {}, interactive: false });
  assert.equal((await s.password()).toString(), 'mine');
  assert.deepEqual(await removeConnection(configFile), [configFile]);
  assert.equal(existsSync(own), true);
  assert.equal(await loadConnection(configFile), undefined);
  assert.deepEqual(await removeConnection(configFile), []);
});

test('connection file: broken JSON is a usage error that does not echo the file', async () => {
  const configFile = await fileWith('{"repository": "/r", "options": {"profile": "SECRETKEY" ');
  await assert.rejects(loadConnection(configFile), (e: unknown) => {
    assert.ok(e instanceof DmctlError && e.exitCode === EXIT_CODES.USAGE);
    assert.ok(e.message.includes(configFile) && !e.message.includes('SECRETKEY'));
    return true;
  });
  await assert.rejects(loadConnection(await fileWith('{"options":{}}')), /names no repository/);
  await assert.rejects(loadConnection(await fileWith('{"repository":"/r","options":{"connections":0}}')), /connections/);
});

test('config file: --config-file > DM_CONFIG_FILE > XDG_CONFIG_HOME > ~/.config', async () => {
  assert.equal(defaultConfigFile({ XDG_CONFIG_HOME: '/xdg' }, '/home/u'), '/xdg/dmctl/connection.json');
  assert.equal(defaultConfigFile({}, '/home/u'), '/home/u/.config/dmctl/connection.json');
  assert.equal(defaultConfigFile({ XDG_CONFIG_HOME: 'relative' }, '/home/u'), '/home/u/.config/dmctl/connection.json');
  const env = await isolatedEnv({ DM_CONFIG_FILE: '/from/env.json' });
  assert.equal((await resolve({}, env)).configFile, '/from/env.json');
  assert.equal((await resolve({ 'config-file': '/from/flag.json' }, env)).configFile, '/from/flag.json');
  delete env.DM_CONFIG_FILE;
  assert.equal((await resolve({}, env)).configFile, join(env.XDG_CONFIG_HOME!, 'dmctl', 'connection.json'));
});

test('other options: log level, fingerprint, profile file, retry-lock', async () => {
  const env = await isolatedEnv({ DM_LOG_LEVEL: 'info' });
  const profileFile = await fileWith('{"Location":{"type":"s3Compliant"}}');
  const s = await resolve(
    { 'server-cert-fingerprint': 'AB:CD:EF', 'profile-file': profileFile, 'retry-lock': '1m30s', 'insecure-tls': true },
    env,
  );
  assert.equal(s.logLevel, 'info');
  assert.equal(s.serverCertFingerprint, 'abcdef');
  assert.equal(s.profile, '{"Location":{"type":"s3Compliant"}}');
  assert.equal(s.retryLockMs, 90_000);
  assert.equal(s.insecureTls, true);
  assert.equal((await resolve({ 'log-level': 'debug' }, env)).logLevel, 'debug');
  assert.equal((await resolve({}, await isolatedEnv())).logLevel, 'warn');
  await assert.rejects(resolve({ profile: '{}', 'profile-file': profileFile }, env), /mutually exclusive/);
  await assert.rejects(resolve({ 'retry-lock': '5 minutes' }, env), /invalid duration/);
});

test('parseDuration', () => {
  assert.equal(parseDuration('30s'), 30_000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('10'), 10_000);
  for (const bad of ['', 'm', '5x', '5m junk', '-1s']) assert.throws(() => parseDuration(bad), DmctlError, bad);
});

test('documented resolution order and environment list are complete', () => {
  assert.deepEqual(
    SETTINGS_RESOLUTION.repository.map((r) => r.source),
    ['--repo', 'DM_REPOSITORY', 'connection file', 'RESTIC_REPOSITORY', 'RESTIC_REPOSITORY_FILE'],
  );
  assert.deepEqual(
    SETTINGS_RESOLUTION.password.map((r) => r.source),
    ['--password-file', 'DM_PASSWORD_FILE', 'DM_PASSWORD', 'connection file', 'RESTIC_PASSWORD_FILE', 'RESTIC_PASSWORD', 'RESTIC_PASSWORD_COMMAND', 'prompt'],
  );
  const names = ENVIRONMENT.map((e) => e.name);
  for (const v of ['DM_REPOSITORY', 'DM_PASSWORD_FILE', 'DM_PASSWORD', 'RESTIC_REPOSITORY', 'RESTIC_PASSWORD', 'NO_COLOR']) assert.ok(names.includes(v), v);
});

test('user and group names: from /etc/passwd and /etc/group, "" when unknown, synchronous once loaded', async () => {
  const { lookupNames, resetAccountCache } = await import('../../src/config/users.js');
  const fs = await import('node:fs');
  resetAccountCache();
  const passwd = fs.readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':')).filter((f) => f.length > 3);
  const group = fs.readFileSync('/etc/group', 'utf8').split('\n').map((l) => l.split(':')).filter((f) => f.length > 3);
  const [u, g] = [passwd[0]!, group[0]!]; // first entries: the ones getpwuid/getgrgid would answer
  const first = lookupNames(Number(u[2]), Number(g[2]));
  assert.ok(first instanceof Promise, 'the first lookup loads the database');
  assert.deepEqual(await first, [u[0], g[0]]);
  const again = lookupNames(Number(u[2]), 4_000_000_000);
  assert.ok(Array.isArray(again), 'later lookups answer at once');
  assert.deepEqual(again, [u[0], '']);
});
