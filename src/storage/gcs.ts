// Google Cloud Storage backend on @google-cloud/storage: gs:BUCKET:/PREFIX. Credentials from
// GOOGLE_APPLICATION_CREDENTIALS (the library's default chain) or a service-account JSON from a
// Kanister profile; project from GOOGLE_PROJECT_ID; custom JSON-API endpoint (emulators). Simple
// uploads are atomic; `ifGenerationMatch: 0` refuses to overwrite. The library's own retries are off.
import https from 'node:https';
import { createRequire } from 'node:module';
import { Storage, Bucket, StorageOptions } from '@google-cloud/storage';
import { StorageError, UsageError } from '../core/errors.js';
import { Backend, FileInfo, FileType } from './backend.js';
import { ListPage, RequestContext, describeNetworkError, httpStatusOf, storageError, validName } from './retry.js';
import type { GcsLocation } from './url.js';
import { TlsOptions, customTls, hostPortOf, httpsAgentOptions } from './tls.js';

export interface GcsCredentials {
  projectId?: string;
  /** Service-account key JSON text. */
  credentialsJson?: string;
}

export interface GcsSettings extends TlsOptions {
  location: GcsLocation;
  credentials?: GcsCredentials;
  connections?: number;
  env?: NodeJS.ProcessEnv;
}

/** Builds the Storage client (shared with the object-store streams). */
export function makeGcsBucket(s: GcsSettings, sdk: { autoRetry?: boolean } = {}): Bucket {
  const env = s.env ?? process.env;
  const c = s.credentials ?? {};
  const opts: StorageOptions = { retryOptions: sdk.autoRetry ? { autoRetry: true, maxRetries: 4 } : { autoRetry: false, maxRetries: 0 } };
  const projectId = c.projectId ?? env.GOOGLE_PROJECT_ID ?? env.GOOGLE_CLOUD_PROJECT;
  if (projectId) opts.projectId = projectId;
  if (c.credentialsJson) {
    try {
      opts.credentials = JSON.parse(c.credentialsJson);
    } catch {
      throw new UsageError('the GCS service-account key is not valid JSON', 'check the profile secret (service-account.json)');
    }
  }
  let endpoint = s.location.endpoint ?? (env.STORAGE_EMULATOR_HOST ? env.STORAGE_EMULATOR_HOST : undefined);
  if (endpoint) {
    if (!/^https?:\/\//.test(endpoint)) endpoint = `http://${endpoint}`;
    opts.apiEndpoint = endpoint.replace(/\/+$/, '').replace(/\/storage\/v1$/, '');
    opts.useAuthWithCustomEndpoint = c.credentialsJson !== undefined;
    if (!opts.projectId) opts.projectId = 'dmctl';
  }
  const storage = new Storage(opts);
  // With STORAGE_EMULATOR_HOST in the process environment the library takes that value verbatim as
  // its JSON API base URL (no /storage/v1), so bucket and metadata requests miss the API path. The
  // endpoint resolved above wins, with the API path the library uses for any other endpoint.
  if (opts.apiEndpoint) storage.baseUrl = `${opts.apiEndpoint}/storage/v1`;
  if (customTls(s)) applyTls(storage, opts.apiEndpoint ?? 'https://storage.googleapis.com', s);
  return storage.bucket(s.location.bucket);
}

// TLS settings (--cacert, --insecure-tls) for @google-cloud/storage. The library has two transports
// and no single agent option:
// - JSON API calls, downloads and simple uploads go through teeny-request (node-fetch), which
//   ignores a request's `agent` and takes its keep-alive agent from a module-level pool keyed
//   "https:forever". dmctl puts one agent there that applies the TLS settings registered for an
//   endpoint's host:port and behaves like the stock keep-alive agent for every other host.
// - Resumable uploads (location push) go through gaxios, which does honour `agent`: a request
//   interceptor adds it (the library copies interceptor output into those requests).
// If the pool cannot be found (a library change), the settings are refused rather than dropped.

class EndpointTlsAgent extends https.Agent {
  readonly endpoints = new Map<string, https.AgentOptions>();
  constructor() {
    super({ keepAlive: true });
  }
}
// createConnection is not in the Agent typings of every @types/node: override on the prototype.
const baseCreate = (https.Agent.prototype as any).createConnection as (this: https.Agent, ...args: unknown[]) => unknown;
(EndpointTlsAgent.prototype as any).createConnection = function (this: EndpointTlsAgent, options: https.RequestOptions, ...rest: unknown[]) {
  const tlsOpts = this.endpoints.get(`${options.host ?? options.hostname}:${options.port || 443}`);
  return baseCreate.call(this, tlsOpts ? { ...options, ...tlsOpts } : options, ...rest);
};

let endpointAgent: EndpointTlsAgent | undefined;

function teenyPool(): Map<string, unknown> | undefined {
  try {
    const fromStorage = createRequire(createRequire(import.meta.url).resolve('@google-cloud/storage'));
    const agents = fromStorage('teeny-request/build/src/agents.js') as { pool?: unknown };
    return agents.pool instanceof Map ? (agents.pool as Map<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function applyTls(storage: Storage, endpoint: string, t: TlsOptions): void {
  const url = new URL(endpoint);
  if (url.protocol !== 'https:') return; // plain http: nothing to verify
  const pool = teenyPool();
  if (!pool) throw new UsageError('--cacert / --insecure-tls cannot be applied to GCS with this @google-cloud/storage version', 'report this; meanwhile trust the CA system-wide (NODE_EXTRA_CA_CERTS)');
  if (!endpointAgent) endpointAgent = new EndpointTlsAgent();
  // "https" is the key when keep-alive is off (the library turns it off in Cloud Functions).
  for (const key of ['https:forever', 'https']) if (pool.get(key) !== endpointAgent) pool.set(key, endpointAgent);
  const { ca, rejectUnauthorized } = httpsAgentOptions(t);
  endpointAgent.endpoints.set(hostPortOf(url), { ca, rejectUnauthorized });
  const agent = new https.Agent(httpsAgentOptions(t));
  type Interceptor = (typeof storage.interceptors)[number];
  const request = ((reqOpts: { agent?: https.Agent }) => {
    reqOpts.agent = agent;
    return reqOpts;
  }) as unknown as Interceptor['request'];
  storage.interceptors.push({ request });
}

export function mapGcsError(err: unknown, location: string, op: string): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as any;
  const status = httpStatusOf(err);
  const reason: string = e?.errors?.[0]?.reason ?? '';
  const text0 = String(e?.message ?? err).split('\n')[0];
  const msg = (text: string) => `${location}: ${op}: ${text}`;
  const net = describeNetworkError(err);
  if (net) return storageError(net.kind, msg(net.text), { cause: err, retryable: net.retryable, hint: net.hint });
  if (status === 404) {
    if (/bucket/i.test(text0) && !/object/i.test(text0)) return storageError('bucket-missing', msg('bucket does not exist'), { cause: err, status, hint: 'create the bucket first' });
    return storageError('not-found', msg('not found'), { cause: err, status });
  }
  if (status === 412 || reason === 'conditionNotMet') return storageError('already-exists', msg('already exists'), { cause: err, status });
  if (status === 401) return storageError('access-denied', msg('credentials rejected'), { cause: err, status, hint: 'check GOOGLE_APPLICATION_CREDENTIALS or the profile key' });
  if (status === 403) return storageError('access-denied', msg('access denied'), { cause: err, status, hint: 'check the service account permissions' });
  if (status === 416) return storageError('other', msg('byte range is past the end of the file'), { cause: err, status });
  if (status !== undefined && (status === 429 || status === 408 || status >= 500) && status !== 501) return storageError('unreachable', msg(`server error (HTTP ${status})`), { cause: err, status, retryable: true });
  if (/Could not load the default credentials|Unable to detect a Project Id/i.test(text0)) return storageError('access-denied', msg('no Google credentials found'), { cause: err, hint: 'set GOOGLE_APPLICATION_CREDENTIALS and GOOGLE_PROJECT_ID' });
  return storageError('other', msg(status ? `HTTP ${status}: ${text0.slice(0, 200)}` : text0.slice(0, 200)), { cause: err, status });
}

function shortName(type: FileType, name: string): string {
  return type === 'config' ? 'config' : `${type}/${name}`;
}

export class GcsBackend implements Backend {
  readonly location: string;
  readonly connections: number;
  readonly bucket: Bucket;
  readonly prefix: string;

  constructor(settings: GcsSettings) {
    this.location = settings.location.display;
    this.connections = settings.connections ?? 5;
    this.bucket = makeGcsBucket(settings);
    this.prefix = settings.location.prefix;
  }

  private p(rel: string): string {
    return this.prefix ? `${this.prefix}/${rel}` : rel;
  }

  key(type: FileType, name: string): string {
    if (type === 'config') return this.p('config');
    if (type === 'data') return this.p(`data/${name.slice(0, 2)}/${name}`);
    return this.p(`${type}/${name}`);
  }

  private fail(err: unknown, op: string): never {
    throw mapGcsError(err, this.location, op);
  }

  async create(): Promise<void> {
    try {
      const [exists] = await this.bucket.exists();
      if (exists) return;
      await this.bucket.create();
    } catch (err) {
      const st = httpStatusOf(err);
      if (st === 409 || st === 501) return; // exists already / emulator: buckets appear on first upload
      this.fail(err, 'creating the bucket');
    }
  }

  async save(type: FileType, name: string, data: Uint8Array, _ctx?: RequestContext): Promise<void> {
    const body = Buffer.from(data.buffer, data.byteOffset, data.length);
    try {
      // A simple (single-request) upload is atomic; generation 0 means "only if it does not exist".
      await this.bucket.file(this.key(type, name)).save(body, {
        resumable: false,
        validation: false,
        contentType: 'application/octet-stream',
        preconditionOpts: { ifGenerationMatch: 0 },
      });
    } catch (err) {
      this.fail(err, `saving ${shortName(type, name)}`);
    }
  }

  async load(type: FileType, name: string, offset = 0, length = 0, _ctx?: RequestContext): Promise<Buffer> {
    const op = `loading ${shortName(type, name)}`;
    let buf: Buffer;
    try {
      const opts: { start?: number; end?: number; validation: false } = { validation: false };
      if (offset > 0 || length > 0) {
        opts.start = offset;
        if (length > 0) opts.end = offset + length - 1;
      }
      [buf] = await this.bucket.file(this.key(type, name)).download(opts);
    } catch (err) {
      this.fail(err, op);
    }
    if (length > 0 && buf.length !== length) throw storageError('other', `${this.location}: ${op}: file is truncated (wanted ${length} bytes at offset ${offset}, got ${buf.length})`);
    return buf;
  }

  async stat(type: FileType, name: string): Promise<FileInfo> {
    try {
      const [md] = await this.bucket.file(this.key(type, name)).getMetadata();
      return { name: type === 'config' ? 'config' : name, size: Number(md.size ?? 0) };
    } catch (err) {
      this.fail(err, `stat ${shortName(type, name)}`);
    }
  }

  async listPage(type: FileType, token: string | undefined): Promise<ListPage> {
    if (type === 'config') {
      try {
        return { items: [await this.stat('config', 'config')] };
      } catch (err) {
        if ((err as StorageError).kind === 'not-found') return { items: [] };
        throw err;
      }
    }
    const prefix = this.p(`${type}/`);
    try {
      const [files, next] = await this.bucket.getFiles({ prefix, autoPaginate: false, maxResults: 1000, pageToken: token });
      const items: FileInfo[] = [];
      for (const f of files) {
        const rel = f.name.slice(prefix.length);
        const base = rel.slice(rel.lastIndexOf('/') + 1);
        if (type === 'data' ? !(rel === base || rel === `${base.slice(0, 2)}/${base}`) : rel !== base) continue;
        if (validName(type, base)) items.push({ name: base, size: Number(f.metadata.size ?? 0) });
      }
      const nextToken = (next as { pageToken?: string } | null | undefined)?.pageToken;
      return { items, next: nextToken || undefined };
    } catch (err) {
      this.fail(err, `listing ${type}`);
    }
  }

  async *list(type: FileType): AsyncIterable<FileInfo> {
    let token: string | undefined;
    do {
      const page = await this.listPage(type, token);
      yield* page.items;
      token = page.next;
    } while (token);
  }

  async remove(type: FileType, name: string): Promise<void> {
    try {
      await this.bucket.file(this.key(type, name)).delete({ ignoreNotFound: true });
    } catch (err) {
      this.fail(err, `removing ${shortName(type, name)}`);
    }
  }

  async close(): Promise<void> {}
}
