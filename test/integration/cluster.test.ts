// Cluster mode end to end against the Kubernetes API stand-in and the pod runner (no real cluster can run here):
// server start → users add → backup --pvc → restore --pvc gives identical bytes → backup-stream with a failing dump
// writes nothing → server stop leaves no object behind; plus the RBAC-forbidden and image-pull-failure lines.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KubeApiStandIn } from '../support/kube-api.js';
import { PodRunner } from '../support/pod-runner.js';
import { DMCTL_BIN, run, type RunResult } from '../support/run.js';
import { fileDigests as treeDigest } from '../support/fixtures.js';

const NS = 'backup';
let api: KubeApiStandIn;
let runner: PodRunner;
let tmp: string;
let claims: string;
let kubeconfig: string;
let pwFile: string;
let alicePw: string;

function dm(args: string[], extraEnv: Record<string, string> = {}): Promise<RunResult> {
  return run(process.execPath, [DMCTL_BIN, ...args], {
    env: { KUBECONFIG: kubeconfig, DM_IMAGE: 'registry.example/dmctl:test', HOME: tmp, NO_COLOR: '1', ...extraEnv },
    timeoutMs: 120_000,
  });
}

function explain(r: RunResult): string {
  return `${r.command} → ${r.code}\nstdout: ${r.stdout.toString()}\nstderr: ${r.stderr}\nrunner:\n${runner.history.slice(-15).join('\n')}`;
}

async function snapshotCount(): Promise<number> {
  const r = await run(process.execPath, [DMCTL_BIN, 'snapshots', '--repo', path.join(claims, 'repo-claim', 'repo'), '--password-file', pwFile, '--json'], { env: { HOME: tmp } });
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout.toString()) as unknown[]).length;
}

function dmctlPods(): string[] {
  return api.list('pods', NS).map((p) => p.metadata.name);
}

describe('cluster mode through the Kubernetes API stand-in', { timeout: 600_000 }, () => {
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'dm-cluster-'));
    claims = path.join(tmp, 'claims');
    kubeconfig = path.join(tmp, 'kubeconfig');
    api = new KubeApiStandIn();
    await api.start();
    await api.writeKubeconfig(kubeconfig, NS);
    runner = new PodRunner(api, { claimsRoot: claims });
    await runner.start();
    for (const c of ['repo-claim', 'src-claim', 'dst-claim']) api.create('persistentvolumeclaims', NS, { metadata: { name: c }, spec: { accessModes: ['ReadWriteOnce'] }, status: { phase: 'Bound' } });
    pwFile = path.join(tmp, 'repo.pw');
    await fsp.writeFile(pwFile, 'repository password\n');
    await fsp.mkdir(path.join(claims, 'repo-claim'), { recursive: true });
    const init = await run(process.execPath, [DMCTL_BIN, 'repo', 'init', '--repo', path.join(claims, 'repo-claim', 'repo'), '--password-file', pwFile], { env: { HOME: tmp } });
    assert.equal(init.code, 0, init.stderr);
    // Data with a few shapes: nested folders, an empty file, a larger random file.
    const src = path.join(claims, 'src-claim');
    await fsp.mkdir(path.join(src, 'app', 'sub'), { recursive: true });
    await fsp.writeFile(path.join(src, 'app', 'config.yaml'), 'a: 1\n');
    await fsp.writeFile(path.join(src, 'app', 'sub', 'empty'), '');
    await fsp.writeFile(path.join(src, 'big.bin'), crypto.randomBytes(3 * 1024 * 1024 + 17));
    alicePw = path.join(tmp, 'alice.pw');
    await fsp.writeFile(alicePw, 'alice-secret-pw\n');
  });

  after(async () => {
    await runner?.stop();
    await api?.stop();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('server start --kube creates labelled objects, waits until ready and prints address and fingerprint', async () => {
    const r = await dm(['server', 'start', '--kube', '--name', 'dm', '--repo', '/srv/repo/repo', '--repo-pvc', 'repo-claim', '--password-file', pwFile, '--json', '--timeout', '60s']);
    assert.equal(r.code, 0, explain(r));
    const info = JSON.parse(r.stdout.toString()) as { url: string; fingerprint: string; ready: boolean };
    assert.equal(info.url, `https://dm.${NS}.svc:8000/`);
    assert.match(info.fingerprint, /^[0-9a-f]{64}$/);
    // The fingerprint is the certificate in the TLS secret.
    const tls = api.get('secrets', NS, 'dm-tls')!;
    assert.equal(tls.type, 'kubernetes.io/tls');
    const der = new crypto.X509Certificate(Buffer.from((tls.data as Record<string, string>)['tls.crt']!, 'base64')).raw;
    assert.equal(crypto.createHash('sha256').update(der).digest('hex'), info.fingerprint);
    for (const [res, name] of [['deployments', 'dm'], ['services', 'dm'], ['configmaps', 'dm-config'], ['secrets', 'dm-users'], ['secrets', 'dm-storage']] as const) {
      assert.equal(api.get(res, NS, name)?.metadata.labels?.['app.kubernetes.io/managed-by'], 'dmctl', `${res}/${name}`);
    }
    // Idempotent: a second start changes nothing and keeps the certificate.
    const again = await dm(['server', 'start', '--kube', '--name', 'dm', '--repo', '/srv/repo/repo', '--repo-pvc', 'repo-claim', '--password-file', pwFile, '--json', '--timeout', '60s']);
    assert.equal(again.code, 0, explain(again));
    assert.equal((JSON.parse(again.stdout.toString()) as { fingerprint: string }).fingerprint, info.fingerprint);
    const st = await dm(['server', 'status', '--kube', '--name', 'dm', '--json']);
    assert.equal(st.code, 0, explain(st));
    const sj = JSON.parse(st.stdout.toString()) as { healthy: boolean; serverReady: boolean; pods: unknown[] };
    assert.equal(sj.healthy, true);
    assert.equal(sj.serverReady, true);
    assert.equal(sj.pods.length, 1);
  });

  it('users add --kube edits the credentials secret', async () => {
    const r = await dm(['server', 'users', 'add', 'alice', '--kube', '--name', 'dm', '--password-file', alicePw]);
    assert.equal(r.code, 0, explain(r));
    const s = api.get('secrets', NS, 'dm-users')!;
    assert.equal(Buffer.from((s.data as Record<string, string>).alice!, 'base64').toString(), 'alice@dmctl:alice-secret-pw');
    const dup = await dm(['server', 'users', 'add', 'alice', '--kube', '--name', 'dm', '--password-file', alicePw]);
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /user alice already exists on server dm/);
  });

  let snapshotId = '';
  it('backup --kube --pvc runs a datamover pod, streams its log and prints the snapshot; the pod is gone', async () => {
    const r = await dm(['backup', '--kube', '--pvc', 'src-claim', '--server', 'dm', '--user', 'alice', '--tag', 'nightly', '--json', '--output-name', 'backupInfo']);
    assert.equal(r.code, 0, explain(r));
    const out = r.stdout.toString();
    const phase = /###Phase-output###: (.*)\n/.exec(out);
    assert.ok(phase, out);
    const value = JSON.parse(JSON.parse(phase[1]!).value) as { id: string; fileCount: number; logicalSize: number };
    assert.match(value.id, /^[0-9a-f]{64}$/);
    assert.equal(value.fileCount, 3);
    assert.equal(value.logicalSize, 3 * 1024 * 1024 + 17 + 5);
    snapshotId = value.id;
    assert.deepEqual(dmctlPods().filter((n) => n.startsWith('dmctl-backup')), []);
    assert.equal(await snapshotCount(), 1);
    assert.ok(api.requests.every((q) => !q.includes('/exec')), 'never exec');
  });

  it('restore --kube --pvc into another claim gives identical bytes', async () => {
    const r = await dm(['restore', '--kube', '--pvc', 'dst-claim', '--server', 'dm', '--user', 'alice', snapshotId.slice(0, 12)]);
    assert.equal(r.code, 0, explain(r));
    assert.match(r.stdout.toString(), /restored snapshot/);
    assert.deepEqual(await treeDigest(path.join(claims, 'dst-claim')), await treeDigest(path.join(claims, 'src-claim')));
    assert.deepEqual(dmctlPods().filter((n) => n.startsWith('dmctl-restore')), []);
  });

  it('backup-stream --kube with a failing dump writes no snapshot and exits non-zero', async () => {
    const before = await snapshotCount();
    const r = await dm(['backup-stream', '--kube', '--image', 'registry.example/dmctl:test', '--server', 'dm', '--user', 'alice', '--name', 'db.sql', '--', 'sh', '-c', 'echo partial-dump; exit 3']);
    assert.notEqual(r.code, 0, explain(r));
    assert.match(r.stderr, /dump pod .* failed/);
    assert.equal(await snapshotCount(), before);
    const ok = await dm(['backup-stream', '--kube', '--image', 'registry.example/dmctl:test', '--server', 'dm', '--user', 'alice', '--name', 'db.sql', '--json', '--', 'sh', '-c', 'printf "%s" full-dump']);
    assert.equal(ok.code, 0, explain(ok));
    assert.equal((JSON.parse(ok.stdout.toString()) as { logicalSize: number }).logicalSize, 9);
    assert.equal(await snapshotCount(), before + 1);
    assert.deepEqual(dmctlPods(), dmctlPods().filter((n) => !n.startsWith('dmctl-dump')));
  });

  it('an image that cannot be pulled gives one line naming the image, and no pod is left', async () => {
    const r = await dm(['backup', '--kube', '--pvc', 'src-claim', '--server', 'dm', '--image', 'registry.example/no-such-image:1']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot pull image registry\.example\/no-such-image:1 for container datamover \((ErrImagePull|ImagePullBackOff)\)/);
    assert.deepEqual(dmctlPods().filter((n) => n.startsWith('dmctl-backup')), []);
  });

  it('a missing claim is named', async () => {
    const r = await dm(['backup', '--kube', '--pvc', 'no-such-claim', '--server', 'dm']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /persistentvolumeclaim "no-such-claim" not found in namespace backup/);
  });

  it('RBAC Forbidden names the verb and the resource', async () => {
    api.forbid('create', 'pods');
    try {
      const r = await dm(['backup', '--kube', '--pvc', 'src-claim', '--server', 'dm']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /forbidden: cannot create pods "dmctl-backup-[a-z0-9-]+" in namespace backup \(RBAC\)/);
      assert.match(r.stderr, /dmctl kube rbac/);
    } finally {
      api.allowAll();
    }
    assert.deepEqual(dmctlPods().filter((n) => n.startsWith('dmctl-')), []);
  });

  it('an unreachable API server is one line', async () => {
    const bad = path.join(tmp, 'bad-kubeconfig');
    await fsp.writeFile(bad, (await fsp.readFile(kubeconfig, 'utf8')).replace(/127\.0\.0\.1:\d+/, '127.0.0.1:1'));
    const r = await dm(['server', 'status', '--kube', '--name', 'dm', '--kubeconfig', bad]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot reach the Kubernetes API server at http:\/\/127\.0\.0\.1:1/);
  });

  it('--dry-run -o yaml prints the objects and creates nothing', async () => {
    const count = api.all().length;
    const r = await dm(['backup', '--kube', '--pvc', 'src-claim', '--server', 'dm', '--dry-run', '-o', 'yaml']);
    assert.equal(r.code, 0, explain(r));
    assert.match(r.stdout.toString(), /kind: Pod/);
    assert.match(r.stdout.toString(), /claimName: src-claim/);
    assert.equal(api.all().length, count);
  });

  it('server refresh --kube replaces the server pod, waits until the new one is ready, and it serves', async () => {
    const before = await dm(['server', 'status', '--kube', '--name', 'dm', '--json']);
    assert.equal(before.code, 0, explain(before));
    const b = JSON.parse(before.stdout.toString()) as { fingerprint: string; pods: { name: string }[] };
    const r = await dm(['server', 'refresh', '--kube', '--name', 'dm', '--json', '--timeout', '60s']);
    assert.equal(r.code, 0, explain(r));
    const info = JSON.parse(r.stdout.toString()) as { ready: boolean; fingerprint: string };
    assert.equal(info.ready, true);
    assert.equal(info.fingerprint, b.fingerprint, 'the TLS secret is kept');
    const after = await dm(['server', 'status', '--kube', '--name', 'dm', '--json']);
    assert.equal(after.code, 0, explain(after));
    const a = JSON.parse(after.stdout.toString()) as { serverReady: boolean; pods: { name: string; ready: boolean }[] };
    assert.equal(a.serverReady, true);
    assert.equal(a.pods.length, 1);
    assert.notEqual(a.pods[0]!.name, b.pods[0]!.name, 'a new pod');
    assert.equal(a.pods[0]!.ready, true);
    const count = await snapshotCount();
    const ok = await dm(['backup-stream', '--kube', '--image', 'registry.example/dmctl:test', '--server', 'dm', '--user', 'alice', '--name', 'after-refresh', '--', 'sh', '-c', 'printf x']);
    assert.equal(ok.code, 0, explain(ok));
    assert.equal(await snapshotCount(), count + 1);
  });

  it('check --kube runs a maintenance pod next to the server\'s storage', async () => {
    const r = await dm(['check', '--kube', '--server', 'dm']);
    assert.equal(r.code, 0, explain(r));
    assert.match(r.stderr, /dmctl-check-dm-[a-z0-9]+: /);
    assert.deepEqual(dmctlPods().filter((n) => n.startsWith('dmctl-check')), []);
    const hist = runner.history.filter((h) => h.includes('/maintenance: ')).join('\n');
    assert.match(hist, /check --repo \S+\/claims\/repo-claim\/repo --password-file \S+/);
  });

  it('server stop --kube leaves no object and no process behind', async () => {
    const r = await dm(['server', 'stop', '--kube', '--name', 'dm']);
    assert.equal(r.code, 0, explain(r));
    const left = api.all().filter((o) => o.resource !== 'persistentvolumeclaims');
    assert.deepEqual(left, []);
    for (let i = 0; i < 50 && runner.running().length; i++) await new Promise((res) => setTimeout(res, 100));
    assert.deepEqual(runner.running(), []);
  });
});
