// --cacert, --insecure-tls and a Kanister Profile's SkipSSLVerify on S3 (radosgw), Azure (azurite)
// and GCS (the emulator), all over real TLS with a certificate signed by a CA made here: azurite
// serves https itself; radosgw and the GCS emulator sit behind a TLS-terminating proxy. For each
// backend, through the CLI:
// - without the CA, `repo init` fails with one line saying the certificate was not accepted, exit 4
//   (storage), and nothing reached the server over TLS past the handshake;
// - with --cacert FILE, init + backup-stream + restore-stream give the bytes back;
// - with --insecure-tls, another backup-stream + restore-stream work and snapshots lists both;
// - a Profile with SkipSSLVerify opens the same repository (and `location push/pull` streams an
//   object both ways), and the same Profile without it is refused with the TLS line.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { startRadosgw, startAzurite, startGcsEmulator, RadosgwServer, AzuriteServer, GcsEmulator, GCS_CLIENT_ENV, startTogether } from '../support/servers.js';
import { makeTestCertificates, startTlsProxy, TestCertificates, TlsProxy } from '../support/tls-proxy.js';
import { dmctl, toolEnv, ToolEnv, RunResult, json } from '../support/run.js';

const tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'dmctl-cloudtls-'));
const PASSWORD = 'cloud-tls-pw';
const STORAGE_EXIT = 4; // README "Exit codes": storage failed (unreachable, ...)

let certs: TestCertificates;
let rgw: RadosgwServer;
let azurite: AzuriteServer;
let gcs: GcsEmulator;
let rgwTls: TlsProxy;
let gcsTls: TlsProxy;

before(async () => {
  certs = await makeTestCertificates(path.join(tmpRoot, 'pki'));
  // radosgw is the slow one (~12 s and more under load): all three start together, once per file.
  [rgw, azurite, gcs] = await startTogether([startRadosgw(), startAzurite({ cert: certs.certFile, key: certs.keyFile }), startGcsEmulator()]);
  rgwTls = await startTlsProxy(rgw.port, certs);
  gcsTls = await startTlsProxy(gcs.port, certs, { rewriteLocation: true });
}, { timeout: 300_000 });

after(async () => {
  await Promise.allSettled([rgwTls?.stop(), gcsTls?.stop()]);
  await Promise.allSettled([rgw?.stop(), azurite?.stop(), gcs?.stop()]);
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

// Variables a developer's shell might carry that would change what dmctl trusts or uses.
const CLEAN_ENV = {
  NODE_EXTRA_CA_CERTS: undefined, NODE_TLS_REJECT_UNAUTHORIZED: undefined, AWS_PROFILE: undefined, AWS_SESSION_TOKEN: undefined,
  AZURE_STORAGE_CONNECTION_STRING: undefined, AZURE_ACCOUNT_SAS: undefined, GOOGLE_APPLICATION_CREDENTIALS: undefined, STORAGE_EMULATOR_HOST: undefined,
  HTTPS_PROXY: undefined, https_proxy: undefined, HTTP_PROXY: undefined, http_proxy: undefined,
};

interface Target {
  name: string;
  repo(): string;
  env(): Record<string, string | undefined>;
  /** Profile JSON for the same repository (Location.prefix = the repository's prefix). */
  profile(skipSSLVerify: boolean): string;
  /** Where TLS is served (for the "nothing passed the handshake" check), if through our proxy. */
  proxy(): TlsProxy | undefined;
}

const targets: Target[] = [
  {
    name: 's3 (radosgw behind TLS)',
    repo: () => `s3:${rgwTls.url}/tlsbucket/repo`,
    env: () => ({ AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey }),
    profile: (skip) => JSON.stringify({
      Location: { type: 's3Compliant', bucket: 'tlsbucket', endpoint: rgwTls.url, prefix: 'repo', region: 'us-east-1' },
      Credential: { Type: 'keyPair', KeyPair: { ID: rgw.accessKeyId, Secret: rgw.secretAccessKey } },
      SkipSSLVerify: skip,
    }),
    proxy: () => rgwTls,
  },
  {
    name: 'azure (azurite over https)',
    repo: () => 'azure:tlscontainer:/repo',
    env: () => ({ AZURE_ACCOUNT_NAME: azurite.accountName, AZURE_ACCOUNT_KEY: azurite.accountKey, AZURE_STORAGE_ENDPOINT: azurite.endpoint }),
    profile: (skip) => JSON.stringify({
      Location: { type: 'azure', bucket: 'tlscontainer', endpoint: azurite.endpoint, prefix: 'repo' },
      Credential: { Type: 'keyPair', KeyPair: { ID: azurite.accountName, Secret: azurite.accountKey } },
      SkipSSLVerify: skip,
    }),
    proxy: () => undefined,
  },
  {
    name: 'gcs (emulator behind TLS)',
    repo: () => 'gs:tlsbucket:/repo',
    env: () => ({ ...GCS_CLIENT_ENV, STORAGE_EMULATOR_HOST: gcsTls.url, GOOGLE_PROJECT_ID: 'dmctl-test' }),
    // No credential: the emulator takes unauthenticated requests (a key would make the client fetch tokens).
    profile: (skip) => JSON.stringify({ Location: { type: 'gcs', bucket: 'tlsbucket', endpoint: gcsTls.url, prefix: 'repo' }, SkipSSLVerify: skip }),
    proxy: () => gcsTls,
  },
];

const show = (r: RunResult) => `${r.command} → ${r.code}\n${r.stderr.slice(-3000)}`;

/** The failure is one `dmctl:` line saying the certificate was not accepted (plus at most a hint), exit 4. */
function assertTlsRefused(r: RunResult): void {
  assert.equal(r.code, STORAGE_EXIT, show(r));
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  const errors = lines.filter((l) => l.startsWith('dmctl:'));
  assert.equal(errors.length, 1, `one error line:\n${r.stderr}`);
  assert.match(errors[0], /TLS certificate not accepted \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)/);
  assert.ok(lines.every((l) => l.startsWith('dmctl:') || l.startsWith('hint:')), `nothing but the error and its hint:\n${r.stderr}`);
  assert.ok(!/\n\s+at /.test(r.stderr), 'no stack trace');
}

const streamA = crypto.randomBytes(3 * 1024 * 1024 + 17);
const streamB = Buffer.concat([crypto.randomBytes(1024 * 1024), Buffer.alloc(512 * 1024, 7)]);
const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

for (const t of targets) {
  describe(`TLS on ${t.name}`, () => {
    let tool: ToolEnv;
    const run = (args: string[], opts: { input?: Buffer; env?: Record<string, string | undefined> } = {}) =>
      dmctl(tool, args, { env: { ...CLEAN_ENV, ...t.env(), ...opts.env }, input: opts.input, timeoutMs: 90_000 });
    /** A run with the Profile only: no repository URL and no provider variables. */
    const runProfile = (args: string[], skip: boolean, opts: { input?: Buffer } = {}) =>
      dmctl(tool, [...args, '--profile', t.profile(skip)], { env: { ...CLEAN_ENV, ...GCS_CLIENT_ENV, DM_REPOSITORY: undefined }, input: opts.input, timeoutMs: 90_000 });
    let snapA = '';

    before(() => {
      tool = toolEnv(t.repo(), PASSWORD, path.join(tmpRoot, `home-${t.name.split(' ')[0]}`));
    });

    it('without the CA: repo init fails with one line naming the refused certificate, exit 4', async () => {
      const before = t.proxy()?.connections ?? 0;
      const r = await run(['repo', 'init']);
      assertTlsRefused(r);
      // The client gave up at the handshake: no request passed through (nothing was created).
      if (t.proxy()) assert.equal(t.proxy()!.connections, before, 'no TLS session was completed');
    });

    it('with --cacert FILE: init, backup-stream and restore-stream give the bytes back', async () => {
      const init = await run(['repo', 'init', '--cacert', certs.caFile]);
      assert.equal(init.code, 0, show(init));
      assert.match(init.stdout.toString(), /created repository [0-9a-f]{10}/);
      const b = await run(['backup-stream', '-q', '--name', 'a.bin', '--json', '--cacert', certs.caFile], { input: streamA });
      assert.equal(b.code, 0, show(b));
      const snaps = json<{ id: string; short_id: string }[]>(await run(['snapshots', '--json', '--cacert', certs.caFile]));
      assert.equal(snaps.length, 1);
      snapA = snaps[0].short_id;
      const r = await run(['restore-stream', snapA, '--cacert', certs.caFile]);
      assert.equal(r.code, 0, show(r));
      assert.equal(r.stdout.length, streamA.length);
      assert.equal(sha(r.stdout), sha(streamA));
    });

    it('with --insecure-tls: backup-stream and restore-stream work, snapshots lists both', async () => {
      assert.ok(snapA, 'the --cacert test made the repository');
      const b = await run(['backup-stream', '-q', '--name', 'b.bin', '--insecure-tls'], { input: streamB });
      assert.equal(b.code, 0, show(b));
      const r = await run(['restore-stream', 'latest', '--path', '/b.bin', '--insecure-tls']);
      assert.equal(r.code, 0, show(r));
      assert.equal(sha(r.stdout), sha(streamB));
      const snaps = json<{ paths: string[] }[]>(await run(['snapshots', '--json', '--insecure-tls']));
      assert.deepEqual(snaps.map((s) => s.paths[0]).sort(), ['/a.bin', '/b.bin']);
      const again = await run(['restore-stream', snapA, '--insecure-tls']);
      assert.equal(sha(again.stdout), sha(streamA), show(again));
    });

    it('a Profile with SkipSSLVerify opens the repository; the same Profile without it is refused', async () => {
      const okRun = await runProfile(['snapshots', '--json'], true);
      assert.equal(okRun.code, 0, show(okRun));
      assert.equal(json<unknown[]>(okRun).length, 2);
      assertTlsRefused(await runProfile(['snapshots'], false));
    });

    it('location push/pull with a SkipSSLVerify Profile streams an object both ways', async () => {
      const data = Buffer.concat([crypto.randomBytes(6 * 1024 * 1024), Buffer.from('end')]);
      const push = await runProfile(['location', 'push', '-', '--path', 'objects/blob.bin'], true, { input: data });
      assert.equal(push.code, 0, show(push));
      const pull = await runProfile(['location', 'pull', '-', '--path', 'objects/blob.bin'], true);
      assert.equal(pull.code, 0, show(pull));
      assert.equal(sha(pull.stdout), sha(data));
      assertTlsRefused(await runProfile(['location', 'pull', '-', '--path', 'objects/blob.bin'], false));
    });
  });
}
