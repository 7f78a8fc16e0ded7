// Errors of cluster mode, each one line naming the object: what the API server answered (Forbidden with verb and
// resource, NotFound, Conflict), what a pod's status says (image pull failure, OOM kill with the limit, eviction,
// unschedulable claim), what a pod's Events say (a claim attached to another node), and the API server being
// unreachable.
import { DmctlError, EXIT_CODES } from '../core/errors.js';

export class KubeError extends DmctlError {
  constructor(code: string, message: string, hint?: string, cause?: unknown, exitCode: number = EXIT_CODES.FAILURE) {
    super(`kube-${code}`, message, { hint, cause, exitCode: exitCode as 1 });
  }
}

interface StatusBody {
  kind?: string;
  message?: string;
  reason?: string;
  code?: number;
  details?: { name?: string; kind?: string; group?: string };
}

function parseBody(body: unknown): StatusBody | undefined {
  if (typeof body === 'string') {
    try {
      return JSON.parse(body) as StatusBody;
    } catch {
      return undefined;
    }
  }
  return typeof body === 'object' && body !== null ? (body as StatusBody) : undefined;
}

/** What we were doing when the API failed: `create secret dm-x` etc. */
export interface ApiAction {
  verb: string;
  resource: string;
  name?: string;
  namespace?: string;
}

function what(a: ApiAction): string {
  return `${a.resource}${a.name ? ` "${a.name}"` : ''}${a.namespace ? ` in namespace ${a.namespace}` : ''}`;
}

/** Maps anything client-node throws (ApiException, fetch errors) to a one-line KubeError. */
export function kubeError(err: unknown, a: ApiAction, server?: string): DmctlError {
  if (err instanceof DmctlError) return err;
  const e = err as { code?: unknown; body?: unknown; message?: string; cause?: { code?: string; message?: string } };
  if (typeof e?.code === 'number') {
    const st = parseBody(e.body);
    const msg = st?.message ? st.message.split('\n')[0] : `HTTP ${e.code}`;
    switch (e.code) {
      case 401:
        return new KubeError('unauthorized', `the Kubernetes API refused the credentials to ${a.verb} ${what(a)}`, 'check the kubeconfig user (token or certificate may have expired)', err);
      case 403: {
        // "secrets is forbidden: User "x" cannot create resource "secrets" in API group "" in the namespace "ns""
        const m = /cannot (\S+) resource "([^"]+)"(?: in subresource "([^"]+)")?/.exec(msg ?? '');
        const verb = m?.[1] ?? a.verb;
        const res = m ? (m[3] ? `${m[2]}/${m[3]}` : m[2]!) : a.resource;
        return new KubeError('forbidden', `forbidden: cannot ${verb} ${res}${a.name ? ` "${a.name}"` : ''} in namespace ${a.namespace ?? '?'} (RBAC)`, 'grant the Role `dmctl kube rbac` prints to this user or service account', err);
      }
      case 404:
        return new KubeError('not-found', `${what(a)} not found`, undefined, err);
      case 409:
        return new KubeError('conflict', `${a.verb} ${what(a)}: ${msg}`, 'another client changed it at the same time; run the command again', err);
      case 422:
        return new KubeError('invalid', `the API refused ${what(a)}: ${msg}`, undefined, err);
      default:
        return new KubeError('api', `${a.verb} ${what(a)}: the Kubernetes API answered ${e.code}: ${msg}`, undefined, err);
    }
  }
  const causeCode = e?.cause?.code ?? (err as { code?: string })?.code;
  const text = `${e?.message ?? ''} ${e?.cause?.message ?? ''}`;
  if (typeof causeCode === 'string' && /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|ECONNRESET|EAI_AGAIN|UND_ERR/.test(causeCode) || /fetch failed|ECONNREFUSED|socket hang up/.test(text)) {
    return new KubeError('unreachable', `cannot reach the Kubernetes API server${server ? ` at ${server}` : ''} (${causeCode ?? (e?.message || 'connection failed')})`, 'check --kubeconfig/--context and that the cluster is up', err, EXIT_CODES.STORAGE);
  }
  return new KubeError('api', `${a.verb} ${what(a)} failed: ${e?.message ?? String(err)}`, undefined, err);
}

/** Reads a pod's status and explains, in one line naming the pod and container, why it cannot succeed. */
export function podProblem(pod: { metadata?: { name?: string }; spec?: { containers?: { name: string; resources?: { limits?: Record<string, string> } }[] }; status?: PodStatusLike }): KubeError | undefined {
  const name = pod.metadata?.name ?? '?';
  const st = pod.status ?? {};
  if (st.reason === 'Evicted') return new KubeError('evicted', `pod ${name} was evicted: ${st.message ?? 'the node ran short of resources'}`, 'free resources on the node or set requests; the pod was removed');
  for (const c of st.conditions ?? []) {
    if (c.type === 'PodScheduled' && c.status === 'False' && c.reason === 'Unschedulable') {
      const claim = /persistentvolumeclaim "([^"]+)" not found/.exec(c.message ?? '');
      if (claim) return new KubeError('claim-not-found', `persistentvolumeclaim "${claim[1]}" not found (pod ${name} cannot be scheduled)`, 'check --pvc and --namespace');
      if (/ReadWriteOncePod/.test(c.message ?? '')) return rwopInUse(name, undefined, undefined);
      if (/in[ -]use|multi-attach|already (attached|used)/i.test(c.message ?? '')) return new KubeError('claim-in-use', `pod ${name} cannot be scheduled: ${(c.message ?? '').split('. preemption:')[0]}`, 'the claim is mounted by another pod; stop that pod and run again');
    }
  }
  for (const cs of [...(st.initContainerStatuses ?? []), ...(st.containerStatuses ?? [])]) {
    const w = cs.state?.waiting;
    if (w && /^(ErrImagePull|ImagePullBackOff|InvalidImageName|ErrImageNeverPull)$/.test(w.reason ?? '')) {
      return new KubeError('image-pull', `pod ${name}: cannot pull image ${cs.image ?? '?'} for container ${cs.name} (${w.reason})`, 'check --image, the registry and imagePullSecrets');
    }
    if (w && /^(CreateContainerConfigError|CreateContainerError|RunContainerError)$/.test(w.reason ?? '')) {
      return new KubeError('container-config', `pod ${name}: container ${cs.name} cannot start: ${w.message ?? w.reason}`);
    }
    const t = cs.state?.terminated ?? (w?.reason === 'CrashLoopBackOff' ? cs.lastState?.terminated : undefined);
    if (t?.reason === 'OOMKilled') {
      const limit = pod.spec?.containers?.find((c) => c.name === cs.name)?.resources?.limits?.memory;
      return new KubeError('oom-killed', `pod ${name}: container ${cs.name} was killed for running out of memory (OOMKilled, limit ${limit ?? 'none set'})`, 'raise --memory-limit');
    }
  }
  return undefined;
}

/** A claim the pod mounts, with the PersistentVolume bound to it (spec.volumeName) and its access modes. */
export interface ClaimInfo {
  name: string;
  volumeName?: string;
  accessModes?: string[];
}

/**
 * A claim with the ReadWriteOncePod access mode that another pod holds (the scheduler's condition names neither the
 * claim nor the pod; the caller looks them up when it can).
 */
export function rwopInUse(pod: string, claim: string | undefined, holders: string[] | undefined): KubeError {
  const who = holders?.length ? `pod${holders.length > 1 ? 's' : ''} ${holders.join(', ')}` : 'another pod';
  return new KubeError(
    'claim-in-use',
    `${claim ? `persistentvolumeclaim "${claim}"` : 'a persistentvolumeclaim'} is in use by ${who} (ReadWriteOncePod: pod ${pod} cannot be scheduled)`,
    `the claim allows one pod at a time: stop ${holders?.length ? holders.join(', ') : 'that pod'} (or scale its workload down) and run again`,
  );
}

/**
 * Reads the attach/detach controller's FailedAttachVolume Event of a pod: `Multi-Attach error for volume "PV" Volume
 * is already used by pod(s) a, b [and N pod(s) in different namespaces]` or `… Volume is already exclusively attached
 * to one node and can't be attached to another`. The volume is the PersistentVolume; `claims` map it back to the
 * claim. Undefined for any other event.
 */
export function attachConflict(pod: string, ev: { reason?: string; message?: string }, claims: ClaimInfo[]): KubeError | undefined {
  if (ev.reason !== 'FailedAttachVolume') return undefined;
  const m = /Multi-Attach error for volume "([^"]*)"\s*(.*)$/s.exec(ev.message ?? '');
  if (!m) return undefined;
  const volume = m[1]!;
  const rest = m[2]!.trim();
  const claim = claims.find((c) => c.volumeName === volume || c.name === volume) ?? (claims.length === 1 ? claims[0] : undefined);
  const subject = claim ? `persistentvolumeclaim "${claim.name}"` : `volume "${volume}"${claims.length ? ` (one of the claims ${claims.map((c) => c.name).join(', ')})` : ''}`;
  const used = /already used by (.+)$/s.exec(rest)?.[1]?.trim().replace(/\s+/g, ' ');
  let who: string | undefined;
  if (used) {
    // "pod(s) a, b and 2 pod(s) in different namespaces" | "3 pod(s) in different namespaces"
    const local = /^pod\(s\) (.+?)(?: and (\d+) pod\(s\) in different namespaces)?$/.exec(used);
    if (local) {
      const names = local[1]!.split(',').map((x) => x.trim()).filter(Boolean);
      who = `pod${names.length > 1 ? 's' : ''} ${names.join(', ')}${local[2] ? ` and ${local[2]} pod(s) in other namespaces` : ''}`;
    } else who = used.replace(/in different namespaces/, 'in other namespaces');
  }
  const message = who
    ? `${subject} is in use by ${who} on another node (pod ${pod} cannot attach volume ${volume}: Multi-Attach error)`
    : `${subject} is attached to another node (pod ${pod} cannot attach volume ${volume}: Multi-Attach error)`;
  return new KubeError('claim-in-use', message, `the claim is ReadWriteOnce and mounted on another node: stop ${who ?? 'the pod using it'} (or scale its workload down) and run again`);
}

export interface PodStatusLike {
  phase?: string;
  reason?: string;
  message?: string;
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
  containerStatuses?: ContainerStatusLike[];
  initContainerStatuses?: ContainerStatusLike[];
}

interface ContainerStatusLike {
  name: string;
  image?: string;
  ready?: boolean;
  restartCount?: number;
  state?: { waiting?: { reason?: string; message?: string }; running?: unknown; terminated?: { exitCode: number; reason?: string; message?: string } };
  lastState?: { terminated?: { exitCode: number; reason?: string } };
}
