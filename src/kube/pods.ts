// Running one pod to completion through the API only (never exec): create it, watch its status, stream one
// container's log as it runs, map a stuck or failed pod to one clear error, and delete it afterwards (also on
// errors and on abort), unless the caller keeps it.
import { PassThrough } from 'node:stream';
import type { ProgressFn } from '../core/progress.js';
import { InterruptedError } from '../core/errors.js';
import type { KObject, KubeClient } from './client.js';
import { DmctlError } from '../core/errors.js';
import { attachConflict, KubeError, podProblem, rwopInUse, type ClaimInfo, type PodStatusLike } from './errors.js';
import type { PodObj } from './manifests.js';

/** The datamover prints its result as the last stdout line, prefixed with this marker. */
export const RESULT_MARKER = 'dmctl-result: ';

export interface RunPodOptions {
  /** Container whose log is streamed and whose exit code is the result (default: the last one). */
  container?: string;
  /** Every log line of that container (except the result line), and of the side containers. */
  onLine?: (line: string, container: string) => void;
  /** Other containers whose log is streamed too (e.g. the dump command of a stream pod). */
  sideContainers?: string[];
  /**
   * Objects the pod needs (the short-lived Secret of a repository pod): created before it, made dependents of it
   * (ownerReferences, so the garbage collector removes them with the pod even if dmctl dies), and deleted with it.
   */
  companions?: KObject[];
  progress?: ProgressFn;
  signal?: AbortSignal;
  /** How long the pod may stay Pending (ms, default 5 min). */
  startTimeoutMs?: number;
  keepPod?: boolean;
  /** Claims the pod mounts: checked before creating it, so a missing claim is reported by name. */
  claims?: string[];
}

export interface PodOutcome {
  pod: string;
  phase: string;
  exitCode: number;
  /** Parsed JSON after RESULT_MARKER, when the container printed one. */
  result?: unknown;
  /** The last lines of the log (for failure messages). */
  tail: string[];
  kept: boolean;
}

/** How often the Warning Events of a Pending pod are read (one list call each time). */
const EVENT_POLL_MS = 2500;

/** Pods other than `self` that mount `claim` and have not ended (who holds a ReadWriteOncePod claim). */
async function claimHolders(client: KubeClient, claim: string, self: string): Promise<string[] | undefined> {
  try {
    const pods = await client.list('v1', 'Pod');
    return pods
      .filter((p) => p.metadata.name !== self && !['Succeeded', 'Failed'].includes(String((p.status as { phase?: string } | undefined)?.phase)))
      .filter((p) => ((p.spec as { volumes?: { persistentVolumeClaim?: { claimName?: string } }[] } | undefined)?.volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === claim))
      .map((p) => p.metadata.name);
  } catch {
    return undefined; // e.g. no `list pods` permission: the error just names no pod
  }
}

export async function runPod(client: KubeClient, pod: PodObj, o: RunPodOptions = {}): Promise<PodOutcome> {
  const claimInfo: ClaimInfo[] = [];
  for (const claim of o.claims ?? []) {
    const c = await client.get('v1', 'PersistentVolumeClaim', claim);
    if (!c) throw new KubeError('claim-not-found', `persistentvolumeclaim "${claim}" not found in namespace ${client.namespace}`, 'check --pvc and --namespace');
    const phase = (c.status as { phase?: string } | undefined)?.phase;
    if (phase === 'Lost') throw new KubeError('claim-lost', `persistentvolumeclaim "${claim}" has lost its volume`);
    const spec = (c.spec ?? {}) as { volumeName?: string; accessModes?: string[] };
    claimInfo.push({ name: claim, volumeName: spec.volumeName, accessModes: spec.accessModes });
  }
  // Claims the pod mounts that dmctl was not asked to check (e.g. a server's repository claim) still map volumes back.
  for (const v of pod.spec?.volumes ?? []) {
    const cn = v.persistentVolumeClaim?.claimName;
    if (cn && !claimInfo.some((c) => c.name === cn)) claimInfo.push({ name: cn });
  }
  const containers = pod.spec?.containers ?? [];
  const container = o.container ?? containers[containers.length - 1]!.name;
  const name = pod.metadata.name;
  let deleted = false;
  let podCreated = false;
  const companions: KObject[] = [];
  let uid: string | undefined;
  const cleanup = async () => {
    if (deleted) return;
    deleted = true;
    if (podCreated) await client.delete('v1', 'Pod', name, { gracePeriodSeconds: 5 }).catch(() => undefined);
    for (const c of companions) await client.delete(c.apiVersion!, c.kind!, c.metadata.name).catch(() => undefined);
  };
  try {
    for (const c of o.companions ?? []) {
      o.progress?.({ phase: 'pod', item: `creating ${c.kind!.toLowerCase()} ${c.metadata.name}` });
      await client.create(c);
      companions.push(c);
    }
    o.progress?.({ phase: 'pod', item: `creating pod ${name}` });
    const created = await client.create(pod as unknown as KObject);
    podCreated = true;
    uid = created.metadata.uid;
    if (uid) {
      for (const c of companions) {
        await client.patch(c.apiVersion!, c.kind!, c.metadata.name, { metadata: { ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name, uid }] } });
      }
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
  const tail: string[] = [];
  let result: unknown;
  let stopWatch: (() => void) | undefined;
  let poll: NodeJS.Timeout | undefined;
  let eventPoll: NodeJS.Timeout | undefined;
  let startTimer: NodeJS.Timeout | undefined;
  const logAbort = new AbortController();
  try {
    const outcome = await new Promise<{ phase: string; exitCode: number }>((resolve, reject) => {
      let logStarted = false;
      let logDone: Promise<void> | undefined;
      let finished = false;
      const fail = (err: unknown) => {
        if (finished) return;
        finished = true;
        reject(err);
      };
      if (o.signal) {
        if (o.signal.aborted) return fail(o.signal.reason ?? new InterruptedError('interrupted'));
        o.signal.addEventListener('abort', () => fail(o.signal!.reason ?? new InterruptedError('interrupted')), { once: true });
      }
      startTimer = setTimeout(() => fail(new KubeError('pod-timeout', `pod ${name} did not start within ${Math.round((o.startTimeoutMs ?? 300_000) / 1000)}s`, 'see `kubectl describe pod` events; raise --timeout')), o.startTimeoutMs ?? 300_000);
      const follow = (c: string, onLine: (l: string) => void): Promise<void> => {
        const sink = new PassThrough();
        let partial = '';
        sink.on('data', (chunk: Buffer) => {
          const text = partial + chunk.toString('utf8');
          const lines = text.split('\n');
          partial = lines.pop()!;
          for (const l of lines) onLine(l);
        });
        sink.on('end', () => partial && onLine(partial));
        return client.followLog(name, c, sink, logAbort.signal).then(
          () => void sink.end(),
          () => void sink.end(),
        );
      };
      const startLog = () => {
        if (logStarted) return;
        logStarted = true;
        logDone = follow(container, handleLine);
      };
      const sideStarted = new Set<string>();
      const sideDone: Promise<void>[] = [];
      const startSideLog = (c: string) => {
        if (sideStarted.has(c)) return;
        sideStarted.add(c);
        sideDone.push(follow(c, (l) => o.onLine?.(l, c)));
      };
      const handleLine = (l: string) => {
        const i = l.indexOf(RESULT_MARKER);
        if (i >= 0) {
          try {
            result = JSON.parse(l.slice(i + RESULT_MARKER.length));
            return;
          } catch {
            /* an ordinary line */
          }
        }
        tail.push(l);
        if (tail.length > 20) tail.shift();
        o.onLine?.(l, container);
      };
      let explaining = false;
      let pending = true;
      const onPod = (p: KObject) => {
        if (finished || explaining) return;
        const st = (p.status ?? {}) as PodStatusLike;
        pending = !st.phase || st.phase === 'Pending';
        const problem = podProblem(p as Parameters<typeof podProblem>[0]);
        if (problem?.code === 'kube-claim-in-use' && /ReadWriteOncePod/.test(problem.message)) {
          // The scheduler names neither the claim nor the pod holding it: look them up (best effort), then fail.
          explaining = true;
          const rwop = claimInfo.find((c) => c.accessModes?.includes('ReadWriteOncePod'));
          void (rwop ? claimHolders(client, rwop.name, name) : Promise.resolve(undefined)).then((holders) => fail(rwopInUse(name, rwop?.name, holders)));
          return;
        }
        if (problem) return fail(problem);
        const cs = st.containerStatuses?.find((c) => c.name === container);
        if (cs?.state?.running || cs?.state?.terminated) {
          if (startTimer) clearTimeout(startTimer);
          startLog();
        }
        for (const side of o.sideContainers ?? []) {
          const ss = st.containerStatuses?.find((c) => c.name === side);
          if (ss?.state?.running || ss?.state?.terminated) startSideLog(side);
        }
        if (st.phase === 'Succeeded' || st.phase === 'Failed') {
          finished = true;
          const code = cs?.state?.terminated?.exitCode ?? (st.phase === 'Succeeded' ? 0 : 1);
          void Promise.all([logDone ?? Promise.resolve(), ...sideDone]).then(() => resolve({ phase: st.phase!, exitCode: code }));
        }
      };
      client
        .watchPods({ field: `metadata.name=${name}` }, (type, p) => {
          if (type === 'DELETED') return fail(new KubeError('pod-deleted', `pod ${name} was deleted while running`, 'someone or something (eviction, node drain) removed it'));
          onPod(p);
        }, () => undefined)
        .then((stop) => (stopWatch = stop), fail);
      // A pod that stays Pending may be waiting for a volume the attach/detach controller cannot attach (a
      // ReadWriteOnce claim attached to another node): that is only in the pod's Events. Without permission to list
      // Events (403) dmctl just keeps waiting until --timeout.
      let eventsForbidden = false;
      const checkEvents = async () => {
        if (finished || explaining || !pending || eventsForbidden) return;
        try {
          const sel = `involvedObject.kind=Pod,involvedObject.name=${name}${uid ? `,involvedObject.uid=${uid}` : ''},type=Warning`;
          const events = await client.list('v1', 'Event', undefined, sel);
          for (const ev of events as (KObject & { reason?: string; message?: string })[]) {
            const err = attachConflict(name, ev, claimInfo);
            if (err) return fail(err);
          }
        } catch (err) {
          if (err instanceof DmctlError && err.code === 'kube-forbidden') {
            eventsForbidden = true;
            if (eventPoll) clearInterval(eventPoll);
            o.progress?.({ phase: 'pod', item: `cannot list events (RBAC): waiting for pod ${name} without reading its events` });
          }
          // Anything else (a dropped connection): try again at the next tick.
        }
      };
      eventPoll = setInterval(() => void checkEvents(), EVENT_POLL_MS);
      // Safety net when a watch drops silently.
      poll = setInterval(() => {
        void client.get('v1', 'Pod', name).then((p) => {
          if (!p) fail(new KubeError('pod-deleted', `pod ${name} disappeared while running`, 'someone or something (eviction, node drain) removed it'));
          else onPod(p);
        }, fail);
      }, 2000);
    });
    return { pod: name, ...outcome, result, tail, kept: !!o.keepPod };
  } finally {
    if (startTimer) clearTimeout(startTimer);
    if (poll) clearInterval(poll);
    if (eventPoll) clearInterval(eventPoll);
    stopWatch?.();
    logAbort.abort();
    if (!o.keepPod) await cleanup();
  }
}
