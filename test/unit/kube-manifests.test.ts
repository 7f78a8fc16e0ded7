// Every object dmctl creates in a cluster, checked against the Kubernetes API types of @kubernetes/client-node
// 1.4: the library's ObjectSerializer drops fields its models do not know, so a deserialize → serialize round trip
// that loses nothing means every field is a real API field with the right shape. Plus the consistency rules the API
// server enforces (names, selectors, volume references), and the one-line errors read from pod status.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
// Not re-exported from the package index in 1.4; the generated models' serializer is the source of truth.
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { datamoverPod, dumpPod, maintenancePod, rbacRole, repoSecret, serverObjects, type PodObj, type RepoAccess } from '../../src/kube/manifests.js';
import { collectStorageEnv, locationHasCredentials } from '../../src/kube/storage-env.js';
import { attachConflict, kubeError, podProblem } from '../../src/kube/errors.js';
import { kubeRequested } from '../../src/kube/cli.js';

const TYPES: Record<string, string> = { Secret: 'V1Secret', ConfigMap: 'V1ConfigMap', Deployment: 'V1Deployment', Service: 'V1Service', Pod: 'V1Pod', Role: 'V1Role' };
const DNS1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function roundTrip(obj: { kind?: string }): void {
  const type = TYPES[obj.kind ?? '']!;
  assert.ok(type, `known kind ${obj.kind}`);
  const json = JSON.parse(JSON.stringify(obj));
  // JSON round trip of the result drops the undefined keys the serializer writes for absent fields.
  const back = JSON.parse(JSON.stringify(ObjectSerializer.serialize(ObjectSerializer.deserialize(json, type, ''), type, '')));
  assert.deepEqual(back, json, `${obj.kind} survives the client-node ${type} round trip`);
}

const server = { name: 'dm', namespace: 'backup', clientId: 'alice', fingerprint: 'ab'.repeat(32) };
const srv = serverObjects({
  name: 'dm',
  namespace: 'backup',
  image: 'dmctl:test',
  repo: '/srv/repo',
  repoClaim: 'repo-claim',
  repoPassword: 'pw',
  storageEnv: { AWS_ACCESS_KEY_ID: 'AK', AWS_SECRET_ACCESS_KEY: 'SK' },
  tlsCert: 'CERT',
  tlsKey: 'KEY',
  credentials: { alice: 'alice@dmctl:pw' },
  memoryLimit: '1Gi',
});
const pods: PodObj[] = [
  datamoverPod({ namespace: 'backup', image: 'dmctl:test', operation: 'backup', claim: 'data', subPath: 'app', selector: 'nightly', host: 'data.backup', server, memoryLimit: '512Mi' }),
  datamoverPod({ namespace: 'backup', image: 'dmctl:test', operation: 'restore', claim: 'data', selector: 'latest', server }),
  dumpPod({ namespace: 'backup', image: 'dmctl:test', dumpImage: 'postgres:16', command: ['pg_dump', 'db'], operation: 'backup', streamName: 'db.sql', server }),
  dumpPod({ namespace: 'backup', image: 'dmctl:test', dumpImage: 'postgres:16', command: ['psql', 'db'], operation: 'restore', streamName: 'db.sql', selector: 'latest', server }),
  maintenancePod({ namespace: 'backup', image: 'dmctl:test', server: 'dm', command: 'prune', args: ['--max-unused', '5%'], repo: '/srv/repo', repoClaim: 'repo-claim', storageEnvKeys: ['AWS_ACCESS_KEY_ID'] }),
];
// Pods that go straight to a repository through a short-lived Secret.
const onClaim: RepoAccess = { secret: 'dmctl-backup-data-x1-repo', location: '/srv/repo/r', claim: 'repo-claim' };
const inCloud: RepoAccess = { secret: 'dmctl-dump-x2-repo', location: 'rest:https://u:p@h/', locationInSecret: true, envKeys: ['AWS_SECRET_ACCESS_KEY'], fileKeys: ['GOOGLE_APPLICATION_CREDENTIALS'] };
const repoPods: PodObj[] = [
  datamoverPod({ name: 'dmctl-backup-data-x1', namespace: 'backup', image: 'dmctl:test', operation: 'backup', claim: 'data', selector: '', repo: onClaim }),
  datamoverPod({ namespace: 'backup', image: 'dmctl:test', operation: 'restore', claim: 'data', selector: 'latest', repo: onClaim }),
  dumpPod({ name: 'dmctl-dump-x2', namespace: 'backup', image: 'dmctl:test', dumpImage: 'postgres:16', command: ['pg_dump', 'db'], operation: 'backup', streamName: 'db.sql', repo: inCloud }),
  maintenancePod({ namespace: 'backup', image: 'dmctl:test', command: 'check', args: [], access: onClaim }),
];
pods.push(...repoPods);
const shortSecret = repoSecret({ name: 'dmctl-dump-x2-repo', namespace: 'backup', pod: 'dmctl-dump-x2', password: 'pw-123', location: 'rest:https://u:p@h/', env: { AWS_SECRET_ACCESS_KEY: 'sk-9' }, files: { GOOGLE_APPLICATION_CREDENTIALS: '{"k":1}' } });

describe('manifests against the @kubernetes/client-node 1.4 types', () => {
  it('the round trip really drops unknown fields (so the check can fail)', () => {
    const bad = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [{ name: 'a', image: 'b', volumeMount: [] }] } };
    assert.throws(() => roundTrip(bad), /round trip/);
  });

  it('server objects: 3 secrets, configmap, deployment, service lose no field', () => {
    for (const o of [...srv.secrets, srv.configMap, srv.deployment, srv.service]) roundTrip(o);
  });

  it('pods (datamover, dump, maintenance) and the Role lose no field', () => {
    for (const p of pods) roundTrip(p);
    roundTrip(rbacRole('dmctl', 'backup'));
  });

  it('every object is labelled as dmctl\'s and named as the API requires', () => {
    for (const o of [...srv.secrets, srv.configMap, srv.deployment, srv.service, ...pods]) {
      assert.equal(o.metadata.labels?.['app.kubernetes.io/managed-by'], 'dmctl', o.metadata.name);
      assert.match(o.metadata.name, DNS1123);
      assert.ok(o.metadata.name.length <= 63);
    }
    const long = datamoverPod({ namespace: 'n', image: 'i', operation: 'backup', claim: 'x'.repeat(80), selector: '', server });
    assert.ok(long.metadata.name.length <= 63 && DNS1123.test(long.metadata.name));
  });

  it('required fields: containers name+image, mounts reference volumes, selectors match', () => {
    const specs = [srv.deployment.spec!.template.spec!, ...pods.map((p) => p.spec!)];
    for (const s of specs) {
      const vols = new Set((s.volumes ?? []).map((v) => v.name));
      for (const c of s.containers) {
        assert.ok(c.name && c.image);
        for (const m of c.volumeMounts ?? []) assert.ok(vols.has(m.name), `${c.name} mounts ${m.name}`);
      }
    }
    const sel = srv.deployment.spec!.selector.matchLabels!;
    for (const [k, v] of Object.entries(sel)) assert.equal(srv.deployment.spec!.template.metadata!.labels![k], v);
    for (const [k, v] of Object.entries(srv.service.spec!.selector!)) assert.equal(srv.deployment.spec!.template.metadata!.labels![k], v);
    assert.equal(srv.service.spec!.ports![0]!.targetPort, srv.deployment.spec!.template.spec!.containers[0]!.ports![0]!.containerPort);
  });

  it('the server follows the seed contract: mounts, PROTOCOLS, probes on /readyz and /healthz, tls secret type', () => {
    const c = srv.deployment.spec!.template.spec!.containers[0]!;
    const mounts = Object.fromEntries(c.volumeMounts!.map((m) => [m.mountPath, m.name]));
    assert.equal(mounts['/etc/config'], 'config');
    assert.equal(mounts['/etc/client_credentials'], 'client-credentials');
    assert.equal(mounts['/etc/secrets/dm-storage'], 'storage');
    assert.equal(mounts['/etc/secrets/dm-tls'], 'tls');
    assert.equal(c.env!.find((e) => e.name === 'PROTOCOLS')!.value, 'restic-rest:8000');
    assert.equal(c.readinessProbe!.httpGet!.path, '/readyz');
    assert.equal(c.livenessProbe!.httpGet!.path, '/healthz');
    assert.equal(c.readinessProbe!.httpGet!.scheme, 'HTTPS');
    assert.equal(srv.secrets.find((s) => s.metadata.name === 'dm-tls')!.type, 'kubernetes.io/tls');
    // Secrets never travel in args or plain env values.
    assert.ok(!JSON.stringify(c.args).includes('pw') && !c.env!.some((e) => e.value === 'AK' || e.value === 'SK'));
    assert.deepEqual(c.env!.find((e) => e.name === 'AWS_ACCESS_KEY_ID')!.valueFrom, { secretKeyRef: { name: 'dm-storage', key: 'env.AWS_ACCESS_KEY_ID' } });
  });

  it('backup mounts the claim read-only with the sub-path; the client secret holds only its own key', () => {
    const b = pods[0]!;
    const m = b.spec!.containers[0]!.volumeMounts!.find((x) => x.name === 'data')!;
    assert.equal(m.readOnly, true);
    assert.equal(m.subPath, 'app');
    assert.equal(b.spec!.volumes!.find((v) => v.name === 'data')!.persistentVolumeClaim!.readOnly, true);
    assert.deepEqual(b.spec!.volumes!.find((v) => v.name === 'client-credentials')!.secret!.items, [{ key: 'alice', path: 'alice' }]);
    assert.deepEqual(b.spec!.containers[0]!.args!.slice(0, 4), ['datamover', 'backup_files', '/data', 'nightly']);
    assert.equal(b.spec!.restartPolicy, 'Never');
    assert.equal(JSON.parse(b.spec!.containers[0]!.env!.find((e) => e.name === 'SERVER_DATA')!.value!).fingerprint, server.fingerprint);
  });

  it('the dump pod shares one emptyDir and reports the command status', () => {
    const d = pods[2]!;
    const [dump, dm] = d.spec!.containers;
    assert.equal(dump!.image, 'postgres:16');
    assert.deepEqual(dump!.command!.slice(3), ['dmctl-dump', 'pg_dump', 'db']);
    assert.match(dump!.command![2]!, /"\$@" > \/dump\/stream; s=\$\?/);
    assert.deepEqual(dm!.args!.slice(0, 3), ['datamover', 'backup_stream', '/dump/stream']);
    assert.ok(dm!.args!.includes('--status-file'));
    assert.deepEqual(d.spec!.volumes![0], { name: 'dump', emptyDir: {} });
  });
});

describe('one-line errors from API answers and pod status', () => {
  const pod = (status: object, limit?: string) => ({ metadata: { name: 'p1' }, spec: { containers: [{ name: 'datamover', ...(limit ? { resources: { limits: { memory: limit } } } : {}) }] }, status });

  it('OOMKilled names the container and the limit', () => {
    const e = podProblem(pod({ phase: 'Failed', containerStatuses: [{ name: 'datamover', state: { terminated: { exitCode: 137, reason: 'OOMKilled' } } }] }, '512Mi'));
    assert.equal(e?.message, 'pod p1: container datamover was killed for running out of memory (OOMKilled, limit 512Mi)');
  });

  it('evicted, image pull, missing claim', () => {
    assert.match(podProblem(pod({ phase: 'Failed', reason: 'Evicted', message: 'The node was low on resource: ephemeral-storage.' }))!.message, /^pod p1 was evicted: The node was low on resource: ephemeral-storage\.$/);
    assert.equal(
      podProblem(pod({ phase: 'Pending', containerStatuses: [{ name: 'datamover', image: 'x/y:1', state: { waiting: { reason: 'ImagePullBackOff' } } }] }))!.message,
      'pod p1: cannot pull image x/y:1 for container datamover (ImagePullBackOff)',
    );
    assert.match(podProblem(pod({ phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/3 nodes are available: persistentvolumeclaim "data" not found.' }] }))!.message, /^persistentvolumeclaim "data" not found/);
    assert.equal(podProblem(pod({ phase: 'Running', containerStatuses: [{ name: 'datamover', state: { running: {} } }] })), undefined);
  });

  it('403 names verb and resource from the API message; 404/unreachable are one line', () => {
    const body = JSON.stringify({ kind: 'Status', code: 403, reason: 'Forbidden', message: 'secrets "dm-users" is forbidden: User "bob" cannot patch resource "secrets" in API group "" in the namespace "ns"' });
    assert.equal(kubeError({ code: 403, body }, { verb: 'patch', resource: 'secrets', name: 'dm-users', namespace: 'ns' }).message, 'forbidden: cannot patch secrets "dm-users" in namespace ns (RBAC)');
    assert.equal(kubeError({ code: 404, body: '{}' }, { verb: 'get', resource: 'deployments', name: 'dm', namespace: 'ns' }).message, 'deployments "dm" in namespace ns not found');
    const un = kubeError(Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } }), { verb: 'get', resource: 'pods' }, 'https://k:6443');
    assert.equal(un.message, 'cannot reach the Kubernetes API server at https://k:6443 (ECONNREFUSED)');
  });

  it('a FailedAttachVolume Multi-Attach Event names the claim (through its volume) and the pods holding it', () => {
    const claims = [{ name: 'data', volumeName: 'pvc-1234' }, { name: 'repo', volumeName: 'pvc-9999' }];
    const ev = (message: string, reason = 'FailedAttachVolume') => ({ reason, message });
    assert.equal(
      attachConflict('p1', ev('Multi-Attach error for volume "pvc-1234" Volume is already used by pod(s) web-0'), claims)?.message,
      'persistentvolumeclaim "data" is in use by pod web-0 on another node (pod p1 cannot attach volume pvc-1234: Multi-Attach error)',
    );
    const two = attachConflict('p1', ev('Multi-Attach error for volume "pvc-9999" Volume is already used by pod(s) a-1, b-2 and 3 pod(s) in different namespaces'), claims)!;
    assert.equal(two.code, 'kube-claim-in-use');
    assert.match(two.message, /^persistentvolumeclaim "repo" is in use by pods a-1, b-2 and 3 pod\(s\) in other namespaces on another node/);
    assert.match(attachConflict('p1', ev('Multi-Attach error for volume "pvc-1234" Volume is already used by 2 pod(s) in different namespaces'), claims)!.message, /^persistentvolumeclaim "data" is in use by 2 pod\(s\) in other namespaces on another node/);
    assert.match(attachConflict('p1', ev('Multi-Attach error for volume "pvc-1234" Volume is already exclusively attached to one node and can\'t be attached to another'), claims)!.message, /^persistentvolumeclaim "data" is attached to another node \(pod p1 cannot attach volume pvc-1234/);
    // An unknown volume with several claims is named as the volume; other attach failures are not a claim in use.
    assert.match(attachConflict('p1', ev('Multi-Attach error for volume "pvc-7777" Volume is already used by pod(s) x'), claims)!.message, /^volume "pvc-7777" \(one of the claims data, repo\) is in use by pod x/);
    assert.equal(attachConflict('p1', ev('AttachVolume.Attach failed for volume "pvc-1234" : rpc error: timed out'), claims), undefined);
    assert.equal(attachConflict('p1', ev('Multi-Attach error for volume "pvc-1234" Volume is already used by pod(s) x', 'FailedMount'), claims), undefined);
  });

  it('a ReadWriteOncePod claim held by another pod is claim-in-use', () => {
    const e = podProblem(pod({ phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/1 nodes are available: 1 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.' }] }));
    assert.equal(e?.code, 'kube-claim-in-use');
    assert.match(e!.message, /ReadWriteOncePod: pod p1 cannot be scheduled/);
  });

  it('the Role lets dmctl list events (to read why a pod stays Pending), nothing more on them', () => {
    const rules = rbacRole('dmctl', 'ns').rules!.filter((r) => r.resources?.includes('events'));
    assert.deepEqual(rules.map((r) => ({ groups: r.apiGroups, verbs: r.verbs })), [{ groups: [''], verbs: ['list'] }]);
  });

  it('--kube is recognised only before `--`', () => {
    assert.equal(kubeRequested(['--pvc', 'x', '--kube']), true);
    assert.equal(kubeRequested(['--name', 'x', '--', 'tool', '--kube']), false);
    assert.ok(crypto);
  });
});

describe('pods straight to a repository', () => {
  it('the short-lived Secret and the pods lose no field in the client-node round trip', () => {
    roundTrip(shortSecret);
    roundTrip(repoSecret({ name: 's', namespace: 'n', pod: 'p', password: '<redacted>', placeholders: true }));
    for (const p of repoPods) roundTrip(p);
  });

  it('the password, storage credentials and a URL with credentials come from the Secret, never plain env or args', () => {
    const d = (shortSecret.data ?? {}) as Record<string, string>;
    assert.deepEqual(Object.keys(d).sort(), ['env.AWS_SECRET_ACCESS_KEY', 'file.GOOGLE_APPLICATION_CREDENTIALS', 'password', 'repository']);
    assert.equal(Buffer.from(d.password!, 'base64').toString(), 'pw-123');
    const c = repoPods[2]!.spec!.containers.find((x) => x.name === 'datamover')!;
    const env = Object.fromEntries(c.env!.map((e) => [e.name, e]));
    assert.deepEqual(env.DM_REPOSITORY!.valueFrom, { secretKeyRef: { name: 'dmctl-dump-x2-repo', key: 'repository' } });
    assert.deepEqual(env.AWS_SECRET_ACCESS_KEY!.valueFrom, { secretKeyRef: { name: 'dmctl-dump-x2-repo', key: 'env.AWS_SECRET_ACCESS_KEY' } });
    assert.equal(env.DM_PASSWORD_FILE!.value, '/etc/secrets/dmctl-dump-x2-repo/password');
    assert.equal(env.GOOGLE_APPLICATION_CREDENTIALS!.value, '/etc/secrets/dmctl-dump-x2-repo/file.GOOGLE_APPLICATION_CREDENTIALS');
    // The dump container (another image) sees neither the Secret nor the variables.
    const dump = repoPods[2]!.spec!.containers.find((x) => x.name === 'dump')!;
    assert.equal(dump.env, undefined);
    assert.ok(!dump.volumeMounts!.some((m) => m.name === 'repo-secret'));
    for (const p of repoPods) assert.ok(!JSON.stringify(p.spec).includes('u:p@') && !JSON.stringify(p.spec).includes('pw-123'));
  });

  it('the repository claim is mounted read-write at /srv/repo, the data claim of a backup read-only', () => {
    const b = repoPods[0]!.spec!;
    const mounts = Object.fromEntries(b.containers[0]!.volumeMounts!.map((m) => [m.name, m]));
    assert.equal(mounts.repo!.mountPath, '/srv/repo');
    assert.notEqual(mounts.repo!.readOnly, true);
    assert.equal(mounts.data!.readOnly, true);
    assert.equal(mounts['repo-secret']!.readOnly, true);
    assert.equal(b.volumes!.find((v) => v.name === 'repo')!.persistentVolumeClaim!.claimName, 'repo-claim');
    const m = repoPods[3]!.spec!.containers[0]!;
    assert.deepEqual(m.args, ['check']);
    assert.equal(m.env!.find((e) => e.name === 'DM_REPOSITORY')!.value, '/srv/repo/r');
  });

  it('storage variables: the provider\'s own when set, --storage-env ones, credential files by contents', async () => {
    const env = { AWS_ACCESS_KEY_ID: 'AK', AWS_SECRET_ACCESS_KEY: 'SK', AZURE_ACCOUNT_KEY: 'AZ', MY_VAR: 'x' };
    assert.deepEqual(await collectStorageEnv('s3:https://h/b', [], { env }), { env: { AWS_ACCESS_KEY_ID: 'AK', AWS_SECRET_ACCESS_KEY: 'SK' }, files: {} });
    assert.deepEqual(await collectStorageEnv('azure:c:/p', ['MY_VAR'], { env }), { env: { MY_VAR: 'x', AZURE_ACCOUNT_KEY: 'AZ' }, files: {} });
    assert.deepEqual(await collectStorageEnv('/srv/repo/r', [], { env }), { env: {}, files: {} });
    assert.deepEqual(await collectStorageEnv('s3:https://h/b', [], { env, placeholders: true }), { env: { AWS_ACCESS_KEY_ID: '<from $AWS_ACCESS_KEY_ID>', AWS_SECRET_ACCESS_KEY: '<from $AWS_SECRET_ACCESS_KEY>' }, files: {} });
    await assert.rejects(collectStorageEnv('s3:https://h/b', ['UNSET_VAR_X'], { env }), /--storage-env UNSET_VAR_X: not set/);
    const gcs = await collectStorageEnv('gs:b:/p', [], { env: { GOOGLE_APPLICATION_CREDENTIALS: new URL(import.meta.url).pathname } });
    assert.deepEqual(Object.keys(gcs.files), ['GOOGLE_APPLICATION_CREDENTIALS']);
    assert.match(gcs.files.GOOGLE_APPLICATION_CREDENTIALS!, /pods straight to a repository/);
    assert.equal(locationHasCredentials('rest:https://u:p@h:8000/'), true);
    assert.equal(locationHasCredentials('rest:https://h:8000/'), false);
    assert.equal(locationHasCredentials('s3:https://s3.example/b'), false);
  });
});
