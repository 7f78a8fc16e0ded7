// The real CLI as users and Kanister run it: `node bin/run.js` after the build.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = join(root, 'bin/run.js');
let home: string;

before(async () => {
  home = await mkdtemp(join(tmpdir(), 'dmctl-cli-basics-'));
});
after(async () => {
  await rm(home, { recursive: true, force: true });
});

function dmctl(args: string[], env: NodeJS.ProcessEnv = {}) {
  const base: NodeJS.ProcessEnv = { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, 'config'), XDG_CACHE_HOME: join(home, 'cache') };
  for (const k of ['NO_COLOR', 'FORCE_COLOR', 'DM_REPOSITORY', 'DM_PASSWORD', 'DM_PASSWORD_FILE', 'RESTIC_REPOSITORY', 'RESTIC_PASSWORD', 'DM_LOG_LEVEL']) delete base[k];
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, env: { ...base, ...env }, encoding: 'buffer', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString('utf8'), out: r.stdout.toString('utf8') };
}

test('output --help: usage, arguments and examples, exit 0', () => {
  const r = dmctl(['output', '--help']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.out, /USAGE\n\s+\$ dmctl output KEY VALUE/);
  assert.match(r.out, /ARGUMENTS/);
  assert.match(r.out, /EXAMPLES/);
  assert.match(r.out, /###Phase-output###/);
});

test('unknown flag: exit 2, exactly one line on stderr, nothing on stdout', () => {
  const r = dmctl(['output', '--no-such-flag', 'k', 'v']);
  assert.equal(r.code, 2);
  assert.equal(r.out, '');
  assert.equal(r.stderr.split('\n').length, 2, JSON.stringify(r.stderr)); // one line + final newline
  assert.match(r.stderr, /^dmctl: Nonexistent flag: --no-such-flag .*\n$/);
});

test('unknown command: exit 2, one line and a hint naming the closest command', () => {
  const r = dmctl(['repo', 'inti']);
  assert.equal(r.code, 2);
  assert.equal(r.out, '');
  assert.equal(r.stderr, 'dmctl: unknown command "repo inti"\nhint: did you mean `dmctl repo init`? See `dmctl --help`\n');
  const far = dmctl(['frobnicate', '--fast']);
  assert.equal(far.code, 2);
  assert.equal(far.stderr, 'dmctl: unknown command "frobnicate"\nhint: see `dmctl --help` for the commands\n');
});

test('flags before the command, as restic users type them: dmctl -r REPO snapshots', async () => {
  const repo = join(home, 'flags-first-repo');
  const pw = join(home, 'flags-first.pw');
  await writeFile(pw, 'flags first\n');
  const init = dmctl(['repo', 'init', '--repo', repo, '--password-file', pw, '--json']);
  assert.equal(init.code, 0, init.stderr);
  const id = (JSON.parse(init.out) as { id: string }).id;
  const snaps = dmctl(['-r', repo, '--password-file', pw, 'snapshots', '--json']);
  assert.equal(snaps.code, 0, snaps.stderr);
  assert.deepEqual(JSON.parse(snaps.out), []);
  const status = dmctl(['--password-file', pw, '-r', repo, '--json', 'repo', 'status']);
  assert.equal(status.code, 0, status.stderr);
  assert.equal((JSON.parse(status.out) as { id: string }).id, id);
  const none = dmctl(['-r', repo, '--password-file', pw]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /^dmctl: no known command among the arguments\nhint: /);
});

test('datamover contract: an unknown mode or protocol is one line with a hint and a non-zero exit', async () => {
  const creds = join(home, 'client-creds');
  await mkdir(creds, { recursive: true });
  await writeFile(join(creds, 'alice'), 'alice@dmctl:pw\n');
  const mode = dmctl(['datamover', 'backup_everything', '/data'], { PROTOCOLS: 'restic-rest:8000' });
  assert.equal(mode.code, 2);
  assert.match(mode.stderr, /^dmctl: unknown datamover mode "backup_everything"\nhint: the datamover contract's modes are backup_files, backup_stream, restore_files, restore_stream\n$/);
  const env = { SERVER_URL: 'https://dm.ns.svc:8000/', SERVER_DATA: JSON.stringify({ fingerprint: 'ab'.repeat(32) }) };
  const proto = dmctl(['datamover', 'backup_files', home, '--credentials-dir', creds], { ...env, PROTOCOLS: 'kopia-v0-17-0:51515' });
  assert.equal(proto.code, 2);
  assert.match(proto.stderr, /^dmctl: none of the protocols in PROTOCOLS is supported: kopia-v0-17-0\nhint: this datamover speaks restic-rest/);
  const none = dmctl(['datamover', 'restore_stream', join(home, 'pipe'), '--credentials-dir', creds], env);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /^dmctl: PROTOCOLS is not set\n/);
  const noPin = dmctl(['datamover', 'backup_stream', join(home, 'pipe'), '--credentials-dir', creds], { PROTOCOLS: 'restic-rest:8000', SERVER_URL: env.SERVER_URL });
  assert.equal(noPin.code, 2);
  assert.match(noPin.stderr, /^dmctl: SERVER_DATA has no certificate fingerprint\n/);
});

test('missing argument: exit 2, one line naming it', () => {
  const r = dmctl(['output', 'onlykey']);
  assert.equal(r.code, 2);
  assert.equal(r.stderr, 'dmctl: missing required argument: VALUE (see `dmctl output --help`)\n');
});

test('output KEY VALUE: the exact bytes kando prints', () => {
  const r = dmctl(['output', 'backupInfo', '{"id":"a1"}\n<é>&']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const expected = Buffer.concat([
    Buffer.from('###Phase-output###: {"key":"backupInfo","value":"{\\"id\\":\\"a1\\"}\\n\\u003c', 'latin1'),
    Buffer.from([0xc3, 0xa9]),
    Buffer.from('\\u003e\\u0026"}\n', 'latin1'),
  ]);
  assert.deepEqual(r.stdout, expected);
});

test('--json errors: one JSON object on stdout with error, message, hint, exitCode', () => {
  const r = dmctl(['output', 'bad-key', 'v', '--json']);
  assert.equal(r.code, 2);
  assert.equal(r.stderr, '');
  const obj = JSON.parse(r.out);
  assert.deepEqual(Object.keys(obj).sort(), ['error', 'exitCode', 'hint', 'message']);
  assert.equal(obj.error, 'usage');
  assert.equal(obj.exitCode, 2);
  assert.match(obj.message, /bad-key/);
  const parse = dmctl(['output', '--json', '--bogus']);
  assert.equal(parse.code, 2);
  assert.deepEqual(Object.keys(JSON.parse(parse.out)).sort(), ['error', 'exitCode', 'message']);
});

test('--json success of `output` and `version`', () => {
  const r = dmctl(['output', 'k', 'v', '--json']);
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.out), { key: 'k', value: 'v' });
  const v = dmctl(['version', '--json']);
  assert.equal(v.code, 0);
  const info = JSON.parse(v.out);
  assert.equal(info.name, 'dmctl');
  assert.match(info.version, /^\d+\.\d+\.\d+/);
  assert.equal(info.node, process.version);
});

test('colours: red error with FORCE_COLOR, none with NO_COLOR or off a terminal', () => {
  const forced = dmctl(['output', 'bad-key', 'v'], { FORCE_COLOR: '1' });
  assert.match(forced.stderr, /\u001b\[31mdmctl: invalid phase output key/);
  const no = dmctl(['output', 'bad-key', 'v'], { FORCE_COLOR: '1', NO_COLOR: '1' });
  assert.doesNotMatch(no.stderr, /\u001b\[/);
  assert.match(no.stderr, /^dmctl: invalid phase output key "bad-key".*\nhint: /);
  const plain = dmctl(['output', 'bad-key', 'v']);
  assert.doesNotMatch(plain.stderr, /\u001b\[/);
});

test('autocomplete plugin: `dmctl autocomplete script bash` prints a bash setup', () => {
  const r = dmctl(['autocomplete', 'script', 'bash']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.out, /DMCTL_AC_BASH_SETUP_PATH/);
});

test('man pages: generated from the commands, readable by man', async () => {
  const out = join(home, 'man');
  const g = spawnSync(process.execPath, [join(root, 'scripts/gen-man.mjs'), '--out', out], { cwd: root, encoding: 'utf8' });
  assert.equal(g.status, 0, g.stderr);
  const pages = await readdir(join(out, 'man1'));
  assert.ok(pages.includes('dmctl.1'));
  assert.ok(pages.includes('dmctl-output.1'));
  const page = await readFile(join(out, 'man1', 'dmctl-output.1'), 'utf8');
  for (const section of ['.SH NAME', '.SH SYNOPSIS', '.SH DESCRIPTION', '.SH OPTIONS', '.SH EXAMPLES', '.SH "EXIT STATUS"', '.SH ENVIRONMENT']) {
    assert.ok(page.includes(section), section);
  }
  assert.match(page, /\\-\\-log\\-level/);
  assert.match(page, /^\.B 130$/m);
  if (!existsSync('/usr/bin/man')) assert.fail('man (man-db) is required for this test');
  const m = spawnSync('man', ['-P', 'cat', 'dmctl-output'], { env: { ...process.env, MANPATH: out, MANWIDTH: '80' }, encoding: 'utf8' });
  assert.equal(m.status, 0, m.stderr);
  assert.match(m.stdout, /dmctl-output - Print a Kanister phase output/);
  assert.match(m.stdout, /EXIT STATUS[\s\S]*130\s+Interrupted by SIGINT\/SIGTERM/);
});

test('backup --dry-run: writes nothing, and predicts what the real backup then adds', async () => {
  const repo = join(home, 'dry-repo');
  const src = join(home, 'dry-src');
  await mkdir(join(src, 'sub'), { recursive: true });
  for (let i = 0; i < 40; i++) await writeFile(join(src, i % 2 ? 'sub' : '', `f${i}`), `file ${i % 25}\n`.repeat(1000 + i));
  const env = { DM_PASSWORD: 'dry-pw' };
  assert.equal(dmctl(['repo', 'init', '-r', repo], env).code, 0);
  const listRepo = async () => {
    const out: string[] = [];
    for (const d of ['snapshots', 'index', 'locks']) out.push(...(await readdir(join(repo, d))).map((f) => `${d}/${f}`));
    for (const d of await readdir(join(repo, 'data'))) out.push(...(await readdir(join(repo, 'data', d))).map((f) => `data/${f}`));
    return out;
  };
  const dry = dmctl(['backup', '-r', repo, src, '--dry-run', '--json'], env);
  assert.equal(dry.code, 0, dry.stderr);
  const predicted = JSON.parse(dry.out);
  assert.equal(predicted.snapshotId, '');
  assert.deepEqual(await listRepo(), [], 'a dry run leaves no snapshot, index, pack or lock');
  const human = dmctl(['backup', '-r', repo, src, '--dry-run'], env);
  assert.match(human.out, /dry run, nothing was written/);
  assert.doesNotMatch(human.out, /snapshot \w+ saved/);

  const real = dmctl(['backup', '-r', repo, src, '--json'], env);
  assert.equal(real.code, 0, real.stderr);
  const done = JSON.parse(real.out);
  assert.match(done.snapshotId, /^[0-9a-f]{64}$/);
  for (const k of ['filesNew', 'dataBlobs', 'treeBlobs', 'dataAdded', 'totalFilesProcessed', 'totalBytesProcessed']) assert.equal(predicted[k], done[k], `${k}: the dry run said ${predicted[k]}, the backup did ${done[k]}`);
  assert.ok((await listRepo()).some((f) => f.startsWith('snapshots/')));
});

test('a --kube flag without --kube is refused, not ignored: exit 2, one line naming it', () => {
  const r = dmctl(['restore', 'latest', '-r', join(home, 'nowhere'), '--target', join(home, 't'), '--pvc', 'data'], { DM_PASSWORD: 'x' });
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split('\n')[0], 'dmctl: --pvc applies only with --kube');
  assert.equal(existsSync(join(home, 't')), false, 'nothing restored');
  const s = dmctl(['backup-stream', '--name', 'x', '-r', join(home, 'nowhere'), '--namespace', 'prod'], { DM_PASSWORD: 'x' });
  assert.equal(s.code, 2);
  assert.match(s.stderr, /--namespace applies only with --kube/);
});
