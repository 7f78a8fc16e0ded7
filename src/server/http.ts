// restic's REST protocol (v1 and v2) over HTTPS, serving any Backend: routing, authentication and roles,
// uploads verified against their names, ranges, listings, sub-repositories, health/metrics and the admin API.
import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { DmctlError, StorageError, UsageError } from '../core/errors.js';
import { FILE_TYPES, ID_RE, type Backend, type FileType } from '../storage/backend.js';
import { MemoryBudget, ServerMetrics } from './metrics.js';
import type { TlsMaterial } from './tls.js';
import { FailureThrottle, type Role, type UserRecord, type UserStore } from './users.js';

export const V1_TYPE = 'application/vnd.x.restic.rest.v1';
export const V2_TYPE = 'application/vnd.x.restic.rest.v2';
const MiB = 1024 * 1024;
/** Defaults: an upload is at most a 128 MiB pack plus slack; bodies in memory at most 256 MiB together. */
export const DEFAULT_MAX_BODY_BYTES = 129 * MiB;
export const DEFAULT_MEMORY_BUDGET_BYTES = 256 * MiB;
/** Downloads are read from the backend and sent in pieces of this size (the most one download holds). */
export const DOWNLOAD_CHUNK_BYTES = 1 * MiB;
/** ...and handed to the socket in slices of this size. */
const WRITE_SLICE_BYTES = 256 * 1024;

export interface LogEntry {
  level: 'info' | 'warn' | 'error' | 'debug';
  msg: string;
  [k: string]: unknown;
}

/** Hooks the admin API calls into (users file editing, refresh, repository id). */
export interface AdminHooks {
  refresh?: () => Promise<void>;
  repositoryId?: () => Promise<string | undefined>;
  addUser?: (name: string, role: Role | undefined, password: string) => Promise<unknown>;
  setUser?: (name: string, role: Role | undefined, password: string | undefined) => Promise<unknown>;
  removeUser?: (name: string) => Promise<unknown>;
}

export interface RestServerOptions {
  backend: Backend;
  /** Opens the backend of a sub-repository (`/a/`, `/a/b/`); without it sub-repositories answer 404. */
  subBackend?: (segments: string[]) => Backend | Promise<Backend>;
  users: UserStore;
  /** TLS certificate and key; absent ⇒ plain HTTP (only with --insecure-http). */
  tls?: TlsMaterial;
  host?: string;
  port?: number;
  privateRepos?: boolean;
  /** Largest accepted upload (default 129 MiB: a 128 MiB pack plus slack). */
  maxBodyBytes?: number;
  /**
   * Bytes of bodies held in memory by all requests together (default 256 MiB). Must be at least
   * maxBodyBytes. A request that cannot reserve its bytes within budgetWaitMs is answered 503.
   */
  memoryBudgetBytes?: number;
  /** How long a request may wait for memory budget before it is answered 503 (default 3 s). */
  budgetWaitMs?: number;
  /** Time allowed to send the request headers (default 30 s). */
  headersTimeoutMs?: number;
  /** Time allowed to send a whole request (default 15 min). */
  requestTimeoutMs?: number;
  /** A connection that sends or reads nothing for this long is closed (default 60 s). */
  idleTimeoutMs?: number;
  /** Delay before answering a failed login: base, doubled per failure from the same address, capped. */
  authDelayBaseMs?: number;
  authDelayMaxMs?: number;
  /** Verify SHA-256(body) = name on upload (default true). */
  verifyUploads?: boolean;
  version?: string;
  log?: (e: LogEntry) => void;
  admin?: AdminHooks;
}

/** Resolves once `res` can take more data, or is closed. */
function drained(res: http.ServerResponse): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

type Route =
  | { kind: 'create'; prefix: string[] }
  | { kind: 'config'; prefix: string[] }
  | { kind: 'list'; prefix: string[]; type: FileType }
  | { kind: 'file'; prefix: string[]; type: FileType; name: string };

const SEGMENT_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const TYPE_SET = new Set<string>(FILE_TYPES.filter((t) => t !== 'config'));

/**
 * Maps a raw request path onto a repository route. Percent-encoding, `.`/`..`, empty segments and names that
 * are not 64 lowercase hex characters are refused before anything reaches the backend.
 */
export function parseRoute(rawPath: string): Route | HttpError {
  if (!rawPath.startsWith('/')) return new HttpError(400, 'bad path');
  if (/[%\\\0]/.test(rawPath)) return new HttpError(400, 'encoded or invalid characters in path');
  const parts = rawPath.slice(1).split('/');
  const k = parts.findIndex((p) => p === 'config' || TYPE_SET.has(p));
  const prefixEnd = k < 0 ? parts.length - 1 : k;
  const prefix = parts.slice(0, prefixEnd);
  for (const seg of prefix) {
    if (seg === '.' || seg === '..') return new HttpError(400, 'path traversal');
    if (seg === '') return new HttpError(400, 'empty path segment');
    if (!SEGMENT_RE.test(seg)) return new HttpError(400, 'invalid repository name');
  }
  if (prefix.length > 2) return new HttpError(404, 'not found');
  if (k < 0) {
    if (parts[parts.length - 1] !== '') return new HttpError(404, 'not found');
    return { kind: 'create', prefix };
  }
  const rest = parts.slice(k);
  if (rest[0] === 'config') {
    if (rest.length !== 1) return new HttpError(404, 'not found');
    return { kind: 'config', prefix };
  }
  const type = rest[0] as FileType;
  if (rest.length === 1) return new HttpError(404, 'not found'); // `/data` without slash
  if (rest.length > 2) {
    if (rest.slice(1).some((s) => s === '..' || s === '.')) return new HttpError(400, 'path traversal');
    return new HttpError(400, 'invalid file name');
  }
  const name = rest[1];
  if (name === '') return { kind: 'list', prefix, type };
  if (!ID_RE.test(name)) return new HttpError(400, 'invalid file name: want 64 lowercase hex characters');
  return { kind: 'file', prefix, type, name };
}

/** Parses a single `bytes=` range against a size. undefined ⇒ serve everything; HttpError ⇒ 416. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | undefined | HttpError {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return header.trim().startsWith('bytes=') && header.includes(',') ? undefined : new HttpError(416, 'invalid range', { 'Content-Range': `bytes */${size}` });
  let start: number, end: number;
  if (m[1] === '') {
    if (m[2] === '') return new HttpError(416, 'invalid range', { 'Content-Range': `bytes */${size}` });
    const n = Number(m[2]);
    if (n === 0) return new HttpError(416, 'range not satisfiable', { 'Content-Range': `bytes */${size}` });
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return new HttpError(416, 'invalid range', { 'Content-Range': `bytes */${size}` });
  }
  if (start >= size) {
    if (size === 0 && start === 0 && m[2] === '') return undefined; // `bytes=0-` of an empty file: the whole (empty) file
    return new HttpError(416, 'range not satisfiable', { 'Content-Range': `bytes */${size}` });
  }
  return { start, end };
}

function storageStatus(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof StorageError) {
    switch (err.kind) {
      case 'not-found': return new HttpError(404, 'not found');
      case 'already-exists': return new HttpError(403, 'file already exists');
      case 'no-space': return new HttpError(507, 'insufficient storage');
      case 'access-denied': return new HttpError(500, 'storage access denied');
      default: return new HttpError(500, 'storage error');
    }
  }
  return new HttpError(500, 'internal error');
}

function typeLabel(route: Route | undefined): string {
  if (!route) return 'other';
  if (route.kind === 'create') return 'repo';
  if (route.kind === 'config') return 'config';
  return route.type;
}

export class RestServer {
  readonly metrics = new ServerMetrics();
  readonly budget: MemoryBudget;
  private readonly chunkBytes: number;
  private server: http.Server | https.Server;
  private throttle: FailureThrottle;
  private subs = new Map<string, Promise<Backend>>();
  private sockets = new Set<Socket>();
  ready = false;
  readonly secure: boolean;
  fingerprint?: string;

  constructor(readonly opts: RestServerOptions) {
    const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const limit = opts.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES;
    if (limit < maxBody) {
      throw new UsageError(
        `the memory budget (${limit} bytes) is smaller than the largest accepted upload (${maxBody} bytes)`,
        'raise --memory-budget-bytes or lower --max-body-bytes (restic 0.14 writes 16 MiB packs unless --pack-size is raised)',
      );
    }
    this.budget = new MemoryBudget(limit, (n) => (this.metrics.memoryInUse = n));
    this.metrics.memoryLimit = limit;
    this.chunkBytes = Math.min(DOWNLOAD_CHUNK_BYTES, limit);
    this.throttle = new FailureThrottle(opts.authDelayBaseMs ?? 200, opts.authDelayMaxMs ?? 5000);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.handle(req, res);
    const common = {
      headersTimeout: opts.headersTimeoutMs ?? 30_000,
      requestTimeout: opts.requestTimeoutMs ?? 15 * 60_000,
      keepAliveTimeout: 65_000,
      // check header/request timeouts often enough for short test timeouts
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor((opts.headersTimeoutMs ?? 30_000) / 4))),
    };
    if (opts.tls) {
      this.server = https.createServer({ ...common, cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' }, handler);
      this.fingerprint = opts.tls.fingerprint;
    } else {
      this.server = http.createServer(common, handler);
    }
    this.secure = !!opts.tls;
    this.server.timeout = opts.idleTimeoutMs ?? 60_000;
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      this.metrics.activeConnections++;
      s.once('close', () => {
        this.sockets.delete(s);
        this.metrics.activeConnections--;
      });
    });
    this.server.on('timeout', (s: Socket) => s.destroy());
    this.server.on('clientError', (err: NodeJS.ErrnoException, s: Socket) => {
      if (s.writable && !s.destroyed) {
        const code = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
        s.end(`HTTP/1.1 ${code}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
      s.destroy();
    });
    this.server.on('tlsClientError', () => {});
  }

  /** Listens; resolves with the bound port. */
  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.port;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Swaps the certificate for new connections; open connections keep theirs. */
  setTls(tls: TlsMaterial): void {
    if (!(this.server instanceof https.Server)) return;
    this.server.setSecureContext({ cert: tls.cert, key: tls.key });
    this.fingerprint = tls.fingerprint;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections?.();
      setTimeout(() => {
        for (const s of this.sockets) s.destroy();
      }, 2000).unref();
    });
    for (const be of this.subs.values()) await be.then((b) => b.close()).catch(() => {});
  }

  private log(e: LogEntry): void {
    try {
      this.opts.log?.(e);
    } catch {
      /* never let logging break a request */
    }
  }

  private async backendFor(prefix: string[]): Promise<Backend> {
    if (prefix.length === 0) return this.opts.backend;
    if (!this.opts.subBackend) throw new HttpError(404, 'not found');
    const key = prefix.join('/');
    let be = this.subs.get(key);
    if (!be) {
      be = Promise.resolve(this.opts.subBackend(prefix));
      this.subs.set(key, be);
      be.catch(() => this.subs.delete(key));
    }
    return be;
  }

  private async authenticate(req: http.IncomingMessage): Promise<UserRecord> {
    const h = req.headers.authorization;
    let user: UserRecord | undefined;
    if (h && /^basic /i.test(h)) {
      const dec = Buffer.from(h.slice(6).trim(), 'base64').toString('utf8');
      const colon = dec.indexOf(':');
      if (colon > 0) user = await this.opts.users.authenticate(dec.slice(0, colon), dec.slice(colon + 1));
    }
    if (user) return user;
    this.metrics.authFailures++;
    const delay = this.throttle.fail(req.socket.remoteAddress ?? '?');
    await new Promise((r) => setTimeout(r, delay));
    throw new HttpError(401, 'unauthorized');
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const t0 = process.hrtime.bigint();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
    const method = req.method ?? 'GET';
    let route: Route | undefined;
    let user: UserRecord | undefined;
    let bytesIn = 0;
    let bytesOut = 0;
    let label = 'other';
    res.on('finish', () => {
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      this.metrics.request(label, method, res.statusCode, secs);
      if (bytesIn) this.metrics.received(label, bytesIn);
      if (bytesOut) this.metrics.sent(label, bytesOut);
      this.log({ level: 'info', msg: 'request', method, path: rawPath, status: res.statusCode, user: user?.name, remote: req.socket.remoteAddress, bytesIn, bytesOut, ms: Math.round(secs * 1000) });
    });
    const send = (status: number, body: string | Buffer = '', headers: Record<string, string | number> = {}) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': buf.length, ...headers });
      if (method === 'HEAD') res.end();
      else {
        bytesOut += buf.length;
        res.end(buf);
      }
    };
    const sendJson = (status: number, obj: unknown) => send(status, JSON.stringify(obj) + '\n', { 'Content-Type': 'application/json' });
    try {
      // Probes: no authentication.
      if (rawPath === '/healthz') return send(200, 'ok\n');
      if (rawPath === '/readyz') return this.ready ? send(200, 'ready\n') : send(503, 'not ready\n');
      // The idle timeout is for a client that stops talking, not for our own work: a password's
      // first check (scrypt on the thread pool) or creating a repository's directories can outlast
      // a short idle timeout on a busy machine. It runs again while a body is read or a file sent
      // (the client's turn), and once the response is out (between requests).
      const sock = req.socket;
      sock.setTimeout(0);
      const clientsTurn = () => {
        if (!sock.destroyed) sock.setTimeout(this.server.timeout);
      };
      res.once('close', clientsTurn);
      res.once('finish', clientsTurn);
      user = await this.authenticate(req);
      if (rawPath === '/metrics') {
        label = 'metrics';
        if (method !== 'GET') throw new HttpError(405, 'method not allowed', { Allow: 'GET' });
        if (user.role !== 'full' && user.name !== 'metrics') throw new HttpError(403, 'forbidden');
        return send(200, this.metrics.render(), { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
      }
      if (rawPath === '/_admin' || rawPath.startsWith('/_admin/')) {
        label = 'admin';
        if (user.role !== 'full') throw new HttpError(403, 'forbidden');
        return await this.handleAdmin(req, rawPath, method, sendJson);
      }
      const r = parseRoute(rawPath);
      if (r instanceof HttpError) throw r;
      route = r;
      label = typeLabel(route);
      if (this.opts.privateRepos && route.prefix[0] !== user.name) throw new HttpError(403, 'forbidden: private repository of another user');
      const be = await this.backendFor(route.prefix);
      switch (route.kind) {
        case 'create': {
          if (method !== 'POST') throw new HttpError(405, 'method not allowed', { Allow: 'POST' });
          if (query.get('create') !== 'true') throw new HttpError(400, 'missing ?create=true');
          if (user.role === 'read') throw new HttpError(403, 'forbidden');
          await be.create();
          return send(200);
        }
        case 'list': {
          if (method !== 'GET') throw new HttpError(405, 'method not allowed', { Allow: 'GET' });
          const v2 = (req.headers.accept ?? '').includes(V2_TYPE);
          const parts: string[] = [];
          for await (const fi of be.list(route.type)) parts.push(v2 ? JSON.stringify({ name: fi.name, size: fi.size }) : JSON.stringify(fi.name));
          const body = Buffer.from('[' + parts.join(',') + ']');
          return send(200, body, { 'Content-Type': v2 ? V2_TYPE : V1_TYPE });
        }
        case 'config':
        case 'file': {
          const type: FileType = route.kind === 'config' ? 'config' : route.type;
          const name = route.kind === 'config' ? 'config' : route.name;
          const allow = 'HEAD, GET, POST, DELETE';
          switch (method) {
            case 'HEAD': {
              const fi = await be.stat(type, name);
              res.writeHead(200, { 'Content-Length': fi.size, 'Content-Type': 'application/octet-stream' });
              res.end();
              return;
            }
            case 'GET':
              clientsTurn();
              return await this.serveFile(req, res, be, type, name, (n) => (bytesOut += n));
            case 'POST': {
              if (user.role === 'read') throw new HttpError(403, 'forbidden');
              clientsTurn();
              bytesIn = await this.receiveFile(req, be, type, name);
              return send(200);
            }
            case 'DELETE': {
              if (user.role === 'read') throw new HttpError(403, 'forbidden');
              if (user.role === 'append' && type !== 'locks') throw new HttpError(403, 'forbidden: append-only user');
              await be.remove(type, name);
              return send(200);
            }
            default:
              throw new HttpError(405, 'method not allowed', { Allow: allow });
          }
        }
      }
    } catch (err) {
      const he = storageStatus(err);
      if (!(err instanceof HttpError) && he.status >= 500) {
        this.log({ level: 'error', msg: 'request failed', method, path: rawPath, error: (err as Error)?.message ?? String(err) });
      }
      if (!req.complete && he.status === 503 && !req.destroyed) {
        // Turned away for memory: the body (at most --max-body-bytes) is read and dropped, so the client
        // gets its 503 on a clean connection instead of a reset (it holds no memory here).
        req.resume();
      } else if (!req.complete) {
        // Body not (fully) read: do not read it, close after answering.
        he.headers['Connection'] = 'close';
        res.once('finish', () => req.socket.destroySoon?.());
      }
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      send(he.status, he.message + '\n', he.headers);
    }
  }

  /** Reserves `n` bytes of the memory budget, or answers 503 (restic retries with back-off). */
  private async reserve(n: number): Promise<() => void> {
    if (n === 0) return () => {};
    const release = await this.budget.tryAcquire(n, this.opts.budgetWaitMs ?? 3000);
    if (release) return release;
    this.metrics.budgetRejections++;
    throw new HttpError(503, 'server busy: memory budget for request bodies is spent, retry later', { 'Retry-After': '2' });
  }

  /** Sends a file or a range of it in pieces of DOWNLOAD_CHUNK_BYTES (at most the budget), waiting for the client between pieces. */
  private async serveFile(req: http.IncomingMessage, res: http.ServerResponse, be: Backend, type: FileType, name: string, count: (n: number) => void): Promise<void> {
    const fi = await be.stat(type, name);
    const range = parseRange(req.headers.range, fi.size);
    if (range instanceof HttpError) throw range;
    const start = range ? range.start : 0;
    const length = range ? range.end - range.start + 1 : fi.size;
    const release = await this.reserve(Math.min(length, this.chunkBytes));
    try {
      // The first piece is read before the status line, so a missing or short file still gets its own status.
      let buf = length === 0 ? Buffer.alloc(0) : await be.load(type, name, start, Math.min(length, this.chunkBytes));
      const headers: Record<string, string | number> = { 'Content-Type': 'application/octet-stream', 'Content-Length': length, 'Accept-Ranges': 'bytes' };
      if (range) headers['Content-Range'] = `bytes ${start}-${start + length - 1}/${fi.size}`;
      res.writeHead(range ? 206 : 200, headers);
      let sent = 0;
      for (;;) {
        sent += buf.length;
        count(buf.length);
        // Handed to the socket in small slices, each once the previous one is out: TLS then encrypts small
        // records instead of copying a whole piece into native memory at once.
        for (let i = 0; i < buf.length; i += WRITE_SLICE_BYTES) {
          if (!res.write(buf.subarray(i, i + WRITE_SLICE_BYTES))) await drained(res);
          if (res.destroyed) return;
        }
        if (sent >= length) {
          await new Promise<void>((resolve) => {
            res.end(() => resolve());
            res.once('close', () => resolve());
          });
          return;
        }
        buf = await be.load(type, name, start + sent, Math.min(length - sent, this.chunkBytes));
      }
    } finally {
      release();
    }
  }

  /** Reads an upload (Content-Length required, size-limited, budgeted), verifies its hash and stores it. */
  private async receiveFile(req: http.IncomingMessage, be: Backend, type: FileType, name: string): Promise<number> {
    if (req.headers['transfer-encoding'] || req.headers['content-length'] === undefined) throw new HttpError(411, 'Content-Length required');
    const cl = req.headers['content-length'];
    if (!/^\d{1,15}$/.test(cl)) throw new HttpError(400, 'invalid Content-Length');
    const n = Number(cl);
    const max = this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    if (n > max) throw new HttpError(413, `body larger than ${max} bytes`);
    // Refuse overwrites before reading anything.
    let exists = true;
    try {
      await be.stat(type, name);
    } catch (err) {
      if (!(err instanceof StorageError && err.kind === 'not-found')) throw err;
      exists = false;
    }
    if (exists) throw new HttpError(403, 'file already exists');
    // Exactly the announced size, reserved before a byte is read; the body is checked against it.
    const release = await this.reserve(n);
    try {
      const buf = Buffer.allocUnsafe(n);
      const hash = crypto.createHash('sha256');
      let off = 0;
      await new Promise<void>((resolve, reject) => {
        const onData = (chunk: Buffer) => {
          if (off + chunk.length > n) {
            cleanup();
            reject(new HttpError(400, 'body longer than Content-Length'));
            return;
          }
          chunk.copy(buf, off);
          hash.update(chunk);
          off += chunk.length;
        };
        const onEnd = () => {
          cleanup();
          if (off !== n) reject(new HttpError(400, 'short body'));
          else resolve();
        };
        const onClose = () => {
          cleanup();
          reject(new HttpError(400, 'connection closed during upload'));
        };
        const cleanup = () => {
          req.off('data', onData);
          req.off('end', onEnd);
          req.off('close', onClose);
          req.off('error', onClose);
        };
        req.on('data', onData);
        req.once('end', onEnd);
        req.once('close', onClose);
        req.once('error', onClose);
      });
      if (type !== 'config' && (this.opts.verifyUploads ?? true)) {
        if (hash.digest('hex') !== name) throw new HttpError(400, 'SHA-256 of the body does not match the file name');
      }
      await be.save(type, name, buf);
      return n;
    } finally {
      release();
    }
  }

  private async readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of req) {
      n += (c as Buffer).length;
      if (n > 64 * 1024) throw new HttpError(413, 'body too large');
      chunks.push(c as Buffer);
    }
    if (n === 0) return {};
    try {
      const v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
      return v as Record<string, unknown>;
    } catch {
      throw new HttpError(400, 'body must be a JSON object');
    }
  }

  private async handleAdmin(req: http.IncomingMessage, rawPath: string, method: string, sendJson: (s: number, o: unknown) => void): Promise<void> {
    const admin = this.opts.admin ?? {};
    const wrap = async (fn: () => Promise<unknown>, okStatus = 200) => {
      try {
        sendJson(okStatus, await fn());
      } catch (err) {
        if (err instanceof HttpError) throw err;
        if (err instanceof DmctlError) {
          const status = err.code === 'no-such-user' ? 404 : err.code === 'usage' ? 400 : err.code === 'wrong-password' || err.code === 'no-repository' ? 409 : 500;
          sendJson(status, err.toJSON());
          return;
        }
        throw err;
      }
    };
    if (rawPath === '/_admin/status') {
      if (method !== 'GET') throw new HttpError(405, 'method not allowed', { Allow: 'GET' });
      return wrap(async () => ({
        version: this.opts.version ?? 'unknown',
        uptimeSeconds: Math.round((Date.now() - this.metrics.started) / 1000),
        repositoryId: await admin.repositoryId?.().catch(() => undefined),
        location: this.opts.backend.location,
        tls: this.secure,
        fingerprint: this.fingerprint,
        privateRepos: !!this.opts.privateRepos,
        ready: this.ready,
        users: this.opts.users.list(),
        counters: this.metrics.summary(),
      }));
    }
    if (rawPath === '/_admin/refresh') {
      if (method !== 'POST') throw new HttpError(405, 'method not allowed', { Allow: 'POST' });
      return wrap(async () => {
        if (admin.refresh) await admin.refresh();
        else await this.opts.users.reload();
        return { refreshed: true, users: this.opts.users.list().length, fingerprint: this.fingerprint };
      });
    }
    if (rawPath === '/_admin/users' || rawPath === '/_admin/users/') {
      if (method !== 'GET') throw new HttpError(405, 'method not allowed', { Allow: 'GET' });
      return wrap(async () => this.opts.users.list());
    }
    const m = /^\/_admin\/users\/([A-Za-z0-9][A-Za-z0-9._-]{0,63})$/.exec(rawPath);
    if (!m) throw new HttpError(404, 'not found');
    const name = m[1];
    switch (method) {
      case 'GET':
        return wrap(async () => {
          const u = this.opts.users.list().find((x) => x.name === name);
          if (!u) throw new HttpError(404, 'no such user');
          return u;
        });
      case 'POST':
      case 'PUT': {
        const body = await this.readJson(req);
        const role = typeof body.role === 'string' ? (body.role as Role) : undefined;
        const password = typeof body.password === 'string' ? body.password : undefined;
        const fn = method === 'POST' ? admin.addUser : admin.setUser;
        if (!fn) throw new HttpError(409, 'this server has no users file to edit');
        if (method === 'POST' && !password) throw new HttpError(400, 'password required');
        return wrap(async () => {
          const out = await fn(name, role, password as string);
          return out;
        }, method === 'POST' ? 201 : 200);
      }
      case 'DELETE':
        if (!admin.removeUser) throw new HttpError(409, 'this server has no users file to edit');
        return wrap(async () => admin.removeUser!(name));
      default:
        throw new HttpError(405, 'method not allowed', { Allow: 'GET, POST, PUT, DELETE' });
    }
  }
}
