// The kubelet, the deployment controller and the pod network of the Kubernetes stand-in: every pod created in
// KubeApiStandIn runs here as local processes of the freshly built dmctl (`node bin/run.js ARGS`).
// - Images: only `dmctl` images (…/dmctl, dmctl:TAG, …/dmctl@sha256:…) can run; anything else ends as a pull failure
//   (ErrImagePull, then ImagePullBackOff), the way a kubelet reports an image that does not exist.
// - Volumes: secret / configMap → files in a folder of the pod (items honoured, updated when the object changes; a
//   missing object keeps the pod in ContainerCreating and is retried until it exists, as the kubelet does);
//   persistentVolumeClaim → CLAIMS_ROOT/CLAIM (the claim object must exist, else the pod stays Unschedulable);
//   emptyDir → a folder of the pod. Container paths are mapped onto these folders by rewriting mount paths in the
//   command, args and env values (there are no mount namespaces here).
// - Env: value, valueFrom secretKeyRef / configMapKeyRef / fieldRef, envFrom secretRef / configMapRef.
// - Network: each declared containerPort gets a free 127.0.0.1 port (passed to `dmctl server start` as --address);
//   service names (NAME.NS.svc[.cluster.local][:PORT]) in env values resolve to it; the API's service proxy too.
// - Status: Pending → Running → Succeeded / Failed with exit codes; restartPolicy Always restarts the container;
//   the Ready condition follows the readiness probe (httpGet). Deployments get one pod (per template generation),
//   owned by the deployment, and readyReplicas. stdout and stderr of each container are its pod log.
// - Test hooks for what only a node can cause, reported the way a kubelet reports them: oomKill() (the container is
//   SIGKILLed; state.terminated reason OOMKilled, exitCode 137), evict() (every container killed; phase Failed, reason
//   Evicted and a message), and failReadiness (the readiness probe fails, so the pod stays Running but not Ready).
// - Claims in use elsewhere, reported the way a cluster reports them: attachConflict(ns, claim, pods) makes the claim's
//   volume attached to another node (a ReadWriteOnce disk), so a pod mounting it is scheduled but stays Pending with its
//   containers waiting in ContainerCreating, and the attach/detach controller records a Warning Event on the pod
//   (FailedAttachVolume, `Multi-Attach error for volume "PV" Volume is already used by pod(s) …`, source
//   attachdetach-controller; repeats bump its count) until the hook is cleared. A claim with the ReadWriteOncePod
//   access mode used by another live pod keeps the pod Unschedulable (the scheduler's VolumeRestrictions message,
//   and a FailedScheduling Event from default-scheduler) until that pod is gone.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { KObj, KubeApiStandIn, WatchEvent } from './kube-api.js';
import { DMCTL_BIN } from './run.js';

type Dict = Record<string, unknown>;

interface ContainerSpec {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: Dict }[];
  envFrom?: { secretRef?: { name: string }; configMapRef?: { name: string }; prefix?: string }[];
  ports?: { containerPort: number; name?: string }[];
  volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
  readinessProbe?: { httpGet?: { path?: string; port: number | string; scheme?: string }; periodSeconds?: number };
}

interface PodSpec {
  containers: ContainerSpec[];
  volumes?: { name: string; secret?: { secretName: string; items?: { key: string; path: string }[] }; configMap?: { name: string; items?: { key: string; path: string }[] }; persistentVolumeClaim?: { claimName: string; readOnly?: boolean }; emptyDir?: Dict }[];
  restartPolicy?: string;
}

interface ContainerState {
  spec: ContainerSpec;
  proc?: ChildProcess;
  /** Set by oomKill()/evict(): how the kill is reported once the process is gone. */
  killedAs?: { exitCode: number; reason: string; message?: string };
  status: Dict;
  restarts: number;
  ready: boolean;
  probeTimer?: NodeJS.Timeout;
}

interface RunningPod {
  ns: string;
  name: string;
  dir: string;
  volumes: Map<string, string>;
  ports: Map<number, number>;
  containers: ContainerState[];
  deleted: boolean;
  phase: string;
  /** Pod-level reason and message (Evicted). */
  reason?: string;
  message?: string;
  conditions: Dict[];
  spec: PodSpec;
}

export function isDmctlImage(image: string): boolean {
  const noDigest = image.split('@')[0]!;
  const last = noDigest.split('/').pop()!;
  return last.split(':')[0] === 'dmctl';
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export interface PodRunnerOptions {
  /** Folder holding one sub-folder per PersistentVolumeClaim name. */
  claimsRoot: string;
  /** Where pods get their folders (default: a temp folder). */
  workRoot?: string;
  /** Extra environment for every container (e.g. DM_LOG_LEVEL). */
  env?: Record<string, string>;
}

export class PodRunner {
  private pods = new Map<string, RunningPod>();
  private workRoot = '';
  private readonly onEvent = (e: WatchEvent) => void this.handle(e).catch((err) => process.stderr.write(`pod-runner: ${(err as Error).stack}\n`));
  /** Log of what happened (for test failure messages). */
  readonly history: string[] = [];
  /** Test hook: while it answers true for a pod, that pod's readiness probe fails (the server never becomes Ready). */
  failReadiness: ((ns: string, pod: string) => boolean) | undefined;
  /** Claims (ns/claim) whose volume is attached to another node, with the pods using it there. */
  private attached = new Map<string, string[]>();

  constructor(readonly api: KubeApiStandIn, readonly opts: PodRunnerOptions) {}

  async start(): Promise<void> {
    this.workRoot = this.opts.workRoot ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'dm-pods-')));
    this.api.serviceResolver = (ns, name, port) => this.resolveService(ns, name, port);
    this.api.events.on('event', this.onEvent);
    for (const d of this.api.list('deployments')) await this.reconcileDeployment(d);
    for (const p of this.api.list('pods')) void this.startPod(p);
  }

  async stop(): Promise<void> {
    this.api.events.off('event', this.onEvent);
    await Promise.all([...this.pods.values()].map((p) => this.killPod(p)));
    this.pods.clear();
    await fsp.rm(this.workRoot, { recursive: true, force: true });
  }

  /** Test hook: the kernel's OOM killer kills one container of a running pod (as with a memory limit hit). */
  async oomKill(ns: string, pod: string, container: string): Promise<void> {
    const p = this.pods.get(`${ns}/${pod}`);
    const c = p?.containers.find((x) => x.spec.name === container);
    if (!p || !c?.proc) throw new Error(`pod-runner: no running container ${ns}/${pod}/${container}`);
    this.history.push(`oom-kill ${ns}/${pod}/${container}`);
    c.killedAs = { exitCode: 137, reason: 'OOMKilled' };
    c.proc.kill('SIGKILL');
  }

  /** Test hook: the kubelet evicts a pod under node pressure: all containers are killed, the pod ends Failed/Evicted. */
  async evict(ns: string, pod: string, message: string): Promise<void> {
    const p = this.pods.get(`${ns}/${pod}`);
    if (!p) throw new Error(`pod-runner: no pod ${ns}/${pod}`);
    this.history.push(`evict ${ns}/${pod}`);
    p.reason = 'Evicted';
    p.message = message;
    const waits: Promise<void>[] = [];
    for (const c of p.containers) {
      if (!c.proc || c.proc.exitCode !== null || c.proc.signalCode !== null) continue;
      c.killedAs = { exitCode: 137, reason: 'Error' };
      waits.push(new Promise<void>((r) => c.proc!.once('close', () => r())));
      c.proc.kill('SIGKILL');
    }
    await Promise.all(waits);
    p.phase = 'Failed';
    this.setPodStatus(p);
  }

  /**
   * Test hook: the claim's volume is attached to another node, used there by `pods` (of this namespace; [] = no pod
   * known, "exclusively attached to one node"). Pods mounting it stay Pending/ContainerCreating with FailedAttachVolume
   * Events until clearAttachConflict().
   */
  attachConflict(ns: string, claim: string, pods: string[]): void {
    this.history.push(`attach-conflict ${ns}/${claim} (used by ${pods.join(', ') || 'another node'})`);
    this.attached.set(`${ns}/${claim}`, [...pods]);
  }

  clearAttachConflict(ns: string, claim: string): void {
    this.attached.delete(`${ns}/${claim}`);
  }

  /** The local port serving a service's port (tests reach a server pod directly, as a client inside the cluster would). */
  servicePort(ns: string, name: string, port = ''): number | undefined {
    return this.resolveService(ns, name, port)?.port;
  }

  /** Processes still running (tests assert none are left). */
  running(): string[] {
    return [...this.pods.values()].filter((p) => p.containers.some((c) => c.proc && c.proc.exitCode === null && c.proc.signalCode === null)).map((p) => `${p.ns}/${p.name}`);
  }

  private async handle(e: WatchEvent): Promise<void> {
    const o = e.object;
    const ns = o.metadata.namespace!;
    if (e.resource === 'deployments') {
      if (e.type !== 'DELETED') await this.reconcileDeployment(o);
    } else if (e.resource === 'pods') {
      const key = `${ns}/${o.metadata.name}`;
      // A failure inside the runner itself must show in the history, not leave the pod silently Pending.
      if (e.type === 'ADDED') this.startPod(o).catch((err: unknown) => this.history.push(`runner error ${key}: ${(err as Error).stack ?? String(err)}`));
      else if (e.type === 'DELETED') {
        const p = this.pods.get(key);
        if (p) {
          this.pods.delete(key);
          await this.killPod(p);
        }
        await this.updateOwnerStatus(o);
      } else if (e.type === 'MODIFIED') await this.updateOwnerStatus(o);
    } else if ((e.resource === 'secrets' || e.resource === 'configmaps') && e.type !== 'ADDED') {
      // The kubelet refreshes secret and configMap volumes of running pods.
      for (const p of this.pods.values()) {
        if (p.ns !== ns || p.deleted) continue;
        for (const v of p.spec.volumes ?? []) {
          const ref = e.resource === 'secrets' ? v.secret?.secretName : v.configMap?.name;
          if (ref === o.metadata.name && e.type === 'MODIFIED') await this.writeObjectVolume(p, v, o);
        }
      }
    }
  }

  // ---- deployment controller --------------------------------------------------------------------

  private async reconcileDeployment(d: KObj): Promise<void> {
    const ns = d.metadata.namespace!;
    const spec = d.spec as { template: { metadata?: { labels?: Record<string, string> }; spec: PodSpec }; replicas?: number };
    const gen = String(d.metadata.generation ?? 1);
    const owned = this.api.list('pods', ns).filter((p) => p.metadata.ownerReferences?.some((r) => r.uid === d.metadata.uid));
    const current = owned.filter((p) => p.metadata.labels?.['pod-template-hash'] === gen);
    for (const p of owned) if (!current.includes(p)) this.api.remove('pods', ns, p.metadata.name);
    if ((spec.replicas ?? 1) > 0 && current.length === 0) {
      this.api.create('pods', ns, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name: `${d.metadata.name}-${gen}-${Math.random().toString(36).slice(2, 7)}`,
          labels: { ...(spec.template.metadata?.labels ?? {}), 'pod-template-hash': gen },
          ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: d.metadata.name, uid: d.metadata.uid! }],
        },
        spec: { ...spec.template.spec, restartPolicy: spec.template.spec.restartPolicy ?? 'Always' },
      });
    }
    await this.updateDeploymentStatus(ns, d.metadata.name);
  }

  private async updateOwnerStatus(pod: KObj): Promise<void> {
    const ref = pod.metadata.ownerReferences?.find((r) => r.kind === 'Deployment');
    if (ref) await this.updateDeploymentStatus(pod.metadata.namespace!, ref.name);
  }

  private async updateDeploymentStatus(ns: string, name: string): Promise<void> {
    const d = this.api.get('deployments', ns, name);
    if (!d) return;
    const pods = this.api.list('pods', ns).filter((p) => p.metadata.ownerReferences?.some((r) => r.uid === d.metadata.uid));
    const ready = pods.filter((p) => ((p.status as Dict)?.conditions as Dict[] | undefined)?.some((c) => c.type === 'Ready' && c.status === 'True')).length;
    const status = {
      observedGeneration: d.metadata.generation,
      replicas: pods.length,
      updatedReplicas: pods.filter((p) => p.metadata.labels?.['pod-template-hash'] === String(d.metadata.generation)).length,
      readyReplicas: ready,
      availableReplicas: ready,
      conditions: [{ type: 'Available', status: ready > 0 ? 'True' : 'False', reason: ready > 0 ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable' }],
    };
    if (JSON.stringify(status) !== JSON.stringify(d.status)) this.api.setStatus('deployments', ns, name, status);
  }

  private resolveService(ns: string, name: string, port: string): { port: number; https: boolean } | undefined {
    const svc = this.api.get('services', ns, name);
    if (!svc) return undefined;
    const sspec = svc.spec as { selector?: Record<string, string>; ports?: { port: number; targetPort?: number | string; name?: string }[] };
    const sp = sspec.ports?.find((p) => !port || String(p.port) === port || p.name === port) ?? sspec.ports?.[0];
    if (!sp) return undefined;
    for (const p of this.pods.values()) {
      if (p.ns !== ns || p.deleted) continue;
      const pod = this.api.get('pods', ns, p.name);
      if (!pod) continue;
      const sel = sspec.selector ?? {};
      if (!Object.entries(sel).every(([k, v]) => pod.metadata.labels?.[k] === v)) continue;
      let target = typeof sp.targetPort === 'number' ? sp.targetPort : sp.port;
      if (typeof sp.targetPort === 'string') {
        const named = p.spec.containers.flatMap((c) => c.ports ?? []).find((x) => x.name === sp.targetPort);
        if (named) target = named.containerPort;
      }
      const local = p.ports.get(target);
      if (local) return { port: local, https: true };
    }
    return undefined;
  }

  // ---- kubelet ------------------------------------------------------------------------------------

  private setPodStatus(p: RunningPod): void {
    if (p.deleted) return;
    const status = {
      phase: p.phase,
      ...(p.reason ? { reason: p.reason, message: p.message } : {}),
      conditions: p.conditions,
      podIP: '127.0.0.1',
      startTime: new Date().toISOString(),
      containerStatuses: p.containers.map((c) => ({ name: c.spec.name, image: c.spec.image, ready: c.ready, restartCount: c.restarts, state: c.status, started: 'running' in c.status })),
    };
    this.api.setStatus('pods', p.ns, p.name, status);
  }

  private async startPod(o: KObj): Promise<void> {
    const ns = o.metadata.namespace!;
    const key = `${ns}/${o.metadata.name}`;
    if (this.pods.has(key)) return;
    const spec = o.spec as PodSpec;
    const p: RunningPod = {
      ns,
      name: o.metadata.name,
      dir: path.join(this.workRoot, `${ns}-${o.metadata.name}`),
      volumes: new Map(),
      ports: new Map(),
      containers: spec.containers.map((c) => ({ spec: c, status: { waiting: { reason: 'ContainerCreating' } }, restarts: 0, ready: false })),
      deleted: false,
      phase: 'Pending',
      conditions: [],
      spec,
    };
    this.pods.set(key, p);
    this.history.push(`start ${key}`);
    // Scheduling: every claim must exist.
    for (const v of spec.volumes ?? []) {
      const claim = v.persistentVolumeClaim?.claimName;
      if (claim && !this.api.get('persistentvolumeclaims', ns, claim)) {
        p.conditions = [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: `0/1 nodes are available: persistentvolumeclaim "${claim}" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.` }];
        this.setPodStatus(p);
        return;
      }
    }
    // Scheduling: a ReadWriteOncePod claim may be used by one live pod only (the scheduler's VolumeRestrictions).
    for (let reported = false; ; reported = true) {
      if (p.deleted) return;
      const holder = this.rwopHolder(p);
      if (!holder) break;
      const message = '0/1 nodes are available: 1 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.';
      if (!reported) {
        this.history.push(`unschedulable ${key}: claim ${holder.claim} (ReadWriteOncePod) used by ${holder.pod}`);
        p.conditions = [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message }];
        this.setPodStatus(p);
      }
      this.recordPodEvent(p, 'Warning', 'FailedScheduling', message, 'default-scheduler');
      await sleep(1000);
    }
    p.conditions = [{ type: 'PodScheduled', status: 'True' }];
    this.setPodStatus(p);
    // Attaching volumes (the attach/detach controller): a volume attached to another node cannot be attached here.
    for (let reported = false; ; reported = true) {
      if (p.deleted) return;
      const conflict = this.attachConflictOf(p);
      if (!conflict) break;
      if (!reported) this.history.push(`attach ${key}: claim ${conflict.claim} is attached elsewhere`);
      const used = conflict.pods.length ? `Volume is already used by pod(s) ${conflict.pods.join(', ')}` : "Volume is already exclusively attached to one node and can't be attached to another";
      this.recordPodEvent(p, 'Warning', 'FailedAttachVolume', `Multi-Attach error for volume "${conflict.volume}" ${used}`, 'attachdetach-controller');
      await sleep(2000);
    }
    // Image pull.
    const bad = p.containers.filter((c) => !isDmctlImage(c.spec.image));
    if (bad.length) {
      for (const c of bad) c.status = { waiting: { reason: 'ErrImagePull', message: `rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/${c.spec.image}": failed to resolve reference "docker.io/${c.spec.image}": docker.io/${c.spec.image}: not found` } };
      this.setPodStatus(p);
      setTimeout(() => {
        if (p.deleted) return;
        for (const c of bad) c.status = { waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "${c.spec.image}"` } };
        this.setPodStatus(p);
      }, 500).unref();
      return;
    }
    // Volumes.
    await fsp.mkdir(p.dir, { recursive: true });
    for (const v of spec.volumes ?? []) {
      if (v.persistentVolumeClaim) {
        const dir = path.join(this.opts.claimsRoot, v.persistentVolumeClaim.claimName);
        await fsp.mkdir(dir, { recursive: true });
        p.volumes.set(v.name, dir);
        continue;
      }
      const dir = path.join(p.dir, 'volumes', v.name);
      await fsp.mkdir(dir, { recursive: true });
      p.volumes.set(v.name, dir);
      if (v.secret || v.configMap) {
        // Like the kubelet: a missing Secret or ConfigMap keeps the pod in ContainerCreating, and the mount is retried
        // until it appears (a Secret owned by the pod can only be created after the pod).
        for (let reported = false; ; reported = true) {
          if (p.deleted) return;
          const obj = v.secret ? this.api.get('secrets', ns, v.secret.secretName) : this.api.get('configmaps', ns, v.configMap!.name);
          if (obj) {
            await this.writeObjectVolume(p, v, obj);
            break;
          }
          if (!reported) {
            for (const c of p.containers) c.status = { waiting: { reason: 'ContainerCreating', message: `MountVolume.SetUp failed for volume "${v.name}": ${v.secret ? 'secret' : 'configmap'} "${v.secret?.secretName ?? v.configMap?.name}" not found` } };
            this.setPodStatus(p);
          }
          await sleep(200);
        }
      }
    }
    if (p.deleted) return;
    for (const c of p.containers) for (const port of c.spec.ports ?? []) p.ports.set(port.containerPort, await freePort());
    p.phase = 'Running';
    await Promise.all(p.containers.map((c) => this.runContainer(p, c)));
  }

  /** The claims the pod mounts. */
  private claimsOf(p: RunningPod): string[] {
    return (p.spec.volumes ?? []).map((v) => v.persistentVolumeClaim?.claimName).filter((c): c is string => !!c);
  }

  /** Another live pod of the namespace using one of p's ReadWriteOncePod claims. */
  private rwopHolder(p: RunningPod): { claim: string; pod: string } | undefined {
    for (const claim of this.claimsOf(p)) {
      const c = this.api.get('persistentvolumeclaims', p.ns, claim);
      if (!((c?.spec as { accessModes?: string[] } | undefined)?.accessModes ?? []).includes('ReadWriteOncePod')) continue;
      for (const other of this.pods.values()) {
        if (other === p || other.ns !== p.ns || other.deleted || other.phase === 'Succeeded' || other.phase === 'Failed') continue;
        if (other.conditions.some((x) => x.type === 'PodScheduled' && x.status === 'False')) continue;
        if (this.claimsOf(other).includes(claim)) return { claim, pod: other.name };
      }
    }
    return undefined;
  }

  /** A claim of p whose volume is attached to another node (attachConflict), with its PersistentVolume's name. */
  private attachConflictOf(p: RunningPod): { claim: string; volume: string; pods: string[] } | undefined {
    for (const claim of this.claimsOf(p)) {
      const pods = this.attached.get(`${p.ns}/${claim}`);
      if (!pods) continue;
      const c = this.api.get('persistentvolumeclaims', p.ns, claim);
      // The controller names the PersistentVolume bound to the claim (spec.volumeName), not the claim.
      const volume = (c?.spec as { volumeName?: string } | undefined)?.volumeName ?? `pvc-${c?.metadata.uid ?? claim}`;
      return { claim, volume, pods };
    }
    return undefined;
  }

  private recordPodEvent(p: RunningPod, type: 'Normal' | 'Warning', reason: string, message: string, component: string): void {
    const pod = this.api.get('pods', p.ns, p.name);
    if (pod && !p.deleted) this.api.recordEvent(pod, { type, reason, message, component });
  }

  private async writeObjectVolume(p: RunningPod, v: NonNullable<PodSpec['volumes']>[number], obj: KObj): Promise<void> {
    const dir = p.volumes.get(v.name);
    if (!dir) return;
    const isSecret = !!v.secret;
    const data: Record<string, Buffer> = {};
    for (const [k, val] of Object.entries((obj.data as Record<string, string>) ?? {})) data[k] = isSecret ? Buffer.from(val, 'base64') : Buffer.from(val);
    const items = (v.secret?.items ?? v.configMap?.items) as { key: string; path: string }[] | undefined;
    const files = items ? items.filter((i) => data[i.key]).map((i) => [i.path, data[i.key]!] as const) : Object.entries(data);
    // Like the kubelet's atomic writer: the folder holds exactly the current keys.
    for (const f of await fsp.readdir(dir)) if (!f.endsWith('.tmp') && !files.some(([n]) => n === f)) await fsp.rm(path.join(dir, f), { recursive: true, force: true });
    // Two writes of the same volume can overlap (the pod starting while its Secret is patched, which
    // the kubelet refresh below follows): each uses its own temp names, and the last rename wins.
    for (const [n, b] of files) {
      await fsp.mkdir(path.dirname(path.join(dir, n)), { recursive: true });
      const tmp = `${path.join(dir, n)}.${process.hrtime.bigint()}.${Math.random().toString(36).slice(2)}.tmp`;
      await fsp.writeFile(tmp, b, { mode: 0o644 });
      await fsp.rename(tmp, path.join(dir, n));
    }
  }

  /**
   * Container path → local path. Mount paths map onto their volume folders; parent folders of mounts (e.g.
   * /etc/secrets for /etc/secrets/NAME) map onto a per-container root whose entries are symlinks to the volumes.
   */
  private async mounts(p: RunningPod, c: ContainerSpec): Promise<[string, string][]> {
    const out: [string, string][] = [];
    const root = path.join(p.dir, 'root-' + c.name);
    for (const m of c.volumeMounts ?? []) {
      const mp = m.mountPath.replace(/\/+$/, '');
      const local = path.join(p.volumes.get(m.name)!, m.subPath ?? '');
      await fsp.mkdir(local, { recursive: true });
      out.push([mp, local]);
      const link = path.join(root, mp);
      await fsp.mkdir(path.dirname(link), { recursive: true });
      await fsp.rm(link, { force: true, recursive: true });
      await fsp.symlink(local, link);
      for (let a = path.posix.dirname(mp); a.split('/').length > 2; a = path.posix.dirname(a)) {
        if (!out.some(([k]) => k === a) && !(c.volumeMounts ?? []).some((x) => x.mountPath.replace(/\/+$/, '') === a)) out.push([a, path.join(root, a)]);
      }
    }
    return out.sort((a, b) => b[0].length - a[0].length);
  }

  private rewrite(p: RunningPod, mounts: [string, string][], s: string): string {
    let out = s;
    if (mounts.length) {
      const re = new RegExp('(?<![A-Za-z0-9_./-])(' + mounts.map(([f]) => escapeRe(f)).join('|') + ')(?=$|[/\\s\'";>|&)])', 'g');
      const map = new Map(mounts);
      out = out.replace(re, (m) => map.get(m) ?? m);
    }
    // Service DNS names → the local port of a pod behind the service.
    out = out.replace(/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?(?::(\d+))?/g, (all, name: string, _x, ns: string, port: string | undefined) => {
      const t = this.resolveService(ns, name, port ?? '');
      return t ? `127.0.0.1:${t.port}` : all;
    });
    return out;
  }

  private envFor(p: RunningPod, c: ContainerSpec, mounts: [string, string][]): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: path.join(p.dir, 'home'),
      HOSTNAME: p.name,
      TMPDIR: os.tmpdir(),
      ...(this.opts.env ?? {}),
    };
    const ns = p.ns;
    const lookup = (kind: 'secrets' | 'configmaps', name: string, key: string): string | undefined => {
      const o = this.api.get(kind, ns, name);
      const v = (o?.data as Record<string, string> | undefined)?.[key];
      if (v === undefined) return undefined;
      return kind === 'secrets' ? Buffer.from(v, 'base64').toString('utf8') : v;
    };
    for (const ef of c.envFrom ?? []) {
      const kind = ef.secretRef ? 'secrets' : 'configmaps';
      const o = this.api.get(kind, ns, (ef.secretRef ?? ef.configMapRef)!.name);
      for (const [k, v] of Object.entries((o?.data as Record<string, string>) ?? {})) env[(ef.prefix ?? '') + k] = kind === 'secrets' ? Buffer.from(v, 'base64').toString('utf8') : v;
    }
    for (const e of c.env ?? []) {
      if (e.value !== undefined) env[e.name] = e.value;
      else if (e.valueFrom) {
        const vf = e.valueFrom as { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
        if (vf.secretKeyRef) env[e.name] = lookup('secrets', vf.secretKeyRef.name, vf.secretKeyRef.key);
        else if (vf.configMapKeyRef) env[e.name] = lookup('configmaps', vf.configMapKeyRef.name, vf.configMapKeyRef.key);
        else if (vf.fieldRef?.fieldPath === 'metadata.name') env[e.name] = p.name;
        else if (vf.fieldRef?.fieldPath === 'metadata.namespace') env[e.name] = p.ns;
      }
    }
    for (const k of Object.keys(env)) if (env[k] !== undefined) env[k] = this.rewrite(p, mounts, env[k]!);
    return env;
  }

  private async runContainer(p: RunningPod, c: ContainerState): Promise<void> {
    if (p.deleted) return;
    const mounts = await this.mounts(p, c.spec);
    await fsp.mkdir(path.join(p.dir, 'home'), { recursive: true });
    let argv = [...(c.spec.command ?? ['dmctl']), ...(c.spec.args ?? [])].map((a) => this.rewrite(p, mounts, a));
    if (argv[0] === 'dmctl' || argv[0] === '/usr/local/bin/dmctl') argv = [process.execPath, DMCTL_BIN, ...argv.slice(1)];
    const isServer = argv[1] === DMCTL_BIN && argv[2] === 'server' && argv[3] === 'start';
    const firstPort = c.spec.ports?.[0]?.containerPort;
    if (isServer && firstPort) argv.push('--address', `127.0.0.1:${p.ports.get(firstPort)}`);
    const env = this.envFor(p, c.spec, mounts);
    this.history.push(`run ${p.ns}/${p.name}/${c.spec.name}: ${argv.slice(1).join(' ')}`);
    const proc = spawn(argv[0]!, argv.slice(1), { cwd: p.dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    c.proc = proc;
    c.status = { running: { startedAt: new Date().toISOString() } };
    this.setPodStatus(p);
    let tail = '';
    const log = (b: Buffer) => {
      tail = (tail + b.toString('utf8')).slice(-600);
      this.api.appendLog(p.ns, p.name, c.spec.name, b);
    };
    proc.stdout!.on('data', log);
    proc.stderr!.on('data', log);
    proc.on('error', (err) => log(Buffer.from(`exec: ${err.message}\n`)));
    if (c.spec.readinessProbe?.httpGet) this.probe(p, c);
    else if (!c.spec.readinessProbe) c.ready = true;
    this.updateReady(p);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => proc.once('close', (cd, sg) => resolve([cd, sg])));
    if (c.probeTimer) clearInterval(c.probeTimer);
    c.ready = false;
    if (p.deleted) return;
    const killed = c.killedAs;
    c.killedAs = undefined;
    const exitCode = killed?.exitCode ?? code ?? (signal === 'SIGKILL' ? 137 : 143);
    this.history.push(`exit ${p.ns}/${p.name}/${c.spec.name}: ${exitCode}${exitCode ? `; log tail: ${tail.trim()}` : ''}`);
    c.status = { terminated: { exitCode, reason: killed?.reason ?? (exitCode === 0 ? 'Completed' : 'Error'), finishedAt: new Date().toISOString() } };
    const policy = p.reason === 'Evicted' ? 'Never' : (p.spec.restartPolicy ?? 'Always');
    if (policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0)) {
      c.restarts++;
      c.status = { waiting: { reason: 'CrashLoopBackOff', message: `back-off restarting failed container ${c.spec.name}` } };
      this.updateReady(p);
      setTimeout(() => void this.runContainer(p, c), 1000).unref();
      return;
    }
    this.api.endLog(p.ns, p.name, c.spec.name);
    if (p.containers.every((x) => 'terminated' in x.status)) {
      p.phase = p.containers.every((x) => (x.status.terminated as { exitCode: number }).exitCode === 0) ? 'Succeeded' : 'Failed';
    }
    this.updateReady(p);
  }

  private updateReady(p: RunningPod): void {
    const ready = p.phase === 'Running' && p.containers.every((c) => c.ready);
    p.conditions = [{ type: 'PodScheduled', status: 'True' }, { type: 'Ready', status: ready ? 'True' : 'False' }, { type: 'ContainersReady', status: ready ? 'True' : 'False' }];
    this.setPodStatus(p);
  }

  private probe(p: RunningPod, c: ContainerState): void {
    const g = c.spec.readinessProbe!.httpGet!;
    const cport = typeof g.port === 'number' ? g.port : c.spec.ports?.find((x) => x.name === g.port)?.containerPort;
    const local = cport ? p.ports.get(cport) : undefined;
    if (!local) return;
    const mod = (g.scheme ?? 'HTTP').toUpperCase() === 'HTTPS' ? https : http;
    const once = () => {
      if (this.failReadiness?.(p.ns, p.name)) {
        if (c.ready) {
          c.ready = false;
          this.updateReady(p);
        }
        return;
      }
      const req = mod.get({ host: '127.0.0.1', port: local, path: g.path ?? '/', rejectUnauthorized: false, timeout: 1000 }, (res) => {
        res.resume();
        const ok = (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400;
        if (ok !== c.ready) {
          c.ready = ok;
          this.updateReady(p);
        }
      });
      req.on('error', () => {
        if (c.ready) {
          c.ready = false;
          this.updateReady(p);
        }
      });
      req.on('timeout', () => req.destroy());
    };
    c.probeTimer = setInterval(once, 250);
    c.probeTimer.unref();
  }

  private async killPod(p: RunningPod): Promise<void> {
    p.deleted = true;
    this.history.push(`kill ${p.ns}/${p.name}`);
    await Promise.all(
      p.containers.map(async (c) => {
        if (c.probeTimer) clearInterval(c.probeTimer);
        const proc = c.proc;
        if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
        const closed = new Promise<void>((r) => proc.once('close', () => r()));
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
        await closed;
        clearTimeout(t);
      }),
    );
    for (const c of p.containers) this.api.endLog(p.ns, p.name, c.spec.name);
    if (existsSync(p.dir)) await fsp.rm(p.dir, { recursive: true, force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
