// Cluster mode, continued (see cluster.test.ts for the server round trip), against the Kubernetes API stand-in and the
// pod runner: pods that go straight to a repository through a short-lived Secret, stream restores into a command,
// server users set/remove through the credentials Secret, Ctrl-C while a pod runs, and the error lines of states only a
// node or a controller produces (OOM kill, eviction, a claim attached to another node, a ReadWriteOncePod claim in use,
// a server that never becomes ready), caused through the pod runner's test hooks.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KubeApiStandIn, type KObj, type WatchEvent } from '../support/kube-api.js';
import { PodRunner } from '../support/pod-runner.js';
import { DMCTL_BIN, run, type RunResult } from '../support/run.js';
import { fileDigests as treeDigest } from '../support/fixtures.js';

const NS = 'apps';
const IMG = 'registry.example/dmctl:test';
const REPO_PW = 'repo password 7f3c';
let api: KubeApiStandIn;
let runner: PodRunner;
let tmp: string;
let claims: string;
let kubeconfig: string;
let pwFile: string;
/** Every pod and Secret dmctl created, as first created, and every state change of the Secrets. */
const created: KObj[] = [];
const secretEvents: WatchEvent[] = [];

function dmEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  return { KUBECONFIG: kubeconfig, DM_IMAGE: IMG, HOME: tmp, NO_COLOR: '1', DM_PASSWORD: undefined, DM_PASSWORD_FILE: undefined, DM_REPOSITORY: undefined, ...extra };
}

function dm(args: string[], extra: Record<string, string> = {}): Promise<RunResult> {
  return run(process.execPath, [DMCTL_BIN, ...args], { env: dmEnv(extra), timeoutMs: 120_000 });
}

function explain(r: RunResult): string {
  return `${r.command} → ${r.code}\nstdout: ${r.stdout.toString()}\nstderr: ${r.stderr}\nrunner:\n${runner.history.slice(-15).join('\n')}`;
}

/** The repository on the claim, opened locally (the test's own view of what the pods wrote). */
async function snapshots(): Promise<{ id: string; tags?: string[]; paths: string[] }[]> {
  const r = await run(process.execPath, [DMCTL_BIN, 'snapshots', '--repo', path.join(claims, 'repo-claim', 'repo'), '--password-file', pwFile, '--json'], { env: { HOME: tmp } });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.toString()) as { id: string; paths: string[] }[];
}

/** Short-lived objects of datamover pods still in the API (pods and their Secrets). */
function leftovers(): string[] {
  return [...api.list('pods', NS), ...api.list('secrets', NS)].filter((o) => o.metadata.labels?.['app.kubernetes.io/name'] === 'dmctl-datamover').map((o) => `${o.kind}/${o.metadata.name}`);
}

async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${runner.history.slice(-10).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts dmctl without waiting, to act on its pod while it runs. */
function startDm(args: string[]): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }>; kill: (s: NodeJS.Signals) => void } {
  const child = spawn(process.execPath, [DMCTL_BIN, ...args], { env: Object.fromEntries(Object.entries({ ...process.env, ...dmEnv() }).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr, stdout });
    }),
  );
  return { done, kill: (s) => child.kill(s) };
}

/** The running pod whose name starts with `prefix`, once its container runs. */
function runningPod(prefix: string, container: string): Promise<string> {
  return waitFor(`a running pod ${prefix}*`, () => {
    const p = api.list('pods', NS).find((x) => x.metadata.name.startsWith(prefix));
    const cs = (p?.status as { containerStatuses?: { name: string; state?: { running?: unknown } }[] } | undefined)?.containerStatuses?.find((c) => c.name === container);
    return cs?.state?.running ? p!.metadata.name : undefined;
  });
}

const repoArgs = () => ['--repo-pvc', 'repo-claim', '--repo', 'repo', '--password-file', pwFile];

describe('cluster mode, continued', { timeout: 900_000 }, () => {
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'dm-cluster2-'));
    claims = path.join(tmp, 'claims');
    kubeconfig = path.join(tmp, 'kubeconfig');
    api = new KubeApiStandIn();
    await api.start();
    await api.writeKubeconfig(kubeconfig, NS);
    api.events.on('event', (e: WatchEvent) => {
      if (e.type === 'ADDED' && (e.resource === 'pods' || e.resource === 'secrets')) created.push(e.object);
      if (e.resource === 'secrets') secretEvents.push(e);
    });
    runner = new PodRunner(api, { claimsRoot: claims });
    await runner.start();
    for (const c of ['repo-claim', 'src-claim', 'dst-claim', 'big-claim']) api.create('persistentvolumeclaims', NS, { metadata: { name: c }, spec: { accessModes: ['ReadWriteOnce'] }, status: { phase: 'Bound' } });
    pwFile = path.join(tmp, 'repo.pw');
    await fsp.writeFile(pwFile, REPO_PW + '\n');
    await fsp.mkdir(path.join(claims, 'repo-claim'), { recursive: true });
    const init = await run(process.execPath, [DMCTL_BIN, 'repo', 'init', '--repo', path.join(claims, 'repo-claim', 'repo'), '--password-file', pwFile], { env: { HOME: tmp } });
    assert.equal(init.code, 0, init.stderr);
    const src = path.join(claims, 'src-claim');
    await fsp.mkdir(path.join(src, 'www', 'img'), { recursive: true });
    await fsp.writeFile(path.join(src, 'www', 'index.html'), '<h1>hi</h1>\n');
    await fsp.writeFile(path.join(src, 'www', 'img', 'empty.png'), '');
    await fsp.writeFile(path.join(src, 'data.bin'), crypto.randomBytes(2 * 1024 * 1024 + 3));
    // A claim that takes minutes to read (a 64 GiB sparse file), so a pod is surely still running when a test acts.
    await fsp.mkdir(path.join(claims, 'big-claim'), { recursive: true });
    const fh = await fsp.open(path.join(claims, 'big-claim', 'disk.img'), 'w');
    await fh.truncate(64 * 1024 ** 3);
    await fh.close();
  });

  after(async () => {
    await runner?.stop();
    await api?.stop();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  let fileSnapshot = '';
  it('backup --kube --repo (a path on --repo-pvc) stores the claim through a short-lived Secret, then nothing is left', async () => {
    const before = (await snapshots()).length;
    const mark = created.length;
    const r = await dm(['backup', '--kube', '--pvc', 'src-claim', ...repoArgs(), '--tag', 'web', '--json']);
    assert.equal(r.code, 0, explain(r));
    const out = JSON.parse(r.stdout.toString()) as { id: string; fileCount: number; logicalSize: number };
    assert.equal(out.fileCount, 3);
    assert.equal(out.logicalSize, 2 * 1024 * 1024 + 3 + 12);
    const snaps = await snapshots();
    assert.equal(snaps.length, before + 1);
    assert.ok(snaps.some((s) => s.id === out.id && s.tags?.includes('web')));
    fileSnapshot = out.id;
    // What was created: one Secret holding the password, then the pod, which reads it only through the Secret.
    const mine = created.slice(mark);
    const secret = mine.find((o) => o.kind === 'Secret');
    const pod = mine.find((o) => o.kind === 'Pod');
    assert.ok(secret && pod, mine.map((o) => o.metadata.name).join(' '));
    assert.equal(secret.metadata.labels?.['app.kubernetes.io/managed-by'], 'dmctl');
    assert.equal(Buffer.from((secret.data as Record<string, string>).password!, 'base64').toString(), REPO_PW);
    assert.ok(!JSON.stringify(pod.spec).includes(REPO_PW), 'the password is not in the pod spec');
    const env = (pod.spec as { containers: { env?: { name: string; value?: string }[] }[] }).containers[0]!.env ?? [];
    assert.equal(env.find((e) => e.name === 'DM_PASSWORD_FILE')?.value, `/etc/secrets/${secret.metadata.name}/password`);
    // The Secret was made a dependent of the pod (the garbage collector removes it even if dmctl dies).
    const owned = secretEvents.find((e) => e.object.metadata.name === secret.metadata.name && e.type === 'MODIFIED');
    assert.deepEqual(owned?.object.metadata.ownerReferences?.map((o) => `${o.kind}/${o.name}`), [`Pod/${pod.metadata.name}`]);
    assert.ok(secretEvents.some((e) => e.object.metadata.name === secret.metadata.name && e.type === 'DELETED'));
    assert.deepEqual(leftovers(), []);
  });

  it('restore --kube --repo into another claim gives identical bytes, and nothing is left', async () => {
    const r = await dm(['restore', '--kube', '--pvc', 'dst-claim', ...repoArgs(), fileSnapshot.slice(0, 10)]);
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(await treeDigest(path.join(claims, 'dst-claim')), await treeDigest(path.join(claims, 'src-claim')));
    assert.deepEqual(leftovers(), []);
  });

  it('a wrong repository password fails in the pod with one line, and the pod and its Secret are deleted', async () => {
    const bad = path.join(tmp, 'bad.pw');
    await fsp.writeFile(bad, 'not the password\n');
    const r = await dm(['backup', '--kube', '--pvc', 'src-claim', '--repo-pvc', 'repo-claim', '--repo', 'repo', '--password-file', bad]);
    assert.notEqual(r.code, 0, explain(r));
    assert.match(r.stderr, /datamover pod dmctl-backup-src-claim-[a-z0-9]+ failed \(exit \d+\): .*password/i);
    assert.deepEqual(leftovers(), []);
  });

  it('--dry-run -o yaml shows the Secret with placeholders, never the values, and creates nothing', async () => {
    const count = api.all().length;
    const r = await dm(['backup', '--kube', '--pvc', 'src-claim', '--repo', 'rest:https://bob:rest-pw-991@backup.example:8000/', '--password-file', pwFile, '--dry-run', '-o', 'yaml']);
    assert.equal(r.code, 0, explain(r));
    const y = r.stdout.toString();
    assert.match(y, /kind: Secret/);
    assert.match(y, /password: '?<redacted/);
    assert.doesNotMatch(y, new RegExp(`${REPO_PW}|rest-pw-991`));
    assert.match(y, /name: DM_REPOSITORY\s+valueFrom:\s+secretKeyRef:\s+key: repository/);
    const s3 = await dm(['backup', '--kube', '--pvc', 'src-claim', '--repo', 's3:https://s3.example/bucket/r', '--password-file', pwFile, '--dry-run', '-o', 'yaml'], { AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'aws-secret-4471' });
    assert.equal(s3.code, 0, explain(s3));
    const y3 = s3.stdout.toString();
    assert.doesNotMatch(y3, /aws-secret-4471|AKIDEXAMPLE/);
    assert.match(y3, /env\.AWS_SECRET_ACCESS_KEY: <from \$AWS_SECRET_ACCESS_KEY>/);
    assert.match(y3, /name: AWS_SECRET_ACCESS_KEY\s+valueFrom:\s+secretKeyRef:\s+key: env\.AWS_SECRET_ACCESS_KEY/);
    assert.equal(api.all().length, count);
  });

  it('a local --repo without --repo-pvc, or both --server and --repo, is a usage error', async () => {
    const a = await dm(['backup', '--kube', '--pvc', 'src-claim', '--repo', '/srv/x', '--password-file', pwFile]);
    assert.equal(a.code, 2, explain(a));
    assert.match(a.stderr, /a local path needs --repo-pvc CLAIM/);
    const b = await dm(['backup', '--kube', '--pvc', 'src-claim', '--server', 'dm', ...repoArgs()]);
    assert.equal(b.code, 2, explain(b));
    assert.match(b.stderr, /--server and --repo\/--repo-pvc exclude each other/);
  });

  it('restore-stream --kube feeds the command exactly the bytes backup-stream stored', async () => {
    // `seq` writes the same bytes everywhere; the test computes them itself.
    const expected = Array.from({ length: 300_000 }, (_, i) => String(i + 1)).join('\n') + '\n';
    const hash = crypto.createHash('sha256').update(expected).digest('hex');
    const b = await dm(['backup-stream', '--kube', '--image', IMG, ...repoArgs(), '--name', 'numbers.txt', '--json', '--', 'sh', '-c', 'seq 1 300000']);
    assert.equal(b.code, 0, explain(b));
    const snap = JSON.parse(b.stdout.toString()) as { id: string; logicalSize: number };
    assert.equal(snap.logicalSize, Buffer.byteLength(expected));
    const r = await dm(['restore-stream', '--kube', '--image', IMG, ...repoArgs(), snap.id.slice(0, 12), '--', 'sh', '-c', 'sha256sum; echo done-reading >&2']);
    assert.equal(r.code, 0, explain(r));
    // The dump container's own log reaches the terminal, prefixed with pod/container.
    const line = new RegExp(`dmctl-load-[a-z0-9]+/dump: ([0-9a-f]{64})  -`).exec(r.stderr);
    assert.ok(line, explain(r));
    assert.equal(line[1], hash);
    assert.match(r.stderr, /\/dump: done-reading/);
    assert.match(r.stdout.toString(), new RegExp(`restored snapshot ${snap.id.slice(0, 8)}: ${Buffer.byteLength(expected)} bytes`));
    assert.deepEqual(leftovers(), []);
  });

  it('check and forget --kube --repo run a maintenance pod with the short-lived Secret', async () => {
    const c = await dm(['check', '--kube', ...repoArgs()]);
    assert.equal(c.code, 0, explain(c));
    assert.match(c.stderr, /dmctl-check-repo-[a-z0-9]+: /);
    const before = (await snapshots()).length;
    const g = await dm(['forget', '--kube', ...repoArgs(), fileSnapshot]);
    assert.equal(g.code, 0, explain(g));
    assert.equal((await snapshots()).length, before - 1);
    assert.ok(!(await snapshots()).some((s) => s.id === fileSnapshot));
    assert.deepEqual(leftovers(), []);
  });

  it('Ctrl-C while the pod runs deletes the pod and its Secret and exits 130', async () => {
    const before = (await snapshots()).length;
    const p = startDm(['backup', '--kube', '--pvc', 'big-claim', ...repoArgs()]);
    const pod = await runningPod('dmctl-backup-big-claim-', 'datamover');
    assert.ok(api.get('secrets', NS, `${pod}-repo`), 'the Secret exists while the pod runs');
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(runner.running(), [`${NS}/${pod}`], 'the pod is still reading');
    p.kill('SIGINT');
    const r = await p.done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /interrupted/);
    assert.equal(api.get('pods', NS, pod), undefined);
    assert.equal(api.get('secrets', NS, `${pod}-repo`), undefined);
    assert.deepEqual(leftovers(), []);
    await waitFor('the pod processes to end', () => runner.running().length === 0 || undefined, 10_000);
    assert.equal((await snapshots()).length, before);
  });

  it('an OOM-killed pod is one line naming the container and its limit; nothing is left', async () => {
    const p = startDm(['backup', '--kube', '--pvc', 'big-claim', ...repoArgs(), '--memory-limit', '96Mi']);
    const pod = await runningPod('dmctl-backup-big-claim-', 'datamover');
    await runner.oomKill(NS, pod, 'datamover');
    const r = await p.done;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`pod ${pod}: container datamover was killed for running out of memory \\(OOMKilled, limit 96Mi\\)`));
    assert.match(r.stderr, /raise --memory-limit/);
    assert.deepEqual(leftovers(), []);
  });

  it('an evicted pod is one line with the kubelet\'s message; nothing is left', async () => {
    const p = startDm(['backup', '--kube', '--pvc', 'big-claim', ...repoArgs()]);
    const pod = await runningPod('dmctl-backup-big-claim-', 'datamover');
    await runner.evict(NS, pod, 'The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 512Mi.');
    const r = await p.done;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`pod ${pod} was evicted: The node was low on resource: ephemeral-storage`));
    assert.deepEqual(leftovers(), []);
  });

  it('a claim attached to another node (Multi-Attach) is one line naming the claim and the pod using it; nothing is left', async () => {
    // As a real cluster reports it: the pod is scheduled but stays Pending (ContainerCreating), and only a Warning
    // Event from the attach/detach controller says why. The Event names the PersistentVolume, not the claim.
    api.create('persistentvolumeclaims', NS, { metadata: { name: 'held-claim' }, spec: { accessModes: ['ReadWriteOnce'], volumeName: 'pvc-3c9a71e2' }, status: { phase: 'Bound' } });
    runner.attachConflict(NS, 'held-claim', ['web-0']);
    const mark = api.requests.length;
    const podsBefore = new Set(created.map((o) => o.metadata.name));
    try {
      const t0 = Date.now();
      const r = await dm(['backup', '--kube', '--pvc', 'held-claim', ...repoArgs(), '--timeout', '90s']);
      const took = Date.now() - t0;
      assert.equal(r.code, 1, explain(r));
      const pod = created.find((o) => o.kind === 'Pod' && !podsBefore.has(o.metadata.name))?.metadata.name;
      assert.match(pod ?? '', /^dmctl-backup-held-claim-[a-z0-9]+$/);
      const line = `persistentvolumeclaim "held-claim" is in use by pod web-0 on another node (pod ${pod} cannot attach volume pvc-3c9a71e2: Multi-Attach error)`;
      assert.equal(r.stderr.split('\n').filter((l) => l.includes(line)).length, 1, explain(r));
      assert.match(r.stderr, /stop pod web-0/);
      // Long before --timeout: dmctl read the pod's Events (by field selector) instead of waiting.
      assert.ok(took < 45_000, `took ${took} ms`);
      assert.ok(api.requests.slice(mark).some((q) => q.startsWith(`GET /api/v1/namespaces/${NS}/events?`) && decodeURIComponent(q).includes(`involvedObject.name=${pod}`)), api.requests.slice(mark).join('\n'));
      // The stand-in's controller reported it the way a cluster does (the Event outlives the pod, as real ones do).
      const ev = api.list('events', NS).find((e) => (e.involvedObject as { name?: string }).name === pod);
      assert.equal(ev?.type, 'Warning');
      assert.equal(ev?.reason, 'FailedAttachVolume');
      assert.equal((ev?.source as { component?: string }).component, 'attachdetach-controller');
      assert.equal(api.get('pods', NS, pod!), undefined);
      assert.equal(api.get('secrets', NS, `${pod}-repo`), undefined);
      assert.deepEqual(leftovers(), []);
    } finally {
      runner.clearAttachConflict(NS, 'held-claim');
    }
  });

  it('without permission to list events, a pod waiting for an attached claim just times out with one line', async () => {
    runner.attachConflict(NS, 'held-claim', ['web-0']);
    api.forbid('list', 'events');
    try {
      const r = await dm(['backup', '--kube', '--pvc', 'held-claim', ...repoArgs(), '--timeout', '8s']);
      assert.equal(r.code, 1, explain(r));
      assert.match(r.stderr, /pod dmctl-backup-held-claim-[a-z0-9]+ did not start within 8s/);
      assert.doesNotMatch(r.stderr, /forbidden|Multi-Attach/i);
      assert.deepEqual(leftovers(), []);
    } finally {
      api.allowAll();
      runner.clearAttachConflict(NS, 'held-claim');
    }
  });

  it('a ReadWriteOncePod claim used by another pod is one line naming the claim and that pod; nothing is left', async () => {
    api.create('persistentvolumeclaims', NS, { metadata: { name: 'solo-claim' }, spec: { accessModes: ['ReadWriteOncePod'], volumeName: 'pvc-77aa0b1c' }, status: { phase: 'Bound' } });
    api.create('pods', NS, { metadata: { name: 'db-0' }, spec: { restartPolicy: 'Never', containers: [{ name: 'db', image: IMG, command: ['sleep', '120'] }], volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'solo-claim' } }] } });
    try {
      await runningPod('db-0', 'db');
      const r = await dm(['backup', '--kube', '--pvc', 'solo-claim', ...repoArgs(), '--timeout', '90s']);
      assert.equal(r.code, 1, explain(r));
      assert.match(r.stderr, /persistentvolumeclaim "solo-claim" is in use by pod db-0 \(ReadWriteOncePod: pod dmctl-backup-solo-claim-[a-z0-9]+ cannot be scheduled\)/);
      assert.deepEqual(leftovers(), []);
      assert.deepEqual(runner.running(), [`${NS}/db-0`]);
    } finally {
      api.remove('pods', NS, 'db-0');
    }
    await waitFor('the pod processes to end', () => runner.running().length === 0 || undefined, 10_000);
  });

  describe('server users and readiness', () => {
    let fingerprint = '';
    const alicePw = () => path.join(tmp, 'alice.pw');
    const aliceNewPw = () => path.join(tmp, 'alice-new.pw');

    /** A client talking to the server pod directly, as another pod of the cluster would. */
    async function asAlice(pwPath: string): Promise<RunResult> {
      const port = runner.servicePort(NS, 'dm', '8000');
      assert.ok(port, 'the server pod serves');
      const pw = (await fsp.readFile(pwPath, 'utf8')).trim();
      return run(process.execPath, [DMCTL_BIN, 'snapshots', '--repo', `rest:https://alice:${encodeURIComponent(pw)}@127.0.0.1:${port}/`, '--server-cert-fingerprint', fingerprint, '--password-file', pwPath], { env: { HOME: tmp, NO_COLOR: '1', DM_PASSWORD: undefined, DM_PASSWORD_FILE: undefined } });
    }

    before(async () => {
      await fsp.writeFile(alicePw(), 'alice-first-pw\n');
      await fsp.writeFile(aliceNewPw(), 'alice-second-pw\n');
      const r = await dm(['server', 'start', '--kube', '--name', 'dm', '--repo-pvc', 'repo-claim', '--repo', 'repo', '--password-file', pwFile, '--json', '--timeout', '90s']);
      assert.equal(r.code, 0, explain(r));
      fingerprint = (JSON.parse(r.stdout.toString()) as { fingerprint: string }).fingerprint;
      for (const [u, f] of [['alice', alicePw()], ['bob', alicePw()]] as const) {
        const a = await dm(['server', 'users', 'add', u, '--kube', '--name', 'dm', '--password-file', f]);
        assert.equal(a.code, 0, explain(a));
      }
    });

    it('users list --kube shows the users of the credentials Secret', async () => {
      const r = await dm(['server', 'users', 'list', '--kube', '--name', 'dm', '--json']);
      assert.equal(r.code, 0, explain(r));
      assert.deepEqual(JSON.parse(r.stdout.toString()), [{ name: 'alice' }, { name: 'bob' }]);
      const plain = await dm(['server', 'users', 'list', '--kube', '--name', 'dm']);
      assert.deepEqual(plain.stdout.toString().trim().split('\n'), ['alice', 'bob']);
    });

    it('users set --kube changes the password: the old one stops working, the new one backs up', async () => {
      await waitFor('the server to accept alice', async () => ((await asAlice(alicePw())).code === 0 ? true : undefined));
      const r = await dm(['server', 'users', 'set', 'alice', '--kube', '--name', 'dm', '--password-file', aliceNewPw()]);
      assert.equal(r.code, 0, explain(r));
      const s = api.get('secrets', NS, 'dm-users')!;
      assert.equal(Buffer.from((s.data as Record<string, string>).alice!, 'base64').toString(), 'alice@dmctl:alice-second-pw');
      const old = await waitFor('the old password to be refused', async () => {
        const x = await asAlice(alicePw());
        return x.code !== 0 ? x : undefined;
      });
      assert.match(old.stderr, /denied|unauthori[sz]ed|401|wrong password|no key/i);
      const fresh = await asAlice(aliceNewPw());
      assert.equal(fresh.code, 0, fresh.stderr);
      const b = await dm(['backup', '--kube', '--pvc', 'src-claim', '--server', 'dm', '--user', 'alice', '--tag', 'after-set', '--json']);
      assert.equal(b.code, 0, explain(b));
      assert.ok((await snapshots()).some((x) => x.tags?.includes('after-set')));
      assert.deepEqual(leftovers(), []);
    });

    it('users remove --kube makes the user\'s backup fail with a clear line', async () => {
      const r = await dm(['server', 'users', 'remove', 'alice', '--kube', '--name', 'dm']);
      assert.equal(r.code, 0, explain(r));
      assert.equal((api.get('secrets', NS, 'dm-users')!.data as Record<string, string>).alice, undefined);
      const b = await dm(['backup', '--kube', '--pvc', 'src-claim', '--server', 'dm', '--user', 'alice']);
      assert.notEqual(b.code, 0);
      assert.match(b.stderr, /user alice not found on server dm/);
      // The server itself refuses alice's credential once it has seen the Secret change.
      await waitFor('the server to refuse alice', async () => ((await asAlice(aliceNewPw())).code !== 0 ? true : undefined));
      assert.deepEqual(leftovers(), []);
    });

    it('a server that never becomes ready fails after --timeout with one line', async () => {
      runner.failReadiness = (_ns, pod) => pod.startsWith('never-');
      try {
        const t0 = Date.now();
        const r = await dm(['server', 'start', '--kube', '--name', 'never', '--repo-pvc', 'repo-claim', '--repo', 'repo', '--password-file', pwFile, '--timeout', '4s']);
        assert.notEqual(r.code, 0, explain(r));
        assert.match(r.stderr, /server never not ready within 4s \(pod never-[a-z0-9-]+ is Running\)/);
        assert.match(r.stderr, /dmctl server stop --kube --name never/);
        assert.ok(Date.now() - t0 < 60_000);
      } finally {
        runner.failReadiness = undefined;
      }
      const stop = await dm(['server', 'stop', '--kube', '--name', 'never']);
      assert.equal(stop.code, 0, explain(stop));
      const stopDm = await dm(['server', 'stop', '--kube', '--name', 'dm']);
      assert.equal(stopDm.code, 0, explain(stopDm));
      // Events are the cluster's record (they expire on their own), not objects dmctl made.
      assert.deepEqual(api.all().filter((o) => o.resource !== 'persistentvolumeclaims' && o.resource !== 'events'), []);
      await waitFor('every pod process to end', () => runner.running().length === 0 || undefined, 15_000);
    });
  });
});
