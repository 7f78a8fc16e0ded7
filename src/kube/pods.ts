// Running one pod to completion through the API only (never exec): create it, watch its status, stream one
// container's log as it runs, map a stuck or failed pod to one clear error, and delete it afterwards (also on
// errors and on abort), unless the caller keeps it.
import { PassThrough } from 'node:stream';
import type { ProgressFn } from '../core/progress.js';
import { InterruptedError } from '../core/errors.js';
import type { KObject, KubeClient } from './client.js';
import { KubeError, podProblem, type PodStatusLike } from './errors.js';
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

export async function runPod(client: KubeClient, pod: PodObj, o: RunPodOptions = {}): Promise<PodOutcome> {
  for (const claim of o.claims ?? []) {
    const c = await client.get('v1', 'PersistentVolumeClaim', claim);
    if (!c) throw new KubeError('claim-not-found', `persistentvolumeclaim "${claim}" not found in namespace ${client.namespace}`, 'check --pvc and --namespace');
    const phase = (c.status as { phase?: string } | undefined)?.phase;
    if (phase === 'Lost') throw new KubeError('claim-lost', `persistentvolumeclaim "${claim}" has lost its volume`);
  }
  const containers = pod.spec?.containers ?? [];
  const container = o.container ?? containers[containers.length - 1]!.name;
  const name = pod.metadata.name;
  let deleted = false;
  let podCreated = false;
  const companions: KObject[] = [];
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
    const uid = created.metadata.uid;
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
      const onPod = (p: KObject) => {
        if (finished) return;
        const st = (p.status ?? {}) as PodStatusLike;
        const problem = podProblem(p as Parameters<typeof podProblem>[0]);
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
    stopWatch?.();
    logAbort.abort();
    if (!o.keepPod) await cleanup();
  }
}
