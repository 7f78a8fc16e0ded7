// restic REST protocol client: rest:http(s)://[USER:PASS@]HOST:PORT/[PATH/]. Protocol v2 listings
// (names and sizes) with v1 fallback (HEAD per name), a Range header on every GET, HTTP Basic auth,
// a keep-alive agent, a custom CA (--cacert) or pinning of the server certificate by the hex
// SHA-256 of its DER bytes (--server-cert-fingerprint): the socket is handed to a request only after
// the fingerprint matched, so no byte (and no password) goes to a server that does not match.
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { StorageError, UsageError } from '../core/errors.js';
import { Backend, FileInfo, FileType } from './backend.js';
import { readBody } from './body.js';
import { RequestContext, describeNetworkError, storageError, validName, Semaphore } from './retry.js';
import type { RestLocation } from './url.js';
import { httpsAgentOptions } from './tls.js';

const V2 = 'application/vnd.x.restic.rest.v2';

export interface RestSettings {
  location: RestLocation;
  insecureTls?: boolean;
  ca?: string | Buffer;
  /** Hex SHA-256 of the server certificate's DER bytes (colons allowed). */
  serverCertFingerprint?: string;
  connections?: number;
}

export function normalizeFingerprint(fp: string): string {
  const hex = fp.replace(/[:\s]/g, '').toLowerCase().replace(/^sha256=?/, '');
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new UsageError('invalid --server-cert-fingerprint', 'give the hex SHA-256 of the server certificate (64 hex digits, colons allowed)');
  return hex;
}

function pinnedAgent(opts: https.AgentOptions, fingerprint: string): https.Agent {
  const agent = new https.Agent({ ...opts, rejectUnauthorized: false });
  // http.Agent accepts an asynchronous createConnection(options, callback): the socket reaches the
  // request only through the callback, after the certificate was checked.
  (agent as any).createConnection = (options: tls.ConnectionOptions, cb: (err: Error | null, socket?: tls.TLSSocket) => void): undefined => {
    const sock = tls.connect({ ...options, rejectUnauthorized: false });
    const onError = (err: Error) => cb(err);
    sock.once('error', onError);
    sock.once('secureConnect', () => {
      sock.removeListener('error', onError);
      const got = (sock.getPeerCertificate()?.fingerprint256 ?? '').replace(/:/g, '').toLowerCase();
      if (got !== fingerprint) {
        const err = Object.assign(new Error('server certificate fingerprint does not match'), { code: 'ERR_DMCTL_CERT_PIN' });
        sock.destroy();
        cb(err);
        return;
      }
      cb(null, sock);
    });
    return undefined;
  };
  return agent;
}

interface Resp {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export class RestBackend implements Backend {
  readonly location: string;
  readonly connections: number;
  private readonly base: URL;
  private readonly auth?: string;
  private readonly agent: http.Agent | https.Agent;

  constructor(s: RestSettings) {
    this.location = s.location.display;
    this.connections = s.connections ?? 5;
    this.base = new URL(s.location.url);
    if (s.location.username !== undefined) this.auth = 'Basic ' + Buffer.from(`${s.location.username}:${s.location.password ?? ''}`).toString('base64');
    const maxSockets = Math.max(4, this.connections * 2);
    if (this.base.protocol === 'https:') {
      const opts = httpsAgentOptions({ ca: s.ca, insecureTls: s.insecureTls }, { maxSockets });
      this.agent = s.serverCertFingerprint ? pinnedAgent(opts, normalizeFingerprint(s.serverCertFingerprint)) : new https.Agent(opts);
    } else {
      this.agent = new http.Agent({ keepAlive: true, maxSockets });
    }
  }

  private path(type: FileType, name: string): string {
    return type === 'config' ? 'config' : `${type}/${name}`;
  }

  private request(method: string, rel: string, opts: { body?: Uint8Array; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Resp> {
    const url = new URL(rel, this.base);
    const headers: Record<string, string> = { ...opts.headers };
    if (this.auth) headers.authorization = this.auth;
    if (opts.body) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = String(opts.body.length);
    }
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise<Resp>((resolve, reject) => {
      const req = mod.request(url, { method, headers, agent: this.agent, signal: opts.signal }, (res) => {
        // A body cut short (connection closed or reset mid-way) is a transient network error.
        const cut = () => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
        res.on('aborted', () => reject(cut()));
        const len = Number(res.headers['content-length']);
        const ok = res.statusCode === 200 || res.statusCode === 206;
        readBody(res, method !== 'HEAD' && ok && Number.isFinite(len) ? len : undefined).then(
          (body) => {
            if (!res.complete) reject(cut());
            else resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
          },
          (err: NodeJS.ErrnoException) => reject(err?.code ? err : cut()),
        );
      });
      req.on('error', reject);
      req.end(opts.body ? Buffer.from(opts.body.buffer, opts.body.byteOffset, opts.body.length) : undefined);
    });
  }

  private netFail(err: unknown, op: string, ctx?: RequestContext): never {
    if ((err as any)?.code === 'ERR_DMCTL_CERT_PIN') throw storageError('access-denied', `${this.location}: ${op}: server certificate does not match --server-cert-fingerprint`, { cause: err, hint: 'the server is not the one you pinned; check the fingerprint' });
    const net = describeNetworkError(err) ?? (ctx?.signal?.aborted ? { kind: 'unreachable' as const, text: 'request timed out', retryable: true, hint: undefined } : undefined);
    if (net) throw storageError(net.kind, `${this.location}: ${op}: ${net.text}`, { cause: err, retryable: net.retryable, hint: net.hint });
    throw storageError('other', `${this.location}: ${op}: ${String((err as Error)?.message ?? err).split('\n')[0]}`, { cause: err });
  }

  private statusFail(r: Resp, op: string): never {
    const st = r.status;
    const text = r.body.toString('utf8', 0, Math.min(r.body.length, 200)).trim().split('\n')[0];
    const m = (t: string) => `${this.location}: ${op}: ${t}`;
    if (st === 404) throw storageError('not-found', m('not found'), { status: st });
    if (st === 401) throw storageError('access-denied', m('authentication failed (HTTP 401)'), { status: st, hint: 'check the user and password in the rest: URL' });
    if (st === 403) throw storageError('access-denied', m('forbidden (HTTP 403)'), { status: st, hint: 'the server may be append-only or deny this repository path' });
    if (st === 507) throw storageError('no-space', m('server has no space or the quota is exceeded (HTTP 507)'), { status: st });
    if (st === 416) throw storageError('other', m('byte range is past the end of the file'), { status: st });
    if (st === 429 || st === 408 || st >= 500) throw storageError('unreachable', m(`server error (HTTP ${st}${text ? ': ' + text : ''})`), { status: st, retryable: st !== 501 });
    throw storageError('other', m(`unexpected HTTP ${st}${text ? ': ' + text : ''}`), { status: st });
  }

  private async call(method: string, rel: string, op: string, ctx: RequestContext | undefined, opts: { body?: Uint8Array; headers?: Record<string, string> } = {}): Promise<Resp> {
    try {
      return await this.request(method, rel, { ...opts, signal: ctx?.signal });
    } catch (err) {
      this.netFail(err, op, ctx);
    }
  }

  async create(ctx?: RequestContext): Promise<void> {
    const r = await this.call('POST', '?create=true', 'creating the repository', ctx, { headers: { 'content-type': 'binary/octet-stream' } });
    if (r.status !== 200) this.statusFail(r, 'creating the repository');
  }

  async save(type: FileType, name: string, data: Uint8Array, ctx?: RequestContext): Promise<void> {
    const op = `saving ${this.path(type, name)}`;
    // rest-server refuses to overwrite (403), but other implementations (rclone serve restic)
    // silently replace files: check first so the no-overwrite contract holds against them too.
    const exists = await this.stat(type, name, ctx).then(() => true, (err: StorageError) => {
      if (err.kind === 'not-found') return false;
      throw err;
    });
    if (exists) throw storageError('already-exists', `${this.location}: ${op}: already exists`);
    const r = await this.call('POST', this.path(type, name), op, ctx, { body: data, headers: { accept: V2 } });
    if (r.status === 200) return;
    if (r.status === 403) {
      // rest-server answers 403 when the file exists (it never overwrites); tell that from a denial.
      const exists = await this.stat(type, name, ctx).then(() => true, () => false);
      if (exists) throw storageError('already-exists', `${this.location}: ${op}: already exists`, { status: 403 });
    }
    this.statusFail(r, op);
  }

  async load(type: FileType, name: string, offset = 0, length = 0, ctx?: RequestContext): Promise<Buffer> {
    const op = `loading ${this.path(type, name)}`;
    const range = `bytes=${offset}-${length > 0 ? offset + length - 1 : ''}`;
    const r = await this.call('GET', this.path(type, name), op, ctx, { headers: { accept: V2, range } });
    let body: Buffer;
    if (r.status === 206) body = r.body;
    else if (r.status === 200) body = offset > 0 || length > 0 ? r.body.subarray(offset, length > 0 ? offset + length : undefined) : r.body; // server ignored Range
    else this.statusFail(r, op);
    if (length > 0 && body.length !== length) throw storageError('other', `${this.location}: ${op}: file is truncated (wanted ${length} bytes at offset ${offset}, got ${body.length})`);
    if (length === 0 && r.status === 200 && offset > 0 && offset > r.body.length) throw storageError('other', `${this.location}: ${op}: offset ${offset} is past the end`);
    return body;
  }

  async stat(type: FileType, name: string, ctx?: RequestContext): Promise<FileInfo> {
    const op = `stat ${this.path(type, name)}`;
    const r = await this.call('HEAD', this.path(type, name), op, ctx, { headers: { accept: V2 } });
    if (r.status !== 200) this.statusFail(r, op);
    const len = Number(r.headers['content-length']);
    if (!Number.isFinite(len)) throw storageError('other', `${this.location}: ${op}: server sent no Content-Length`);
    return { name: type === 'config' ? 'config' : name, size: len };
  }

  async *list(type: FileType, ctx?: RequestContext): AsyncIterable<FileInfo> {
    if (type === 'config') {
      try {
        yield await this.stat('config', 'config', ctx);
      } catch (err) {
        if ((err as StorageError).kind !== 'not-found') throw err;
      }
      return;
    }
    const op = `listing ${type}`;
    const r = await this.call('GET', `${type}/`, op, ctx, { headers: { accept: V2 } });
    if (r.status === 404) return;
    if (r.status !== 200) this.statusFail(r, op);
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.body.toString('utf8'));
    } catch (err) {
      throw storageError('other', `${this.location}: ${op}: server sent an invalid listing`, { cause: err });
    }
    if (!Array.isArray(parsed)) throw storageError('other', `${this.location}: ${op}: server sent an invalid listing`);
    const ctype = String(r.headers['content-type'] ?? '');
    if (ctype.startsWith(V2)) {
      for (const e of parsed as { name?: unknown; size?: unknown }[]) {
        if (typeof e?.name === 'string' && validName(type, e.name) && typeof e.size === 'number') yield { name: e.name, size: e.size };
      }
      return;
    }
    // v1: names only; learn sizes with one HEAD each, a few at a time.
    const names = (parsed as unknown[]).filter((n): n is string => typeof n === 'string' && validName(type, n));
    const sem = new Semaphore(this.connections);
    const batch = 64;
    for (let i = 0; i < names.length; i += batch) {
      const infos = await Promise.all(names.slice(i, i + batch).map((n) => sem.run(() => this.stat(type, n, ctx).catch((err) => {
        if ((err as StorageError).kind === 'not-found') return undefined; // removed meanwhile
        throw err;
      }))));
      for (const fi of infos) if (fi) yield fi;
    }
  }

  async remove(type: FileType, name: string, ctx?: RequestContext): Promise<void> {
    const op = `removing ${this.path(type, name)}`;
    const r = await this.call('DELETE', this.path(type, name), op, ctx, { headers: { accept: V2 } });
    if (r.status === 200 || r.status === 204 || r.status === 404) return;
    this.statusFail(r, op);
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }
}
