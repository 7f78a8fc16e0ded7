// Azure Blob backend on @azure/storage-blob: azure:CONTAINER:/PREFIX. Credentials: a connection
// string, account name + key (restic's AZURE_ACCOUNT_NAME/AZURE_ACCOUNT_KEY or Kanister's
// AZURE_STORAGE_ACCOUNT/AZURE_STORAGE_KEY), or a SAS token; custom endpoints (azurite, sovereign
// clouds via AZURE_ENDPOINT_SUFFIX). No overwrite: `If-None-Match: *` on every upload. Put Blob is
// atomic; big files go up as staged blocks committed at the end (invisible until the commit).
import crypto from 'node:crypto';
import https from 'node:https';
import { BlobServiceClient, ContainerClient, StorageSharedKeyCredential, AnonymousCredential, StoragePipelineOptions } from '@azure/storage-blob';
import { StorageError, UsageError } from '../core/errors.js';
import { Backend, FileInfo, FileType } from './backend.js';
import { readBody } from './body.js';
import { ListPage, RequestContext, describeNetworkError, httpStatusOf, storageError, validName } from './retry.js';
import type { AzureLocation } from './url.js';
import { TlsOptions, customTls, httpsAgentOptions } from './tls.js';

export interface AzureCredentials {
  accountName?: string;
  accountKey?: string;
  sas?: string;
  connectionString?: string;
}

export interface AzureSettings extends TlsOptions {
  location: AzureLocation;
  credentials?: AzureCredentials;
  connections?: number;
  env?: NodeJS.ProcessEnv;
  /** Files at least this big go up as staged blocks (default 64 MiB) of blockSize (16 MiB). */
  blockThreshold?: number;
  blockSize?: number;
}

/**
 * Pipeline options with dmctl's TLS settings. StoragePipelineOptions does not declare it, but the
 * library hands all its pipeline options to @azure/core-rest-pipeline's createPipelineFromOptions,
 * whose `agent` option (agentPolicy) sets the Node agent of every request. Only for https
 * endpoints: an https.Agent cannot carry plain http requests.
 */
type PipelineWithAgent = StoragePipelineOptions & { agent?: https.Agent };

/** Resolves credentials and endpoint into a ContainerClient (shared with the object-store streams). */
export function makeContainerClient(s: AzureSettings, sdk: { maxTries?: number } = {}): ContainerClient {
  let agent: https.Agent | undefined;
  const build = (withAgent: boolean) => {
    const pipeline: PipelineWithAgent = { retryOptions: { maxTries: sdk.maxTries ?? 1 }, keepAliveOptions: { enable: true } };
    if (withAgent) pipeline.agent = agent ??= new https.Agent(httpsAgentOptions(s, { maxSockets: Math.max(4, (s.connections ?? 5) * 2) }));
    return makeServiceClient(s, pipeline);
  };
  let svc = build(false);
  if (customTls(s) && svc.url.toLowerCase().startsWith('https:')) svc = build(true);
  const container = svc.getContainerClient(s.location.container);
  if (agent) agents.set(container, agent);
  return container;
}

const agents = new WeakMap<ContainerClient, https.Agent>();

/** Closes the keep-alive connections of a client made by makeContainerClient with its own agent. */
export function releaseContainerClient(c: ContainerClient): void {
  agents.get(c)?.destroy();
}

function makeServiceClient(s: AzureSettings, pipeline: StoragePipelineOptions): BlobServiceClient {
  const env = s.env ?? process.env;
  const c = s.credentials ?? {};
  const connectionString = c.connectionString ?? (c.accountName || c.sas ? undefined : env.AZURE_STORAGE_CONNECTION_STRING);
  let svc: BlobServiceClient;
  if (connectionString) {
    try {
      svc = BlobServiceClient.fromConnectionString(connectionString, pipeline);
    } catch {
      throw new UsageError('invalid Azure connection string', 'check AZURE_STORAGE_CONNECTION_STRING (AccountName=...;AccountKey=...;BlobEndpoint=...)');
    }
  } else {
    const account = c.accountName ?? env.AZURE_ACCOUNT_NAME ?? env.AZURE_STORAGE_ACCOUNT;
    const key = c.accountKey ?? (c.accountName ? undefined : env.AZURE_ACCOUNT_KEY ?? env.AZURE_STORAGE_KEY);
    const sas = (c.sas ?? (c.accountName ? undefined : env.AZURE_ACCOUNT_SAS))?.replace(/^\?/, '');
    let endpoint = s.location.endpoint ?? env.AZURE_STORAGE_ENDPOINT;
    if (!endpoint) {
      if (!account) throw new UsageError(`${s.location.display}: no Azure account given`, 'set AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY (or AZURE_ACCOUNT_SAS), or AZURE_STORAGE_CONNECTION_STRING');
      endpoint = `https://${account}.blob.${env.AZURE_ENDPOINT_SUFFIX ?? 'core.windows.net'}`;
    }
    endpoint = endpoint.replace(/\/+$/, '');
    if (key) {
      if (!account) throw new UsageError(`${s.location.display}: an Azure account key needs the account name`, 'set AZURE_ACCOUNT_NAME');
      let cred: StorageSharedKeyCredential;
      try {
        cred = new StorageSharedKeyCredential(account, key);
      } catch {
        throw new UsageError('invalid Azure account key (not base64)', 'check AZURE_ACCOUNT_KEY / AZURE_STORAGE_KEY');
      }
      svc = new BlobServiceClient(endpoint, cred, pipeline);
    } else if (sas) {
      svc = new BlobServiceClient(`${endpoint}?${sas}`, new AnonymousCredential(), pipeline);
    } else {
      throw new UsageError(`${s.location.display}: no Azure credentials given`, 'set AZURE_ACCOUNT_KEY or AZURE_ACCOUNT_SAS (or AZURE_STORAGE_CONNECTION_STRING)');
    }
  }
  return svc;
}

export function mapAzureError(err: unknown, location: string, op: string): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as any;
  const code: string = typeof e?.code === 'string' ? e.code : (e?.details?.errorCode ?? '');
  const status = httpStatusOf(err);
  const msg = (text: string) => `${location}: ${op}: ${text}`;
  switch (code) {
    case 'BlobNotFound':
      return storageError('not-found', msg('not found'), { cause: err, status });
    case 'ContainerNotFound':
      return storageError('bucket-missing', msg('container does not exist'), { cause: err, status, hint: 'create the container, or run `dmctl repo init` which creates it' });
    case 'BlobAlreadyExists':
    case 'ConditionNotMet':
      return storageError('already-exists', msg('already exists'), { cause: err, status });
    case 'AuthenticationFailed':
    case 'InvalidAuthenticationInfo':
      return storageError('access-denied', msg('credentials rejected (AuthenticationFailed)'), { cause: err, status, hint: 'check the account name and key or SAS token' });
    case 'AuthorizationFailure':
    case 'AuthorizationPermissionMismatch':
    case 'InsufficientAccountPermissions':
      return storageError('access-denied', msg('access denied'), { cause: err, status, hint: 'check the SAS permissions or role assignment' });
    case 'ServerBusy':
    case 'OperationTimedOut':
    case 'InternalError':
      return storageError('unreachable', msg(`server busy or failing (${code})`), { cause: err, status, retryable: true });
  }
  const net = describeNetworkError(err);
  if (net) return storageError(net.kind, msg(net.text), { cause: err, retryable: net.retryable, hint: net.hint });
  if (status === 404) return storageError('not-found', msg('not found'), { cause: err, status });
  if (status === 409 || status === 412) return storageError('already-exists', msg('already exists'), { cause: err, status });
  if (status === 401 || status === 403) return storageError('access-denied', msg(`access denied (HTTP ${status})`), { cause: err, status });
  if (status === 416) return storageError('other', msg('byte range is past the end of the file'), { cause: err, status });
  if (status !== undefined && (status === 429 || status >= 500)) return storageError('unreachable', msg(`server error (HTTP ${status})`), { cause: err, status, retryable: true });
  const text = String(e?.message ?? err).split('\n')[0].slice(0, 200);
  return storageError('other', msg(status ? `HTTP ${status}: ${text}` : text), { cause: err, status });
}

function shortName(type: FileType, name: string): string {
  return type === 'config' ? 'config' : `${type}/${name}`;
}

export class AzureBackend implements Backend {
  readonly location: string;
  readonly connections: number;
  readonly container: ContainerClient;
  readonly prefix: string;
  private readonly blockThreshold: number;
  private readonly blockSize: number;

  constructor(settings: AzureSettings) {
    this.location = settings.location.display;
    this.connections = settings.connections ?? 5;
    this.container = makeContainerClient(settings);
    this.prefix = settings.location.prefix;
    this.blockThreshold = settings.blockThreshold ?? 64 * 1024 * 1024;
    this.blockSize = settings.blockSize ?? 16 * 1024 * 1024;
  }

  private p(rel: string): string {
    return this.prefix ? `${this.prefix}/${rel}` : rel;
  }

  key(type: FileType, name: string): string {
    if (type === 'config') return this.p('config');
    if (type === 'data') return this.p(`data/${name.slice(0, 2)}/${name}`);
    return this.p(`${type}/${name}`);
  }

  private fail(err: unknown, op: string, ctx?: RequestContext): never {
    if (ctx?.signal?.aborted) throw storageError('unreachable', `${this.location}: ${op}: request timed out`, { cause: err, retryable: true });
    throw mapAzureError(err, this.location, op);
  }

  async create(ctx?: RequestContext): Promise<void> {
    try {
      await this.container.createIfNotExists({ abortSignal: ctx?.signal });
    } catch (err) {
      this.fail(err, 'creating the container', ctx);
    }
  }

  async save(type: FileType, name: string, data: Uint8Array, ctx?: RequestContext): Promise<void> {
    const op = `saving ${shortName(type, name)}`;
    const blob = this.container.getBlockBlobClient(this.key(type, name));
    const body = Buffer.from(data.buffer, data.byteOffset, data.length);
    const conditions = { ifNoneMatch: '*' };
    try {
      if (body.length < this.blockThreshold) {
        await blob.upload(body, body.length, { conditions, abortSignal: ctx?.signal });
        return;
      }
      // Staged blocks are invisible until commitBlockList; the commit carries the no-overwrite condition.
      const run = crypto.randomBytes(6).toString('hex');
      const ids: string[] = [];
      for (let off = 0, i = 0; off < body.length; off += this.blockSize, i++) {
        const id = Buffer.from(`${run}-${String(i).padStart(6, '0')}`).toString('base64');
        const chunk = body.subarray(off, off + this.blockSize);
        await blob.stageBlock(id, chunk, chunk.length, { abortSignal: ctx?.signal });
        ids.push(id);
      }
      await blob.commitBlockList(ids, { conditions, abortSignal: ctx?.signal });
    } catch (err) {
      this.fail(err, op, ctx);
    }
  }

  async load(type: FileType, name: string, offset = 0, length = 0, ctx?: RequestContext): Promise<Buffer> {
    const op = `loading ${shortName(type, name)}`;
    let buf: Buffer;
    try {
      const r = await this.container.getBlobClient(this.key(type, name)).download(offset, length > 0 ? length : undefined, { abortSignal: ctx?.signal });
      buf = await readBody(r.readableStreamBody, r.contentLength);
    } catch (err) {
      this.fail(err, op, ctx);
    }
    if (length > 0 && buf.length !== length) throw storageError('other', `${this.location}: ${op}: file is truncated (wanted ${length} bytes at offset ${offset}, got ${buf.length})`);
    return buf;
  }

  async stat(type: FileType, name: string, ctx?: RequestContext): Promise<FileInfo> {
    try {
      const r = await this.container.getBlobClient(this.key(type, name)).getProperties({ abortSignal: ctx?.signal });
      return { name: type === 'config' ? 'config' : name, size: Number(r.contentLength ?? 0) };
    } catch (err) {
      // HEAD has no body: a missing container also answers a bare 404; tell them apart.
      if (httpStatusOf(err) === 404) {
        const exists = await this.container.exists({ abortSignal: ctx?.signal }).catch(() => true);
        if (!exists) throw storageError('bucket-missing', `${this.location}: stat ${shortName(type, name)}: container does not exist`, { cause: err });
      }
      this.fail(err, `stat ${shortName(type, name)}`, ctx);
    }
  }

  async listPage(type: FileType, token: string | undefined, ctx?: RequestContext): Promise<ListPage> {
    if (type === 'config') {
      try {
        return { items: [await this.stat('config', 'config', ctx)] };
      } catch (err) {
        if ((err as StorageError).kind === 'not-found') return { items: [] };
        throw err;
      }
    }
    const prefix = this.p(`${type}/`);
    try {
      const it = this.container.listBlobsFlat({ prefix, abortSignal: ctx?.signal }).byPage({ continuationToken: token, maxPageSize: 1000 });
      const r = await it.next();
      if (r.done || !r.value) return { items: [] };
      const page = r.value;
      const items: FileInfo[] = [];
      for (const b of page.segment.blobItems) {
        const rel = b.name.slice(prefix.length);
        const base = rel.slice(rel.lastIndexOf('/') + 1);
        if (type === 'data' ? !(rel === base || rel === `${base.slice(0, 2)}/${base}`) : rel !== base) continue;
        if (validName(type, base)) items.push({ name: base, size: Number(b.properties.contentLength ?? 0) });
      }
      return { items, next: page.continuationToken || undefined };
    } catch (err) {
      this.fail(err, `listing ${type}`, ctx);
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

  async remove(type: FileType, name: string, ctx?: RequestContext): Promise<void> {
    try {
      await this.container.getBlobClient(this.key(type, name)).deleteIfExists({ abortSignal: ctx?.signal });
    } catch (err) {
      this.fail(err, `removing ${shortName(type, name)}`, ctx);
    }
  }

  async close(): Promise<void> {
    releaseContainerClient(this.container);
  }
}
