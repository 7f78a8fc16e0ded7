// A small wrapper over @kubernetes/client-node 1.4: configuration (kubeconfig file, context, namespace, or the
// in-cluster service account), idempotent apply of dmctl's labelled objects, get/list/delete, pod watches, pod
// log streaming and the service proxy. Every API failure becomes a one-line KubeError naming the object.
import http from 'node:http';
import https from 'node:https';
import { existsSync, readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import * as k8s from '@kubernetes/client-node';
import { kubeError, KubeError } from './errors.js';

export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'dmctl' } as const;

export interface KubeTarget {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
}

export type KObject = k8s.KubernetesObject & { [k: string]: unknown; metadata: k8s.V1ObjectMeta & { name: string } };

const PLURALS: Record<string, string> = {
  Secret: 'secrets',
  ConfigMap: 'configmaps',
  Service: 'services',
  Pod: 'pods',
  Deployment: 'deployments',
  PersistentVolumeClaim: 'persistentvolumeclaims',
  Event: 'events',
};

export function resourceOf(kind: string | undefined): string {
  return PLURALS[kind ?? ''] ?? (kind ?? 'object').toLowerCase() + 's';
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export function loadKubeConfig(t: KubeTarget, env: NodeJS.ProcessEnv = process.env): { kc: k8s.KubeConfig; namespace: string } {
  const kc = new k8s.KubeConfig();
  const file = t.kubeconfig ?? env.KUBECONFIG?.split(':')[0];
  try {
    if (file) kc.loadFromFile(file);
    else if (env.KUBERNETES_SERVICE_HOST && existsSync(`${SA_DIR}/token`)) kc.loadFromCluster();
    else kc.loadFromDefault();
  } catch (err) {
    throw new KubeError('config', `cannot read kubeconfig ${file ?? '(default)'}: ${(err as Error).message}`, 'pass --kubeconfig FILE or set KUBECONFIG');
  }
  if (t.context) {
    if (!kc.getContextObject(t.context)) throw new KubeError('config', `context ${t.context} not found in the kubeconfig`, `contexts: ${kc.getContexts().map((c) => c.name).join(', ') || '(none)'}`);
    kc.setCurrentContext(t.context);
  }
  if (!kc.getCurrentCluster()) throw new KubeError('config', 'no Kubernetes cluster configured', 'pass --kubeconfig FILE, set KUBECONFIG, or run inside a pod');
  let namespace = t.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace;
  if (!namespace && existsSync(`${SA_DIR}/namespace`)) namespace = readFileSync(`${SA_DIR}/namespace`, 'utf8').trim();
  return { kc, namespace: namespace || 'default' };
}

export class KubeClient {
  readonly kc: k8s.KubeConfig;
  readonly namespace: string;
  private objects: k8s.KubernetesObjectApi;

  constructor(t: KubeTarget, env: NodeJS.ProcessEnv = process.env) {
    const { kc, namespace } = loadKubeConfig(t, env);
    this.kc = kc;
    this.namespace = namespace;
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
  }

  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? '?';
  }

  private fail(err: unknown, verb: string, kind: string | undefined, name?: string): never {
    throw kubeError(err, { verb, resource: resourceOf(kind), name, namespace: this.namespace }, this.server);
  }

  private header(apiVersion: string, kind: string, name: string) {
    return { apiVersion, kind, metadata: { name, namespace: this.namespace } };
  }

  async get<T extends KObject = KObject>(apiVersion: string, kind: string, name: string): Promise<T | undefined> {
    try {
      return (await this.objects.read(this.header(apiVersion, kind, name))) as unknown as T;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      this.fail(err, 'get', kind, name);
    }
  }

  async list<T extends KObject = KObject>(apiVersion: string, kind: string, labelSelector?: string, fieldSelector?: string): Promise<T[]> {
    try {
      const l = await this.objects.list(apiVersion, kind, this.namespace, undefined, undefined, undefined, fieldSelector, labelSelector);
      return l.items as unknown as T[];
    } catch (err) {
      this.fail(err, 'list', kind);
    }
  }

  async create<T extends KObject>(obj: T): Promise<T> {
    try {
      return (await this.objects.create({ ...obj, metadata: { ...obj.metadata, namespace: this.namespace } })) as T;
    } catch (err) {
      this.fail(err, 'create', obj.kind, obj.metadata.name);
    }
  }

  /** Merge patch (RFC 7386): null removes a key. */
  async patch<T extends KObject>(apiVersion: string, kind: string, name: string, patch: Record<string, unknown>): Promise<T> {
    try {
      const spec = { apiVersion, kind, ...patch, metadata: { ...((patch.metadata as object) ?? {}), name, namespace: this.namespace } } as KObject;
      return (await this.objects.patch(spec, undefined, undefined, 'dmctl', undefined, k8s.PatchStrategy.MergePatch)) as T;
    } catch (err) {
      this.fail(err, 'patch', kind, name);
    }
  }

  /**
   * Creates the object, or when it exists, makes it equal to `obj` with a merge patch (fields dmctl sets are
   * replaced; `keep` lists top-level fields to leave as they are, e.g. a generated TLS secret's data).
   */
  async apply<T extends KObject>(obj: T, opts: { keep?: string[] } = {}): Promise<{ object: T; created: boolean }> {
    const existing = await this.get(obj.apiVersion!, obj.kind!, obj.metadata.name);
    if (!existing) {
      try {
        return { object: (await this.objects.create({ ...obj, metadata: { ...obj.metadata, namespace: this.namespace } })) as T, created: true };
      } catch (err) {
        if ((err as { code?: number }).code !== 409) this.fail(err, 'create', obj.kind, obj.metadata.name);
      }
    }
    if (existing && existing.metadata.labels?.['app.kubernetes.io/managed-by'] !== 'dmctl') {
      throw new KubeError('not-ours', `${resourceOf(obj.kind)} "${obj.metadata.name}" in namespace ${this.namespace} exists and is not managed by dmctl`, 'pick another --name, or delete that object');
    }
    const patch: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(obj)) if (k !== 'apiVersion' && k !== 'kind' && k !== 'status' && !(opts.keep ?? []).includes(k)) patch[k] = v;
    // Keys dmctl no longer sets in data maps are removed.
    for (const field of ['data', 'stringData']) {
      const cur = existing?.[field] as Record<string, unknown> | undefined;
      const next = obj[field] as Record<string, unknown> | undefined;
      if (cur && next && !(opts.keep ?? []).includes(field)) for (const k of Object.keys(cur)) if (!(k in next)) (patch[field] as Record<string, unknown>)[k] = null;
    }
    return { object: await this.patch<T>(obj.apiVersion!, obj.kind!, obj.metadata.name, patch), created: false };
  }

  /** Deletes; false when it was not there. */
  async delete(apiVersion: string, kind: string, name: string, opts: { gracePeriodSeconds?: number } = {}): Promise<boolean> {
    try {
      await this.objects.delete(this.header(apiVersion, kind, name), undefined, undefined, opts.gracePeriodSeconds, undefined, 'Background');
      return true;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return false;
      this.fail(err, 'delete', kind, name);
    }
  }

  /**
   * Watches pods matching a field or label selector; `onEvent` gets each (type, pod). Resolves with a stop function.
   */
  async watchPods(selector: { field?: string; label?: string }, onEvent: (type: string, pod: KObject) => void, onDone: (err?: unknown) => void): Promise<() => void> {
    const w = new k8s.Watch(this.kc);
    try {
      const ac = await w.watch(
        `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/pods`,
        { ...(selector.field ? { fieldSelector: selector.field } : {}), ...(selector.label ? { labelSelector: selector.label } : {}) },
        (type, obj) => onEvent(type, obj as KObject),
        (err) => onDone(err ?? undefined),
      );
      return () => ac.abort();
    } catch (err) {
      this.fail(err, 'watch', 'Pod');
    }
  }

  /** Streams a container's log (follow) into `out`; resolves when the stream ends. */
  async followLog(pod: string, container: string, out: Writable, signal?: AbortSignal): Promise<void> {
    const log = new k8s.Log(this.kc);
    await new Promise<void>((resolve, reject) => {
      // The writable ends when the log stream ends.
      const sink = new Writable({
        write(chunk, _enc, cb) {
          out.write(chunk, () => cb());
        },
        final(cb) {
          cb();
          resolve();
        },
      });
      sink.on('error', reject);
      log
        .log(this.namespace, pod, container, sink, { follow: true })
        .then((ac) => {
          if (signal) {
            if (signal.aborted) ac.abort();
            else signal.addEventListener('abort', () => ac.abort(), { once: true });
          }
        })
        .catch((err) => reject(kubeError(err, { verb: 'get', resource: 'pods/log', name: pod, namespace: this.namespace }, this.server)));
    });
  }

  /** A request through the API server's service proxy: /api/v1/namespaces/NS/services/https:NAME:PORT/proxy/PATH. */
  async proxyGet(service: string, port: number, path: string, scheme = 'https', timeoutMs = 10_000): Promise<{ status: number; body: string }> {
    const base = this.server.replace(/\/+$/, '');
    const url = new URL(`${base}/api/v1/namespaces/${encodeURIComponent(this.namespace)}/services/${scheme}:${service}:${port}/proxy${path}`);
    const opts: https.RequestOptions = { method: 'GET', headers: {} };
    await this.kc.applyToHTTPSOptions(opts);
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(url, { ...opts, timeout: timeoutMs, ...(url.protocol === 'http:' ? { agent: undefined } : {}) }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (err) => reject(kubeError(err, { verb: 'get', resource: 'services/proxy', name: service, namespace: this.namespace }, this.server)));
      req.end();
    });
  }

  /** SelfSubjectAccessReview: may this user do verb on resource here? */
  async can(verb: string, resource: string, group = '', subresource?: string): Promise<boolean> {
    const api = this.kc.makeApiClient(k8s.AuthorizationV1Api);
    try {
      const r = await api.createSelfSubjectAccessReview({
        body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: { namespace: this.namespace, verb, resource, group, ...(subresource ? { subresource } : {}) } } },
      });
      return !!r.status?.allowed;
    } catch (err) {
      this.fail(err, 'create', 'SelfSubjectAccessReview');
    }
  }
}
