// A small client for a running dmctl server (status, refresh, admin users API), with certificate pinning:
// when a fingerprint is given, the TLS handshake completes, the peer certificate's SHA-256 is compared, and
// nothing (no credentials) is sent unless it matches.
import http from 'node:http';
import tls from 'node:tls';
import net from 'node:net';
import crypto from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { DmctlError, EXIT_CODES, UsageError } from '../core/errors.js';
import { normalizeFingerprint } from './tls.js';

export interface ServerClientOptions {
  /** https://host:port/ or http://host:port/ (user:password@ allowed but discouraged). */
  url: string;
  /** Pin: lowercase hex SHA-256 of the server certificate (DER). */
  fingerprint?: string;
  /** PEM file of a CA (or the self-signed certificate) to verify against instead of the system CAs. */
  cacert?: string;
  user?: string;
  password?: string;
  timeoutMs?: number;
}

export interface ServerResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** SHA-256 fingerprint of the certificate the server presented (TLS only). */
  fingerprint?: string;
}

export class FingerprintMismatchError extends DmctlError {
  constructor(want: string, got: string) {
    super('fingerprint-mismatch', `the server's certificate fingerprint ${got} does not match ${want}`, {
      hint: 'the server may have a new certificate, or this is not the server you meant; check --server-cert-fingerprint',
      exitCode: EXIT_CODES.FAILURE,
    });
  }
}

export class ServerUnreachableError extends DmctlError {
  constructor(url: string, cause: unknown) {
    super('server-unreachable', `cannot reach ${url}: ${(cause as Error)?.message ?? String(cause)}`, {
      cause,
      hint: 'check --server, that the server runs, and network policies',
      exitCode: EXIT_CODES.STORAGE,
    });
  }
}

function parseUrl(raw: string): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new UsageError(`invalid server URL ${raw}`, 'use https://HOST:PORT/');
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new UsageError(`invalid server URL ${u.protocol}//${u.host}`, 'use https://HOST:PORT/');
  return u;
}

function safeUrl(u: URL): string {
  return `${u.protocol}//${u.host}${u.pathname}`;
}

async function connect(u: URL, o: ServerClientOptions): Promise<{ socket: net.Socket; fingerprint?: string }> {
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  const timeout = o.timeoutMs ?? 10_000;
  if (u.protocol === 'http:') {
    const socket = net.connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('connection timed out')), timeout);
      socket.once('connect', () => (clearTimeout(t), resolve()));
      socket.once('error', (e) => (clearTimeout(t), reject(e)));
    }).catch((err) => {
      socket.destroy();
      throw new ServerUnreachableError(safeUrl(u), err);
    });
    return { socket };
  }
  const ca = o.cacert ? await fsp.readFile(o.cacert, 'utf8') : undefined;
  const pinned = o.fingerprint ? normalizeFingerprint(o.fingerprint) : undefined;
  const socket = tls.connect({
    host,
    port,
    servername: net.isIP(host) ? undefined : host,
    ca,
    // With a pin the fingerprint decides (self-signed certificates); without one, normal verification.
    rejectUnauthorized: !pinned,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('TLS handshake timed out')), timeout);
      socket.once('secureConnect', () => (clearTimeout(t), resolve()));
      socket.once('error', (e) => (clearTimeout(t), reject(e)));
    });
  } catch (err) {
    socket.destroy();
    throw new ServerUnreachableError(safeUrl(u), err);
  }
  const cert = socket.getPeerCertificate();
  const fingerprint = cert?.raw ? crypto.createHash('sha256').update(cert.raw).digest('hex') : undefined;
  if (pinned && fingerprint !== pinned) {
    socket.destroy();
    throw new FingerprintMismatchError(pinned, fingerprint ?? '(none)');
  }
  return { socket, fingerprint };
}

export async function serverRequest(o: ServerClientOptions, method: string, path: string, body?: unknown): Promise<ServerResponse> {
  const u = parseUrl(o.url);
  const user = o.user ?? (u.username ? decodeURIComponent(u.username) : undefined);
  const password = o.password ?? (u.password ? decodeURIComponent(u.password) : undefined);
  const { socket, fingerprint } = await connect(u, o);
  const base = u.pathname.endsWith('/') ? u.pathname.slice(0, -1) : u.pathname;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: http.OutgoingHttpHeaders = { Host: u.host, Connection: 'close' };
  if (user !== undefined) headers.Authorization = 'Basic ' + Buffer.from(`${user}:${password ?? ''}`).toString('base64');
  if (payload) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = payload.length;
  }
  return new Promise<ServerResponse>((resolve, reject) => {
    const req = http.request({ method, path: base + path, headers, createConnection: () => socket, timeout: o.timeoutMs ?? 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), fingerprint }));
      res.on('error', (e) => reject(new ServerUnreachableError(safeUrl(u), e)));
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', (e) => reject(new ServerUnreachableError(safeUrl(u), e)));
    req.end(payload);
  });
}

/** Calls an admin endpoint and returns the parsed JSON; maps HTTP errors to DmctlErrors. */
export async function adminCall<T = unknown>(o: ServerClientOptions, method: string, path: string, body?: unknown): Promise<T> {
  const r = await serverRequest(o, method, path, body);
  let parsed: unknown;
  try {
    parsed = r.body.length ? JSON.parse(r.body.toString('utf8')) : undefined;
  } catch {
    parsed = undefined;
  }
  if (r.status >= 200 && r.status < 300) return parsed as T;
  if (r.status === 401) throw new DmctlError('unauthorized', 'the server refused the credentials', { hint: 'check --user/--password-file (a user with the full role)' });
  if (r.status === 403) throw new DmctlError('forbidden', 'this user may not use the admin API', { hint: 'use a user with the full role' });
  const p = parsed as { message?: string; hint?: string } | undefined;
  const msg = p?.message ?? r.body.toString('utf8').trim().split('\n')[0] ?? `HTTP ${r.status}`;
  throw new DmctlError(r.status === 404 ? 'not-found' : 'server-error', `server answered ${r.status}: ${msg}`, { hint: p?.hint });
}

export interface ServerStatus {
  url: string;
  reachable: boolean;
  healthy: boolean;
  ready: boolean;
  fingerprint?: string;
  version?: string;
  uptimeSeconds?: number;
  repositoryId?: string;
  users?: { name: string; role: string; source?: string }[];
  counters?: Record<string, unknown>;
}

/** Health and readiness (no credentials needed), plus the admin status when credentials are given. */
export async function serverStatus(o: ServerClientOptions): Promise<ServerStatus> {
  const u = parseUrl(o.url);
  const health = await serverRequest({ ...o, user: undefined, password: undefined, url: `${u.protocol}//${u.host}/` }, 'GET', '/healthz');
  const ready = await serverRequest({ ...o, user: undefined, password: undefined, url: `${u.protocol}//${u.host}/` }, 'GET', '/readyz');
  const out: ServerStatus = { url: safeUrl(u), reachable: true, healthy: health.status === 200, ready: ready.status === 200, fingerprint: health.fingerprint };
  const hasCreds = o.user !== undefined || u.username !== '';
  if (hasCreds) {
    const st = await adminCall<Record<string, unknown>>({ ...o, url: `${u.protocol}//${u.username ? `${u.username}:${u.password}@` : ''}${u.host}/` }, 'GET', '/_admin/status');
    Object.assign(out, {
      version: st.version,
      uptimeSeconds: st.uptimeSeconds,
      repositoryId: st.repositoryId,
      users: st.users,
      counters: st.counters,
    });
  }
  return out;
}
