// `dmctl location push/pull/delete` end to end (the real CLI in a child process) on radosgw and
// azurite, with generated streams; memory of pushing a large stream stays flat.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promises as fsp, createReadStream, existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { openBackend } from '../../src/storage/open.js';
import { EXIT_CODES } from '../../src/core/errors.js';
import { startRadosgw, startAzurite, projectRoot, RadosgwServer, AzuriteServer } from '../support/servers.js';

// The command classes run through oclif (flags, --json, error handling, exit codes) without the
// generated oclif.manifest.json, which may lag behind new commands while others work in the tree.
// (oclif as the commands load it: the build's bundle of it when there is one)
const RUNNER = path.join(projectRoot, 'dist', `.location-test-runner-${process.pid}.mjs`); // resolves @oclif/core from the project
const OCLIF_BUNDLE = path.join(projectRoot, 'dist', 'vendor', 'oclif-core.js');
const OCLIF = existsSync(OCLIF_BUNDLE) ? pathToFileURL(OCLIF_BUNDLE).href : '@oclif/core';
await fsp.writeFile(RUNNER, `import { handle, flush } from ${JSON.stringify(OCLIF)};
const [topic, cmd, ...argv] = process.argv.slice(2);
const { default: C } = await import(${JSON.stringify(path.join(projectRoot, 'dist', 'src', 'commands'))} + '/' + topic + '/' + cmd + '.js');
try { await C.run(argv, ${JSON.stringify(projectRoot)}); await flush(); } catch (err) { await handle(err); }
`);
const RUN = RUNNER;
const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'dmctl-loc-'));
let rgw: RadosgwServer;
let azurite: AzuriteServer;

before(async () => {
  // memstore holds the objects in RAM: room for the 2 GB memory test stream
  [rgw, azurite] = await Promise.all([startRadosgw({ memstoreBytes: 6 * 1024 ** 3 }), startAzurite()]);
  const be = await openBackend(`s3:${rgw.endpoint}/loc/x`, { profile: { s3: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } } });
  await be.create();
  await be.close();
}, { timeout: 400_000 });

after(async () => {
  await Promise.allSettled([rgw?.stop(), azurite?.stop()]);
  await fsp.rm(tmp, { recursive: true, force: true });
  await fsp.rm(RUNNER, { force: true });
});

interface Result { code: number; stdout: Buffer; stderr: string }

/** Runs dmctl; `stdinCmd` is a shell pipeline whose output becomes stdin; `wrap` prefixes the command (e.g. /usr/bin/time). */
function dmctl(args: string[], opts: { stdinCmd?: string; stdinFile?: string; wrap?: string[] } = {}): Promise<Result> {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const cmd = [...(opts.wrap ?? []), process.execPath, RUN, ...args].map(q).join(' ');
  const line = opts.stdinCmd ? `${opts.stdinCmd} | ${cmd}` : opts.stdinFile ? `${cmd} < ${q(opts.stdinFile)}` : `${cmd} < /dev/null`;
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-o', 'pipefail', '-c', line], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err }));
  });
}

async function sha256File(p: string): Promise<string> {
  const h = crypto.createHash('sha256');
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return h.digest('hex');
}

const s3Profile = () => JSON.stringify({
  Location: { type: 's3Compliant', bucket: 'loc', endpoint: rgw.endpoint, prefix: 'kanister/pfx', region: '' },
  Credential: { Type: 'keyPair', KeyPair: { ID: rgw.accessKeyId, Secret: rgw.secretAccessKey }, Secret: null, KopiaServerSecret: null },
  SkipSSLVerify: false,
});
// Azure with a corev1 Secret credential (base64 data) and lowercase keys: Go matches keys case-insensitively.
const azureProfile = () => JSON.stringify({
  location: { type: 'azure', bucket: 'loccontainer', endpoint: azurite.endpoint, prefix: 'kanister' },
  credential: {
    type: 'secret',
    secret: { type: 'secrets.kanister.io/azure', data: { azure_storage_account_id: Buffer.from(azurite.accountName).toString('base64'), azure_storage_key: Buffer.from(azurite.accountKey).toString('base64') } },
  },
  skipSSLVerify: false,
});

for (const target of [{ name: 'radosgw (S3)', profile: s3Profile }, { name: 'azurite (Azure)', profile: azureProfile }]) {
  describe(`location push/pull/delete on ${target.name}`, () => {
    let profileFile: string;
    before(async () => {
      profileFile = path.join(tmp, `profile-${crypto.randomBytes(3).toString('hex')}.json`);
      await fsp.writeFile(profileFile, target.profile(), { mode: 0o600 });
    });

    it('pushes a file and a piped stream, pulls them back byte for byte', async () => {
      const src = path.join(tmp, 'src.bin');
      await fsp.writeFile(src, crypto.randomBytes(21 * 1024 * 1024 + 7)); // > 2 parts: multipart path
      let r = await dmctl(['location', 'push', src, '--path', 'rt/file.bin', '--profile-file', profileFile]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.length, 0, 'push prints nothing, like kando');
      const back = path.join(tmp, 'back.bin');
      r = await dmctl(['location', 'pull', back, '--path', 'rt/file.bin', '--profile', target.profile()]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await sha256File(back), await sha256File(src));

      // generated on the fly (not a file), through stdin and stdout
      r = await dmctl(['location', 'push', '-', '--path', 'rt/stream', '--profile-file', profileFile, '--json'], { stdinCmd: `head -c 30000000 /dev/urandom | tee ${tmp}/stream.copy` });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout.toString()).bytes, 30_000_000);
      r = await dmctl(['location', 'pull', '-', '--path', 'rt/stream', '--profile-file', profileFile]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(crypto.createHash('sha256').update(r.stdout).digest('hex'), await sha256File(`${tmp}/stream.copy`));

      // a small (single request) object and an empty one
      r = await dmctl(['location', 'push', '-', '--path', 'rt/empty', '--profile-file', profileFile], { stdinCmd: 'true' });
      assert.equal(r.code, 0, r.stderr);
      r = await dmctl(['location', 'pull', '-', '--path', 'rt/empty', '--profile-file', profileFile]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.length, 0);
    });

    it('deletes by key prefix (kando semantics) and reports a missing object with the storage exit code', async () => {
      for (const k of ['del/db', 'del/db2', 'del/dc']) {
        const r = await dmctl(['location', 'push', '-', '--path', k, '--profile-file', profileFile], { stdinCmd: `echo ${k}` });
        assert.equal(r.code, 0, r.stderr);
      }
      let r = await dmctl(['location', 'delete', '--path', 'del/db', '--profile-file', profileFile, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout.toString()).deleted, 2);
      r = await dmctl(['location', 'pull', '-', '--path', 'del/db2', '--profile-file', profileFile]);
      assert.equal(r.code, EXIT_CODES.STORAGE);
      assert.match(r.stderr, /del\/db2: not found/);
      assert.equal(r.stderr.trim().split('\n').filter((l) => !l.startsWith('hint:')).length, 1, r.stderr);
      r = await dmctl(['location', 'pull', '-', '--path', 'del/dc', '--profile-file', profileFile]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'del/dc\n');
    });
  });
}

describe('location commands: bad input', () => {
  it('malformed profile JSON: one line, usage exit code, no secret echoed', async () => {
    const secret = 'SUPERSECRET-do-not-echo';
    const r = await dmctl(['location', 'push', '-', '--path', 'x', '--profile', `{"Location":{"type":"s3Compliant","bucket":"b"},"Credential":{"KeyPair":{"ID":"a","Secret":"${secret}"}`], { stdinCmd: 'echo hi' });
    assert.equal(r.code, EXIT_CODES.USAGE);
    assert.match(r.stderr, /^dmctl: invalid profile: not valid JSON/);
    assert.ok(!r.stderr.includes(secret));
  });

  it('wrong keys in the profile: access denied, storage exit code, secret not echoed', async () => {
    const p = JSON.parse(s3Profile());
    p.Credential.KeyPair.Secret = 'WRONG-do-not-echo';
    const r = await dmctl(['location', 'push', '-', '--path', 'x', '--profile', JSON.stringify(p)], { stdinCmd: 'echo hi' });
    assert.equal(r.code, EXIT_CODES.STORAGE, r.stderr);
    assert.match(r.stderr, /credentials rejected|access denied/);
    assert.ok(!r.stderr.includes('WRONG-do-not-echo'));
  });
});

describe('memory of pushing a large stream stays flat', () => {
  async function peakRss(bytes: number, key: string): Promise<number> {
    const profileFile = path.join(tmp, 'mem-profile.json');
    await fsp.writeFile(profileFile, s3Profile(), { mode: 0o600 });
    const r = await dmctl(['location', 'push', '-', '--path', key, '--profile-file', profileFile, '--json'], { stdinCmd: `head -c ${bytes} /dev/zero`, wrap: ['/usr/bin/time', '-f', 'MAXRSS_KB=%M'] });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout.toString()).bytes, bytes);
    const kb = Number(/MAXRSS_KB=(\d+)/.exec(r.stderr)?.[1]);
    assert.ok(kb > 0, r.stderr);
    const del = await dmctl(['location', 'delete', '--path', key, '--profile-file', profileFile]);
    assert.equal(del.code, 0, del.stderr);
    return kb;
  }

  it('peak RSS pushing 2 GB is within 15% of pushing 400 MB', async () => {
    const small = await peakRss(400 * 1024 * 1024, 'mem/small');
    const large = await peakRss(2 * 1024 * 1024 * 1024, 'mem/large');
    process.stderr.write(`# location push peak RSS: 400 MiB -> ${(small / 1024).toFixed(1)} MiB, 2 GiB -> ${(large / 1024).toFixed(1)} MiB\n`);
    assert.ok(large <= small * 1.15, `2 GiB push peaked at ${large} KiB vs ${small} KiB for 400 MiB`);
  });
});
