// A stand-in for the Kubernetes API server, owned by the test suite (no real apiserver can run here).
// It implements the REST semantics dmctl relies on, over plain HTTP on 127.0.0.1:
// - discovery (/api, /api/v1, /apis, /apis/apps/v1, /apis/authorization.k8s.io/v1) for KubernetesObjectApi;
// - namespaced create / get / list / replace (PUT) / patch / delete of secrets, configmaps, services, pods,
//   persistentvolumeclaims (core/v1) and deployments (apps/v1), with a global resourceVersion, 409 AlreadyExists on
//   create, 409 Conflict on a stale resourceVersion in PUT, 404 NotFound with a Status body naming the object;
// - patches: application/merge-patch+json (RFC 7386) and application/strategic-merge-patch+json (merge patch where
//   lists of objects with a `name` are merged by name, the way the schema does for containers, env, volumes, ports);
// - labelSelector (`k=v`, `k!=v`, `k`, `!k`, `k in (a,b)`) on list and watch; fieldSelector (`f=v`, `f==v`, `f!=v`) on
//   the fields each kind really supports (pods: metadata.*, spec.nodeName, status.phase, …; events: involvedObject.*,
//   reason, source, type, …; everything: metadata.name and metadata.namespace), any other field 400 BadRequest
//   `field label not supported: F`, as the API server answers;
// - core/v1 events: created by the pod runner the way a component's event recorder does (recordEvent: name
//   POD.HEX, involvedObject, source.component, count, first/lastTimestamp; a repeat bumps count and lastTimestamp),
//   listed and watched with field selectors, validated (involvedObject required, its namespace the event's);
// - watch (`?watch=1|true`): JSON lines of {type, object}, with ADDED for what exists unless resourceVersion is given;
// - pod logs (`/pods/NAME/log?container=C&follow=true`), fed by the pod runner;
// - the service proxy (`/services/[https:]NAME[:PORT]/proxy/...`) forwarded to a resolver the pod runner installs;
// - SelfSubjectAccessReview, and 403 Forbidden injection (`forbid('create', 'pods')`) with the real message format;
// - cascading deletion of objects whose ownerReferences name a deleted object (the garbage collector).
import http from 'node:http';
import https from 'node:https';
import { EventEmitter } from 'node:events';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';

export type KObj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string }[];
    [k: string]: unknown;
  };
  [k: string]: unknown;
};

interface ResourceDef {
  group: string; // '' for core
  version: string;
  plural: string;
  kind: string;
  verbs: string[];
}

const RESOURCES: ResourceDef[] = [
  { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
  { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
  { group: '', version: 'v1', plural: 'services', kind: 'Service', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
  { group: '', version: 'v1', plural: 'persistentvolumeclaims', kind: 'PersistentVolumeClaim', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
  { group: '', version: 'v1', plural: 'events', kind: 'Event', verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'] },
  { group: 'apps', version: 'v1', plural: 'deployments', kind: 'Deployment', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
];

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KObj;
  resource: string;
}

/** Where a service port is served locally: the pod runner installs this. */
export type ServiceResolver = (namespace: string, name: string, port: string) => { port: number; https: boolean } | undefined;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Strategic merge patch, limited to what dmctl sends: merge patch, with object lists keyed by `name` merged by name. */
export function strategicMergePatch(target: unknown, patch: unknown): unknown {
  if (Array.isArray(patch) && Array.isArray(target) && patch.every((p) => isObj(p) && typeof p.name === 'string') && target.every((t) => isObj(t) && typeof t.name === 'string')) {
    const out = target.map((t) => structuredClone(t)) as Record<string, unknown>[];
    for (const p of patch as Record<string, unknown>[]) {
      const i = out.findIndex((t) => t.name === p.name);
      if (p.$patch === 'delete') {
        if (i >= 0) out.splice(i, 1);
      } else if (i >= 0) out[i] = strategicMergePatch(out[i], p) as Record<string, unknown>;
      else out.push(structuredClone(p));
    }
    return out;
  }
  if (!isObj(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = strategicMergePatch(out[k], v);
  }
  return out;
}

/** Equality- and set-based label selectors. */
export function matchesSelector(labels: Record<string, string> | undefined, selector: string | undefined): boolean {
  if (!selector) return true;
  const l = labels ?? {};
  const terms = selector.match(/([^,(]+(\([^)]*\))?)/g) ?? [];
  for (const raw of terms) {
    const t = raw.trim();
    if (!t) continue;
    let m: RegExpExecArray | null;
    if ((m = /^([^\s!=]+)\s*(==|=)\s*(.*)$/.exec(t))) {
      if (l[m[1]!] !== m[3]!.trim()) return false;
    } else if ((m = /^([^\s!=]+)\s*!=\s*(.*)$/.exec(t))) {
      if (l[m[1]!] === m[2]!.trim()) return false;
    } else if ((m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(t))) {
      const vals = m[3]!.split(',').map((s) => s.trim());
      const has = m[1]! in l && vals.includes(l[m[1]!]!);
      if (m[2] === 'in' ? !has : has) return false;
    } else if (t.startsWith('!')) {
      if (t.slice(1) in l) return false;
    } else if (!(t in l)) return false;
  }
  return true;
}

interface LogBuffer {
  chunks: Buffer[];
  ended: boolean;
  emitter: EventEmitter;
}

export class KubeApiStandIn {
  private server: http.Server;
  private store = new Map<string, KObj>();
  private rv = 1;
  private uidCounter = 0;
  private eventSeq = 0;
  readonly events = new EventEmitter();
  private forbidden: { verb: string; resource: string }[] = [];
  private logs = new Map<string, LogBuffer>();
  private watches = new Set<http.ServerResponse>();
  serviceResolver: ServiceResolver | undefined;
  /** Requests seen (method + path), for tests that assert what dmctl did (e.g. never `exec`). */
  readonly requests: string[] = [];
  port = 0;

  constructor() {
    this.events.setMaxListeners(0);
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const w of this.watches) w.destroy();
    for (const b of this.logs.values()) b.emitter.emit('end');
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** A kubeconfig pointing at this stand-in (http, so insecure-skip-tls-verify as client-node requires). */
  async writeKubeconfig(file: string, namespace = 'default', user = 'tester'): Promise<void> {
    const text = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: standin',
      '  cluster:',
      `    server: ${this.url}`,
      '    insecure-skip-tls-verify: true',
      'users:',
      `- name: ${user}`,
      '  user:',
      '    token: standin-token',
      'contexts:',
      '- name: standin',
      '  context:',
      '    cluster: standin',
      `    user: ${user}`,
      `    namespace: ${namespace}`,
      'current-context: standin',
      '',
    ].join('\n');
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, text, { mode: 0o600 });
  }

  /** Make every `verb` on `resource` answer 403 Forbidden (as RBAC would). */
  forbid(verb: string, resource: string): void {
    this.forbidden.push({ verb, resource });
  }

  allowAll(): void {
    this.forbidden = [];
  }

  // ---- direct access for the pod runner and tests -------------------------------------------------

  private key(resource: string, ns: string, name: string): string {
    return `${resource}|${ns}|${name}`;
  }

  get(resource: string, ns: string, name: string): KObj | undefined {
    const o = this.store.get(this.key(resource, ns, name));
    return o ? structuredClone(o) : undefined;
  }

  list(resource: string, ns?: string, selector?: string): KObj[] {
    const out: KObj[] = [];
    for (const [k, o] of this.store) {
      const [r, n] = k.split('|');
      if (r !== resource || (ns !== undefined && n !== ns)) continue;
      if (!matchesSelector(o.metadata.labels, selector)) continue;
      out.push(structuredClone(o));
    }
    return out.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  }

  /** Every object in the store (tests assert nothing is left behind). */
  all(): { resource: string; namespace: string; name: string }[] {
    return [...this.store.keys()].map((k) => {
      const [resource, namespace, name] = k.split('|') as [string, string, string];
      return { resource, namespace, name };
    });
  }

  private emit(type: WatchEvent['type'], resource: string, obj: KObj): void {
    this.events.emit('event', { type, resource, object: structuredClone(obj) } satisfies WatchEvent);
  }

  create(resource: string, ns: string, obj: KObj): KObj {
    const def = RESOURCES.find((r) => r.plural === resource)!;
    const o = structuredClone(obj);
    o.apiVersion = def.group ? `${def.group}/${def.version}` : def.version;
    o.kind = def.kind;
    if (!o.metadata.name && typeof o.metadata.generateName === 'string') {
      o.metadata.name = `${o.metadata.generateName}${Math.random().toString(36).slice(2, 7)}`;
    }
    o.metadata.namespace = ns;
    o.metadata.uid = `uid-${++this.uidCounter}`;
    o.metadata.resourceVersion = String(++this.rv);
    o.metadata.generation = 1;
    o.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    if (resource === 'secrets' && isObj(o.stringData)) {
      const data = (isObj(o.data) ? o.data : {}) as Record<string, string>;
      for (const [k, v] of Object.entries(o.stringData)) data[k] = Buffer.from(String(v)).toString('base64');
      o.data = data;
      delete o.stringData;
    }
    if (resource === 'pods') o.status = o.status ?? { phase: 'Pending' };
    this.store.set(this.key(resource, ns, o.metadata.name), o);
    this.emit('ADDED', resource, o);
    return structuredClone(o);
  }

  /** Replaces an object (status updates from the pod runner go through here too). */
  update(resource: string, ns: string, obj: KObj, opts: { checkVersion?: boolean; bumpGeneration?: boolean } = {}): KObj {
    const k = this.key(resource, ns, obj.metadata.name);
    const old = this.store.get(k);
    if (!old) throw new ApiError(404, 'NotFound', `${resource} "${obj.metadata.name}" not found`, resource, obj.metadata.name);
    if (opts.checkVersion && obj.metadata.resourceVersion && obj.metadata.resourceVersion !== old.metadata.resourceVersion) {
      throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${obj.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`, resource, obj.metadata.name);
    }
    const o = structuredClone(obj);
    o.apiVersion = old.apiVersion;
    o.kind = old.kind;
    o.metadata = { ...o.metadata, namespace: ns, uid: old.metadata.uid, creationTimestamp: old.metadata.creationTimestamp, resourceVersion: String(++this.rv) };
    const specChanged = JSON.stringify(old.spec) !== JSON.stringify(o.spec);
    o.metadata.generation = (old.metadata.generation ?? 1) + (opts.bumpGeneration !== false && specChanged ? 1 : 0);
    if (resource === 'secrets' && isObj(o.stringData)) {
      const data = (isObj(o.data) ? o.data : {}) as Record<string, string>;
      for (const [kk, v] of Object.entries(o.stringData)) data[kk] = Buffer.from(String(v)).toString('base64');
      o.data = data;
      delete o.stringData;
    }
    if (o.status === undefined && old.status !== undefined) o.status = old.status;
    this.store.set(k, o);
    this.emit('MODIFIED', resource, o);
    return structuredClone(o);
  }

  /** Status-only update that keeps everything else (the pod runner / controllers). */
  setStatus(resource: string, ns: string, name: string, status: unknown): void {
    const o = this.store.get(this.key(resource, ns, name));
    if (!o) return;
    o.status = structuredClone(status);
    o.metadata.resourceVersion = String(++this.rv);
    this.emit('MODIFIED', resource, o);
  }

  remove(resource: string, ns: string, name: string): KObj | undefined {
    const k = this.key(resource, ns, name);
    const o = this.store.get(k);
    if (!o) return undefined;
    this.store.delete(k);
    o.metadata.resourceVersion = String(++this.rv);
    this.emit('DELETED', resource, o);
    // Garbage collector: dependents whose ownerReferences name this object.
    for (const [kk, dep] of [...this.store]) {
      if (dep.metadata.ownerReferences?.some((r) => r.uid === o.metadata.uid)) {
        const [r, n, nm] = kk.split('|') as [string, string, string];
        this.remove(r, n, nm);
      }
    }
    return o;
  }

  // ---- events ------------------------------------------------------------------------------------

  /**
   * Records a core/v1 Event about an object, as a component's event recorder does: a new Event named NAME.HEX the
   * first time, and for a repeat (same involved object, source, type, reason and message) the existing Event with
   * count + 1 and a new lastTimestamp. Returns the Event as stored.
   */
  recordEvent(involved: KObj, e: { type: 'Normal' | 'Warning'; reason: string; message: string; component: string; host?: string }): KObj {
    const ns = involved.metadata.namespace ?? 'default';
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const same = this.list('events', ns).find((x) => {
      const io = x.involvedObject as { uid?: string; name?: string };
      return io.uid === involved.metadata.uid && io.name === involved.metadata.name && (x.source as { component?: string })?.component === e.component && x.type === e.type && x.reason === e.reason && x.message === e.message;
    });
    if (same) return this.update('events', ns, { ...same, count: Number(same.count ?? 1) + 1, lastTimestamp: now });
    return this.create('events', ns, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: `${involved.metadata.name}.${Date.now().toString(16)}${(++this.eventSeq).toString(16).padStart(5, '0')}` },
      involvedObject: { kind: involved.kind, namespace: ns, name: involved.metadata.name, uid: involved.metadata.uid, apiVersion: involved.apiVersion, resourceVersion: involved.metadata.resourceVersion },
      reason: e.reason,
      message: e.message,
      source: { component: e.component, ...(e.host ? { host: e.host } : {}) },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
      type: e.type,
      eventTime: null,
      reportingComponent: e.component,
      reportingInstance: e.host ?? '',
    });
  }

  // ---- pod logs ------------------------------------------------------------------------------------

  private logBuf(ns: string, pod: string, container: string): LogBuffer {
    const k = `${ns}|${pod}|${container}`;
    let b = this.logs.get(k);
    if (!b) {
      b = { chunks: [], ended: false, emitter: new EventEmitter() };
      b.emitter.setMaxListeners(0);
      this.logs.set(k, b);
    }
    return b;
  }

  appendLog(ns: string, pod: string, container: string, chunk: Buffer): void {
    const b = this.logBuf(ns, pod, container);
    b.chunks.push(chunk);
    b.emitter.emit('data', chunk);
  }

  endLog(ns: string, pod: string, container: string): void {
    const b = this.logBuf(ns, pod, container);
    b.ended = true;
    b.emitter.emit('end');
  }

  // ---- HTTP ----------------------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    this.requests.push(`${method} ${u.pathname}${u.search}`);
    const sendJson = (status: number, body: unknown) => {
      const buf = Buffer.from(JSON.stringify(body));
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': buf.length });
      res.end(buf);
    };
    try {
      const p = u.pathname.replace(/\/+$/, '') || '/';
      // Discovery.
      if (p === '/api') return sendJson(200, { kind: 'APIVersions', versions: ['v1'] });
      if (p === '/apis') {
        return sendJson(200, {
          kind: 'APIGroupList',
          apiVersion: 'v1',
          groups: ['apps', 'authorization.k8s.io'].map((g) => ({ name: g, versions: [{ groupVersion: `${g}/v1`, version: 'v1' }], preferredVersion: { groupVersion: `${g}/v1`, version: 'v1' } })),
        });
      }
      if (p === '/api/v1' || p === '/apis/apps/v1' || p === '/apis/authorization.k8s.io/v1') {
        const gv = p === '/api/v1' ? 'v1' : p.slice('/apis/'.length);
        const group = gv === 'v1' ? '' : gv.split('/')[0]!;
        const resources =
          group === 'authorization.k8s.io'
            ? [{ name: 'selfsubjectaccessreviews', singularName: '', namespaced: false, kind: 'SelfSubjectAccessReview', verbs: ['create'] }]
            : RESOURCES.filter((r) => r.group === group).flatMap((r) => [
                { name: r.plural, singularName: r.kind.toLowerCase(), namespaced: true, kind: r.kind, verbs: r.verbs },
                ...(r.plural === 'pods' ? [{ name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] }] : []),
                ...(r.plural === 'services' ? [{ name: 'services/proxy', singularName: '', namespaced: true, kind: 'ServiceProxyOptions', verbs: ['create', 'delete', 'get', 'patch', 'update'] }] : []),
              ]);
        return sendJson(200, { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: gv, resources });
      }
      if (p === '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews' && method === 'POST') {
        const body = (await readJson(req)) as { spec?: { resourceAttributes?: { verb?: string; resource?: string; subresource?: string } } };
        const ra = body.spec?.resourceAttributes ?? {};
        const res2 = ra.subresource ? `${ra.resource}/${ra.subresource}` : ra.resource ?? '';
        const denied = this.isForbidden(ra.verb ?? '', res2);
        return sendJson(201, { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: body.spec, status: { allowed: !denied, ...(denied ? { reason: 'forbidden by the test' } : {}) } });
      }
      const m = /^\/(?:api\/v1|apis\/(apps)\/v1)\/namespaces\/([^/]+)\/([^/]+)(?:\/([^/]+)(?:\/(.*))?)?$/.exec(p);
      if (!m) throw new ApiError(404, 'NotFound', `the server could not find the requested resource`, '', '');
      const group = m[1] ?? '';
      const ns = decodeURIComponent(m[2]!);
      const resource = m[3]!;
      const name = m[4] !== undefined ? decodeURIComponent(m[4]) : undefined;
      const sub = m[5];
      const def = RESOURCES.find((r) => r.plural === resource && r.group === group);
      if (!def) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', resource, name ?? '');
      const watch = u.searchParams.get('watch');
      const isWatch = watch === '1' || watch === 'true';
      const verb =
        sub === 'log' ? 'get' : sub?.startsWith('proxy') ? methodVerb(method, true) : name === undefined ? (method === 'GET' ? (isWatch ? 'watch' : 'list') : method === 'POST' ? 'create' : 'deletecollection') : methodVerb(method, true);
      const resName = sub === 'log' ? 'pods/log' : sub?.startsWith('proxy') ? 'services/proxy' : resource;
      if (this.isForbidden(verb, resName)) {
        const [r0, sr] = resName.split('/');
        throw new ApiError(
          403,
          'Forbidden',
          `${resName} ${name ? `"${name}" ` : ''}is forbidden: User "system:serviceaccount:${ns}:tester" cannot ${verb} resource "${r0}"${sr ? ` in subresource "${sr}"` : ''} in API group "${group}" in the namespace "${ns}"`,
          r0!,
          name ?? '',
          group,
        );
      }
      if (sub === 'log' && resource === 'pods' && name) return await this.serveLog(req, res, u, ns, name);
      if (resource === 'services' && name && sub !== undefined && (sub === 'proxy' || sub.startsWith('proxy/'))) {
        return await this.proxy(req, res, ns, name, sub.slice('proxy'.length) || '/', u.search);
      }
      if (sub === 'status' && name) {
        if (method === 'GET') {
          const o = this.get(resource, ns, name);
          if (!o) throw notFound(def, name);
          return sendJson(200, o);
        }
        throw new ApiError(405, 'MethodNotAllowed', 'status updates are done by the pod runner', resource, name);
      }
      if (sub !== undefined) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', resource, name ?? '');
      if (name === undefined) {
        const fsel = u.searchParams.get('fieldSelector');
        if (method === 'GET' && fsel) parseFieldSelector(resource, fsel);
        if (method === 'GET' && isWatch) return this.serveWatch(req, res, resource, ns, u.searchParams.get('labelSelector') ?? undefined, u.searchParams.get('resourceVersion') ?? undefined, u.searchParams.get('fieldSelector') ?? undefined);
        if (method === 'GET') {
          let items = this.list(resource, ns, u.searchParams.get('labelSelector') ?? undefined);
          const fs = u.searchParams.get('fieldSelector');
          if (fs) items = items.filter((o) => matchesField(o, fs));
          return sendJson(200, { apiVersion: def.group ? `${def.group}/v1` : 'v1', kind: `${def.kind}List`, metadata: { resourceVersion: String(this.rv) }, items });
        }
        if (method === 'POST') {
          const body = (await readJson(req)) as KObj;
          if (!isObj(body) || !isObj(body.metadata)) throw new ApiError(400, 'BadRequest', 'metadata is required', resource, '');
          if (body.kind && body.kind !== def.kind) throw new ApiError(400, 'BadRequest', `the body kind ${String(body.kind)} does not match ${def.kind}`, resource, '');
          const nm = body.metadata.name;
          if (!nm && !body.metadata.generateName) throw new ApiError(422, 'Invalid', `${def.kind} "" is invalid: metadata.name: Required value: name or generateName is required`, resource, '');
          if (body.metadata.namespace && body.metadata.namespace !== ns) throw new ApiError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request', resource, nm);
          if (nm && this.store.has(this.key(resource, ns, nm))) throw new ApiError(409, 'AlreadyExists', `${resource} "${nm}" already exists`, resource, nm, group);
          const err = validate(def, { ...body, metadata: { ...body.metadata, namespace: ns } });
          if (err) throw new ApiError(422, 'Invalid', `${def.kind} "${nm}" is invalid: ${err}`, resource, nm);
          if (u.searchParams.get('dryRun') === 'All') return sendJson(201, body);
          return sendJson(201, this.create(resource, ns, body));
        }
        throw new ApiError(405, 'MethodNotAllowed', 'method not allowed', resource, '');
      }
      const cur = this.store.get(this.key(resource, ns, name));
      switch (method) {
        case 'GET':
          if (!cur) throw notFound(def, name);
          return sendJson(200, cur);
        case 'PUT': {
          if (!cur) throw notFound(def, name);
          const body = (await readJson(req)) as KObj;
          if (!isObj(body) || !isObj(body.metadata) || body.metadata.name !== name) throw new ApiError(400, 'BadRequest', 'the name of the object does not match the name on the URL', resource, name);
          const err = validate(def, body);
          if (err) throw new ApiError(422, 'Invalid', `${def.kind} "${name}" is invalid: ${err}`, resource, name);
          return sendJson(200, this.update(resource, ns, { ...body, status: body.status ?? cur.status }, { checkVersion: true }));
        }
        case 'PATCH': {
          if (!cur) throw notFound(def, name);
          const ct = String(req.headers['content-type'] ?? '').split(';')[0]!.trim();
          const patch = await readJson(req);
          let next: KObj;
          if (ct === 'application/merge-patch+json') next = mergePatch(cur, patch) as KObj;
          else if (ct === 'application/strategic-merge-patch+json') next = strategicMergePatch(cur, patch) as KObj;
          else throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got ${ct})`, resource, name);
          if (isObj(patch) && isObj(patch.metadata) && patch.metadata.resourceVersion && patch.metadata.resourceVersion !== cur.metadata.resourceVersion) {
            throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`, resource, name);
          }
          next.metadata.name = name;
          const err = validate(def, next);
          if (err) throw new ApiError(422, 'Invalid', `${def.kind} "${name}" is invalid: ${err}`, resource, name);
          return sendJson(200, this.update(resource, ns, next));
        }
        case 'DELETE': {
          const o = this.remove(resource, ns, name);
          if (!o) throw notFound(def, name);
          return sendJson(200, { kind: 'Status', apiVersion: 'v1', status: 'Success', details: { name, kind: resource, uid: o.metadata.uid } });
        }
        default:
          throw new ApiError(405, 'MethodNotAllowed', 'method not allowed', resource, name);
      }
    } catch (err) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof ApiError) return sendJson(err.code, err.status());
      return sendJson(500, { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: String((err as Error)?.message ?? err), reason: 'InternalError', code: 500 });
    }
  }

  private isForbidden(verb: string, resource: string): boolean {
    return this.forbidden.some((f) => (f.verb === '*' || f.verb === verb) && (f.resource === '*' || f.resource === resource));
  }

  private serveWatch(req: http.IncomingMessage, res: http.ServerResponse, resource: string, ns: string, selector: string | undefined, rv: string | undefined, fieldSelector: string | undefined): void {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    this.watches.add(res);
    const send = (type: string, object: KObj) => res.write(JSON.stringify({ type, object }) + '\n');
    const ok = (o: KObj) => matchesSelector(o.metadata.labels, selector) && (!fieldSelector || matchesField(o, fieldSelector));
    if (!rv || rv === '0') for (const o of this.list(resource, ns)) if (ok(o)) send('ADDED', o);
    const onEvent = (e: WatchEvent) => {
      if (e.resource !== resource || e.object.metadata.namespace !== ns || !ok(e.object)) return;
      if (rv && Number(e.object.metadata.resourceVersion) <= Number(rv)) return;
      send(e.type, e.object);
    };
    this.events.on('event', onEvent);
    const close = () => {
      this.events.off('event', onEvent);
      this.watches.delete(res);
    };
    req.on('close', close);
    res.on('close', close);
  }

  private async serveLog(req: http.IncomingMessage, res: http.ServerResponse, u: URL, ns: string, name: string): Promise<void> {
    const pod = this.get('pods', ns, name);
    if (!pod) throw notFound(RESOURCES.find((r) => r.plural === 'pods')!, name);
    const containers = ((pod.spec as { containers?: { name: string }[] })?.containers ?? []).map((c) => c.name);
    let container = u.searchParams.get('container') ?? undefined;
    if (!container) {
      if (containers.length !== 1) throw new ApiError(400, 'BadRequest', `a container name must be specified for pod ${name}, choose one of: [${containers.join(' ')}]`, 'pods', name);
      container = containers[0]!;
    }
    if (!containers.includes(container)) throw new ApiError(400, 'BadRequest', `container ${container} is not valid for pod ${name}`, 'pods', name);
    const status = pod.status as { phase?: string; containerStatuses?: { name: string; state?: { waiting?: { reason?: string } } }[] } | undefined;
    const cs = status?.containerStatuses?.find((c) => c.name === container);
    if (!cs || cs.state?.waiting) {
      const reason = cs?.state?.waiting?.reason ?? 'ContainerCreating';
      throw new ApiError(400, 'BadRequest', `container "${container}" in pod "${name}" is waiting to start: ${reason}`, 'pods', name);
    }
    const b = this.logBuf(ns, name, container);
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Transfer-Encoding': 'chunked' });
    for (const c of b.chunks) res.write(c);
    const follow = u.searchParams.get('follow') === 'true' || u.searchParams.get('follow') === '1';
    if (!follow || b.ended) {
      res.end();
      return;
    }
    const onData = (c: Buffer) => res.write(c);
    const onEnd = () => {
      cleanup();
      res.end();
    };
    const cleanup = () => {
      b.emitter.off('data', onData);
      b.emitter.off('end', onEnd);
    };
    b.emitter.on('data', onData);
    b.emitter.on('end', onEnd);
    req.on('close', cleanup);
  }

  private async proxy(req: http.IncomingMessage, res: http.ServerResponse, ns: string, nameSpec: string, rest: string, search: string): Promise<void> {
    // NAME, NAME:PORT, SCHEME:NAME:PORT
    const parts = nameSpec.split(':');
    let scheme = 'http';
    let name: string;
    let port = '';
    if (parts.length === 3) [scheme, name, port] = parts as [string, string, string];
    else if (parts.length === 2) [name, port] = parts as [string, string];
    else name = parts[0]!;
    const svc = this.get('services', ns, name);
    if (!svc) throw notFound(RESOURCES.find((r) => r.plural === 'services')!, name);
    const target = this.serviceResolver?.(ns, name, port);
    if (!target) throw new ApiError(503, 'ServiceUnavailable', `no endpoints available for service "${nameSpec}"`, 'services', name);
    const body = await readBody(req);
    const headers = { ...req.headers };
    delete headers.authorization; // the apiserver never forwards the caller's credentials
    delete headers.host;
    const mod = scheme === 'https' ? https : http;
    await new Promise<void>((resolve) => {
      const preq = mod.request(
        { host: '127.0.0.1', port: target.port, method: req.method, path: (rest.startsWith('/') ? rest : '/' + rest) + search, headers: { ...headers, 'content-length': body.length }, rejectUnauthorized: false },
        (pres) => {
          res.writeHead(pres.statusCode ?? 502, pres.headers);
          pres.pipe(res);
          pres.on('end', resolve);
        },
      );
      preq.on('error', (e) => {
        if (!res.headersSent) {
          const st = new ApiError(503, 'ServiceUnavailable', `error trying to reach service: ${e.message}`, 'services', name).status();
          res.writeHead(503, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify(st));
        } else res.destroy();
        resolve();
      });
      preq.end(body);
    });
  }
}

function methodVerb(method: string, named: boolean): string {
  switch (method) {
    case 'GET': return named ? 'get' : 'list';
    case 'POST': return 'create';
    case 'PUT': return 'update';
    case 'PATCH': return 'patch';
    case 'DELETE': return 'delete';
    default: return method.toLowerCase();
  }
}

/** The field labels the API server accepts in fieldSelector, per resource (besides metadata.name/namespace). */
const SELECTABLE_FIELDS: Record<string, string[]> = {
  pods: ['spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName', 'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName'],
  events: ['involvedObject.kind', 'involvedObject.namespace', 'involvedObject.name', 'involvedObject.uid', 'involvedObject.apiVersion', 'involvedObject.resourceVersion', 'involvedObject.fieldPath', 'reason', 'reportingComponent', 'source', 'type'],
  secrets: ['type'],
};

/** Parses a fieldSelector; throws 400 `field label not supported` for a field the resource does not index. */
function parseFieldSelector(resource: string, selector: string): { field: string; op: string; value: string }[] {
  const out: { field: string; op: string; value: string }[] = [];
  for (const t of selector.split(',')) {
    if (!t.trim()) continue;
    const m = /^([^!=]+)(!=|==|=)(.*)$/.exec(t.trim());
    if (!m) throw new ApiError(400, 'BadRequest', `unable to parse requirement: invalid field selector: '${t.trim()}'`, resource, '');
    const field = m[1]!.trim();
    if (field !== 'metadata.name' && field !== 'metadata.namespace' && !(SELECTABLE_FIELDS[resource] ?? []).includes(field)) {
      throw new ApiError(400, 'BadRequest', `field label not supported: ${field}`, resource, '');
    }
    out.push({ field, op: m[2]!, value: m[3]! });
  }
  return out;
}

function fieldValue(o: KObj, field: string): string {
  // Events: `source` is source.component (reportingController when that is empty), as the API server indexes it.
  if (o.kind === 'Event' && (field === 'source' || field === 'reportingComponent')) {
    const src = (o.source as { component?: string } | undefined)?.component;
    const rc = o.reportingComponent as string | undefined;
    return field === 'source' ? (src || rc || '') : (rc ?? '');
  }
  const val = field.split('.').reduce<unknown>((acc, k) => (isObj(acc) ? acc[k] : undefined), o);
  return String(val ?? '');
}

function matchesField(o: KObj, selector: string): boolean {
  const resource = RESOURCES.find((r) => r.kind === o.kind)?.plural ?? '';
  for (const req of parseFieldSelector(resource, selector)) {
    const eq = fieldValue(o, req.field) === req.value;
    if (req.op === '!=' ? eq : !eq) return false;
  }
  return true;
}

/** The few validations the real API server does that dmctl could get wrong. */
function validate(def: ResourceDef, o: KObj): string | undefined {
  const name = o.metadata?.name;
  if (name && !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name)) return `metadata.name: Invalid value: "${name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'`;
  for (const [k, v] of Object.entries(o.metadata?.labels ?? {})) {
    if (typeof v !== 'string' || v.length > 63 || (v && !/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(v))) return `metadata.labels: Invalid value: "${String(v)}" (label ${k})`;
  }
  if (def.kind === 'Secret' && isObj(o.data)) {
    for (const [k, v] of Object.entries(o.data)) {
      if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) return `data[${k}]: Invalid value: not base64`;
    }
    if (o.type === 'kubernetes.io/tls' && (!(o.data as Record<string, string>)['tls.crt'] || !(o.data as Record<string, string>)['tls.key'])) return 'data[tls.crt]/data[tls.key]: Required value';
  }
  const podSpec = def.kind === 'Pod' ? (o.spec as Record<string, unknown>) : def.kind === 'Deployment' ? ((o.spec as { template?: { spec?: Record<string, unknown> } })?.template?.spec) : undefined;
  if (def.kind === 'Pod' || def.kind === 'Deployment') {
    if (!podSpec || !Array.isArray(podSpec.containers) || podSpec.containers.length === 0) return 'spec.containers: Required value';
    const vols = new Set(((podSpec.volumes as { name: string }[] | undefined) ?? []).map((v) => v.name));
    for (const c of podSpec.containers as { name?: string; image?: string; volumeMounts?: { name: string; mountPath: string }[] }[]) {
      if (!c.name) return 'spec.containers[].name: Required value';
      if (!c.image) return `spec.containers[${c.name}].image: Required value`;
      for (const vm of c.volumeMounts ?? []) {
        if (!vols.has(vm.name)) return `spec.containers[${c.name}].volumeMounts.name: Not found: "${vm.name}"`;
        if (!vm.mountPath?.startsWith('/')) return `spec.containers[${c.name}].volumeMounts.mountPath: Invalid value`;
      }
    }
    if (def.kind === 'Deployment') {
      const d = o.spec as { selector?: { matchLabels?: Record<string, string> }; template?: { metadata?: { labels?: Record<string, string> } } };
      const sel = d.selector?.matchLabels ?? {};
      if (!Object.keys(sel).length) return 'spec.selector: Required value';
      for (const [k, v] of Object.entries(sel)) if (d.template?.metadata?.labels?.[k] !== v) return 'spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`';
    }
  }
  if (def.kind === 'Event') {
    const io = o.involvedObject as { kind?: string; name?: string; namespace?: string } | undefined;
    if (!isObj(io)) return 'involvedObject: Required value';
    if (io.namespace !== o.metadata.namespace && o.metadata.namespace !== undefined) return `involvedObject.namespace: Invalid value: "${String(io.namespace ?? '')}": does not match event.namespace`;
  }
  if (def.kind === 'Service') {
    const ports = (o.spec as { ports?: unknown[] })?.ports;
    if (!Array.isArray(ports) || !ports.length) return 'spec.ports: Required value';
  }
  return undefined;
}

function notFound(def: ResourceDef, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${def.plural}${def.group ? '.' + def.group : ''} "${name}" not found`, def.plural, name, def.group);
}

export class ApiError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly resource: string, readonly objName: string, readonly group = '') {
    super(message);
  }
  status(): unknown {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      details: { name: this.objName, ...(this.group ? { group: this.group } : {}), kind: this.resource },
      code: this.code,
    };
  }
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const b = await readBody(req);
  try {
    return JSON.parse(b.toString('utf8'));
  } catch {
    throw new ApiError(400, 'BadRequest', 'the request body is not valid JSON', '', '');
  }
}
