// The repository server in a cluster: start (idempotent apply + wait until ready), status (objects, pod state,
// the server's own health through the API server's service proxy), users (the credentials Secret the server
// watches), refresh (a rolling restart), stop (delete every object of the server).
import crypto from 'node:crypto';
import type { ProgressFn } from '../core/progress.js';
import { UsageError } from '../core/errors.js';
import { certFingerprint, generateSelfSigned } from '../server/tls.js';
import type { KObject, KubeClient } from './client.js';
import { KubeError, podProblem } from './errors.js';
import { PROTOCOL, SERVER_PORT, serverLabels, serverNames, serverObjects, serverUrl, type ServerManifestOptions, type ServerRef } from './manifests.js';

export interface StartInput extends Omit<ServerManifestOptions, 'tlsCert' | 'tlsKey' | 'namespace'> {
  tlsCert?: string;
  tlsKey?: string;
}

export interface ServerInfo {
  name: string;
  namespace: string;
  url: string;
  fingerprint: string;
  protocol: string;
  port: number;
  ready: boolean;
}

/** The objects `server start` would create (for --dry-run), with a generated certificate unless given. */
export async function serverStartObjects(client: { namespace: string } & Partial<KubeClient>, i: StartInput): Promise<KObject[]> {
  const o = await withTls(client, i);
  const objs = serverObjects({ ...o, namespace: client.namespace });
  return [...objs.secrets, objs.configMap, objs.deployment, objs.service] as unknown as KObject[];
}

async function withTls(client: Partial<KubeClient> & { namespace: string }, i: StartInput): Promise<ServerManifestOptions & { keepTls: boolean }> {
  if (i.tlsCert && i.tlsKey) return { ...i, tlsCert: i.tlsCert, tlsKey: i.tlsKey, namespace: client.namespace, keepTls: false };
  // Reuse the certificate of an earlier start, so clients keep their pinned fingerprint.
  const existing = client.get ? await client.get('v1', 'Secret', serverNames(i.name).tls) : undefined;
  const data = existing?.data as Record<string, string> | undefined;
  if (data?.['tls.crt'] && data['tls.key']) {
    return { ...i, tlsCert: Buffer.from(data['tls.crt'], 'base64').toString(), tlsKey: Buffer.from(data['tls.key'], 'base64').toString(), namespace: client.namespace, keepTls: true };
  }
  const hosts = [i.name, `${i.name}.${client.namespace}`, `${i.name}.${client.namespace}.svc`, `${i.name}.${client.namespace}.svc.cluster.local`];
  const t = generateSelfSigned(hosts);
  return { ...i, tlsCert: t.cert, tlsKey: t.key, namespace: client.namespace, keepTls: false };
}

export async function startServerInCluster(client: KubeClient, i: StartInput, o: { progress?: ProgressFn; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ServerInfo> {
  const progress = o.progress ?? (() => {});
  if (i.repoClaim && !(await client.get('v1', 'PersistentVolumeClaim', i.repoClaim))) {
    throw new KubeError('claim-not-found', `persistentvolumeclaim "${i.repoClaim}" not found in namespace ${client.namespace}`, 'check --repo-pvc and --namespace');
  }
  const m = await withTls(client, i);
  const objs = serverObjects(m);
  for (const s of objs.secrets) {
    const keep = s.type === 'kubernetes.io/tls' && m.keepTls ? ['data'] : s.metadata.name === serverNames(i.name).users && !i.credentials ? ['data'] : [];
    progress({ phase: 'apply', item: `secret/${s.metadata.name}` });
    await client.apply(s as unknown as KObject, { keep });
  }
  for (const obj of [objs.configMap, objs.deployment, objs.service]) {
    progress({ phase: 'apply', item: `${obj.kind!.toLowerCase()}/${obj.metadata.name}` });
    await client.apply(obj as unknown as KObject);
  }
  await waitReady(client, i.name, { progress, timeoutMs: o.timeoutMs ?? 300_000, signal: o.signal });
  return { name: i.name, namespace: client.namespace, url: serverUrl(i.name, client.namespace), fingerprint: certFingerprint(m.tlsCert), protocol: PROTOCOL, port: SERVER_PORT, ready: true };
}

async function serverPods(client: KubeClient, name: string): Promise<KObject[]> {
  const l = serverLabels(name);
  return client.list('v1', 'Pod', `app.kubernetes.io/name=${l['app.kubernetes.io/name']},app.kubernetes.io/instance=${name}`);
}

export async function waitReady(client: KubeClient, name: string, o: { progress?: ProgressFn; timeoutMs: number; signal?: AbortSignal }): Promise<void> {
  const deadline = Date.now() + o.timeoutMs;
  let lastProblem: string | undefined;
  for (;;) {
    if (o.signal?.aborted) throw o.signal.reason;
    const d = await client.get('apps/v1', 'Deployment', name);
    if (!d) throw new KubeError('not-found', `deployment "${name}" not found in namespace ${client.namespace}`);
    const st = (d.status ?? {}) as { observedGeneration?: number; readyReplicas?: number; updatedReplicas?: number };
    const pods = await serverPods(client, name);
    for (const p of pods) {
      const pr = podProblem(p as Parameters<typeof podProblem>[0]);
      if (pr && /image-pull|claim|container-config|oom|evicted/.test(pr.code)) throw pr;
      if (pr) lastProblem = pr.message;
    }
    if ((st.observedGeneration ?? 0) >= (d.metadata.generation ?? 1) && (st.readyReplicas ?? 0) >= 1 && (st.updatedReplicas ?? 0) >= 1) return;
    o.progress?.({ phase: 'wait', item: `server ${name}: ${st.readyReplicas ?? 0}/1 ready` });
    if (Date.now() > deadline) {
      const p = pods[0];
      const ps = p ? ((p.status ?? {}) as { phase?: string; containerStatuses?: { restartCount?: number; state?: Record<string, { reason?: string }> }[] }) : undefined;
      const detail = lastProblem ?? (ps ? `pod ${p!.metadata.name} is ${ps.phase}${ps.containerStatuses?.[0]?.restartCount ? `, ${ps.containerStatuses[0].restartCount} restarts` : ''}` : 'no pod yet');
      throw new KubeError('not-ready', `server ${name} not ready within ${Math.round(o.timeoutMs / 1000)}s (${detail})`, `the Deployment stays and keeps trying: see its log with kubectl logs -n ${client.namespace} deployment/${name}, or remove it with dmctl server stop --kube --name ${name}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface ClusterServerStatus extends ServerInfo {
  pods: { name: string; phase: string; ready: boolean; restarts: number }[];
  healthy: boolean;
  serverReady: boolean;
  users: string[];
}

async function requireServer(client: KubeClient, name: string): Promise<KObject> {
  const d = await client.get('apps/v1', 'Deployment', name);
  if (!d || d.metadata.labels?.['app.kubernetes.io/managed-by'] !== 'dmctl') {
    throw new KubeError('not-found', `dmctl server ${name} not found in namespace ${client.namespace}`, 'start it with `dmctl server start --kube --name NAME`');
  }
  return d;
}

export async function serverFingerprint(client: KubeClient, name: string): Promise<string> {
  const s = await client.get('v1', 'Secret', serverNames(name).tls);
  const crt = (s?.data as Record<string, string> | undefined)?.['tls.crt'];
  if (!crt) throw new KubeError('not-found', `secret "${serverNames(name).tls}" of server ${name} not found in namespace ${client.namespace}`);
  return certFingerprint(Buffer.from(crt, 'base64').toString());
}

export async function clusterServerStatus(client: KubeClient, name: string): Promise<ClusterServerStatus> {
  const d = await requireServer(client, name);
  const pods = (await serverPods(client, name)).map((p) => {
    const st = (p.status ?? {}) as { phase?: string; conditions?: { type: string; status: string }[]; containerStatuses?: { restartCount?: number }[] };
    return { name: p.metadata.name, phase: st.phase ?? 'Unknown', ready: !!st.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'), restarts: st.containerStatuses?.reduce((a, c) => a + (c.restartCount ?? 0), 0) ?? 0 };
  });
  const probe = async (path: string) => client.proxyGet(name, SERVER_PORT, path).then((r) => r.status === 200, () => false);
  const [healthy, serverReady] = await Promise.all([probe('/healthz'), probe('/readyz')]);
  const users = await listClusterUsers(client, name);
  const st = (d.status ?? {}) as { readyReplicas?: number };
  return {
    name,
    namespace: client.namespace,
    url: serverUrl(name, client.namespace),
    fingerprint: await serverFingerprint(client, name),
    protocol: PROTOCOL,
    port: SERVER_PORT,
    ready: (st.readyReplicas ?? 0) >= 1,
    pods,
    healthy,
    serverReady,
    users,
  };
}

const USER_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Credentials are `user@host:password` under the client id = user name. */
export async function editClusterUser(client: KubeClient, name: string, action: 'add' | 'set' | 'remove', user: string, password?: string): Promise<{ user: string; action: string }> {
  if (!USER_RE.test(user)) throw new UsageError(`invalid user name ${user}`, 'letters, digits, . _ - (up to 63)');
  await requireServer(client, name);
  const secretName = serverNames(name).users;
  const s = await client.get('v1', 'Secret', secretName);
  if (!s) throw new KubeError('not-found', `secret "${secretName}" of server ${name} not found in namespace ${client.namespace}`);
  const exists = !!(s.data as Record<string, string> | undefined)?.[user];
  if (action === 'add' && exists) throw new KubeError('user-exists', `user ${user} already exists on server ${name}`, 'use `server users set` to change the password');
  if (action !== 'add' && !exists) throw new KubeError('no-user', `user ${user} not found on server ${name}`);
  if (action !== 'remove' && !password) throw new UsageError('a password is needed', 'pass --password-file FILE');
  const value = action === 'remove' ? null : Buffer.from(`${user}@dmctl:${password}`).toString('base64');
  // resourceVersion makes concurrent edits fail with 409 instead of losing one.
  await client.patch('v1', 'Secret', secretName, { metadata: { resourceVersion: s.metadata.resourceVersion }, data: { [user]: value } });
  return { user, action };
}

export async function listClusterUsers(client: KubeClient, name: string): Promise<string[]> {
  const s = await client.get('v1', 'Secret', serverNames(name).users);
  return Object.keys((s?.data as Record<string, string> | undefined) ?? {}).sort();
}

/** Restarts the server pod (new certificate, configuration), then waits until it is ready again. */
export async function refreshClusterServer(client: KubeClient, name: string, o: { progress?: ProgressFn; timeoutMs?: number } = {}): Promise<ServerInfo> {
  await requireServer(client, name);
  await client.patch('apps/v1', 'Deployment', name, { spec: { template: { metadata: { annotations: { 'dmctl.io/restarted-at': new Date().toISOString() } } } } });
  await waitReady(client, name, { progress: o.progress, timeoutMs: o.timeoutMs ?? 300_000 });
  return { name, namespace: client.namespace, url: serverUrl(name, client.namespace), fingerprint: await serverFingerprint(client, name), protocol: PROTOCOL, port: SERVER_PORT, ready: true };
}

/** Deletes every object of the server (deployment first, so no pod restarts against deleted secrets). */
export async function stopClusterServer(client: KubeClient, name: string, o: { progress?: ProgressFn; timeoutMs?: number } = {}): Promise<{ deleted: string[] }> {
  const n = serverNames(name);
  const deleted: string[] = [];
  const del = async (apiVersion: string, kind: string, obj: string) => {
    const cur = await client.get(apiVersion, kind, obj);
    if (!cur || cur.metadata.labels?.['app.kubernetes.io/managed-by'] !== 'dmctl') return;
    o.progress?.({ phase: 'delete', item: `${kind.toLowerCase()}/${obj}` });
    if (await client.delete(apiVersion, kind, obj)) deleted.push(`${kind.toLowerCase()}/${obj}`);
  };
  await del('apps/v1', 'Deployment', n.deployment);
  await del('v1', 'Service', n.service);
  await del('v1', 'ConfigMap', n.config);
  for (const s of [n.users, n.storage, n.tls]) await del('v1', 'Secret', s);
  if (!deleted.length) throw new KubeError('not-found', `dmctl server ${name} not found in namespace ${client.namespace}`);
  // Wait for the pods to go (the garbage collector removes them after the deployment).
  const deadline = Date.now() + (o.timeoutMs ?? 60_000);
  while ((await serverPods(client, name)).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 300));
  return { deleted };
}

/** What a datamover pod needs to reach a server as `user`. */
export async function serverRef(client: KubeClient, name: string, user: string | undefined): Promise<ServerRef> {
  await requireServer(client, name);
  const users = await listClusterUsers(client, name);
  const clientId = user ?? users[0];
  if (!clientId) throw new KubeError('no-user', `server ${name} has no users`, 'add one: dmctl server users add USER --kube --name ' + name);
  if (!users.includes(clientId)) throw new KubeError('no-user', `user ${clientId} not found on server ${name}`, `users: ${users.join(', ')}`);
  return { name, namespace: client.namespace, clientId, fingerprint: await serverFingerprint(client, name) };
}

export function newPassword(): string {
  return crypto.randomBytes(24).toString('base64url');
}
