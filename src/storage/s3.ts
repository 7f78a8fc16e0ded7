// S3 backend (AWS and S3-compatible servers such as Ceph radosgw) on @aws-sdk/client-s3.
// Layout: PREFIX/config, PREFIX/data/XX/ID, PREFIX/keys/ID, ... A PUT is atomic on S3 (the object
// appears whole or not at all); `If-None-Match: *` refuses overwrites where the server supports it,
// otherwise HEAD-then-PUT. Large objects go up as a multipart upload. The SDK never retries
// (maxAttempts 1): the shared retry wrapper does.
import http from 'node:http';
import https from 'node:https';
import {
  S3Client,
  S3ClientConfig,
  PutObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  HeadBucketCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  ListObjectsV2Command,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  CompleteMultipartUploadCommand,
  AbortMultipartUploadCommand,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import { StorageError } from '../core/errors.js';
import { Backend, FileInfo, FileType, ID_RE } from './backend.js';
import { readBody, readBodyInto } from './body.js';
import { ListPage, RequestContext, describeNetworkError, httpStatusOf, storageError, validName } from './retry.js';
import type { S3Location } from './url.js';
import { httpsAgentOptions } from './tls.js';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /**
   * ARN of a role to assume with this key pair (a Kanister Profile Secret's `role`): requests are
   * made with temporary credentials from STS AssumeRole, asked for 60 minutes and renewed by the
   * SDK before they expire. STS is reached at the custom endpoint when there is one (Ceph radosgw
   * serves STS on its S3 port), otherwise at AWS's regional STS endpoint.
   */
  roleArn?: string;
}

/** How long assumed-role credentials are asked for (kando: 60 minutes). */
export const ASSUME_ROLE_SECONDS = 3600;

export interface S3Settings {
  location: S3Location;
  credentials?: S3Credentials;
  insecureTls?: boolean;
  /** PEM text of extra CA certificates. */
  ca?: string | Buffer;
  connections?: number;
  /** Objects at least this big go up as multipart (default 64 MiB); parts are partSize (16 MiB). */
  multipartThreshold?: number;
  partSize?: number;
  env?: NodeJS.ProcessEnv;
}

/** Builds an S3 client with dmctl's settings (shared with the object-store streams). */
export function makeS3Client(s: S3Settings): S3Client {
  const env = s.env ?? process.env;
  const loc = s.location;
  // The SDK writes a Node-version notice to stderr on first use; library code prints nothing.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const custom = loc.endpoint !== undefined;
  const maxSockets = Math.max(4, (s.connections ?? 5) * 2);
  const requestHandler = new NodeHttpHandler({
    httpAgent: new http.Agent({ keepAlive: true, maxSockets }),
    httpsAgent: new https.Agent(httpsAgentOptions({ ca: s.ca, insecureTls: s.insecureTls }, { maxSockets })),
    connectionTimeout: 15_000,
  });
  const cfg: S3ClientConfig = {
    region: loc.region || env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
    maxAttempts: 1,
    requestHandler,
  };
  if (custom) {
    cfg.endpoint = loc.endpoint;
    cfg.forcePathStyle = true;
    // S3-compatible servers reject or mis-store aws-chunked bodies with CRC trailers.
    cfg.requestChecksumCalculation = (env.AWS_REQUEST_CHECKSUM_CALCULATION?.toUpperCase() as 'WHEN_REQUIRED' | 'WHEN_SUPPORTED') ?? 'WHEN_REQUIRED';
    cfg.responseChecksumValidation = (env.AWS_RESPONSE_CHECKSUM_VALIDATION?.toUpperCase() as 'WHEN_REQUIRED' | 'WHEN_SUPPORTED') ?? 'WHEN_REQUIRED';
  }
  if (s.credentials?.roleArn) cfg.credentials = assumeRoleProvider(s.credentials as S3Credentials & { roleArn: string }, cfg.region as string, loc.endpoint, requestHandler, loc.display);
  else if (s.credentials) cfg.credentials = { accessKeyId: s.credentials.accessKeyId, secretAccessKey: s.credentials.secretAccessKey, sessionToken: s.credentials.sessionToken };
  // else: the SDK's default chain (env, shared config files, web identity / IRSA, container, IMDS)
  return new S3Client(cfg);
}

/**
 * A credentials provider that assumes `roleArn` with the key pair through STS AssumeRole. The S3
 * client caches what it returns and calls it again five minutes before `expiration`. Failures are
 * one line naming the role (never a key): access denied or unknown role are final, network
 * failures are left to the retry wrapper.
 */
function assumeRoleProvider(c: S3Credentials & { roleArn: string }, region: string, endpoint: string | undefined, requestHandler: NodeHttpHandler, location: string): AwsCredentialIdentityProvider {
  let client: { send(cmd: unknown): Promise<any> } | undefined;
  let Command: (new (input: Record<string, unknown>) => unknown) | undefined;
  return async () => {
    if (!client || !Command) {
      const sts = await import('@aws-sdk/nested-clients/sts');
      client = new sts.STSClient({
        region,
        ...(endpoint ? { endpoint } : {}),
        maxAttempts: 1,
        requestHandler,
        credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken },
      });
      Command = sts.AssumeRoleCommand as unknown as new (input: Record<string, unknown>) => unknown;
    }
    const op = `assuming the AWS role ${c.roleArn}`;
    let r: { Credentials?: { AccessKeyId?: string; SecretAccessKey?: string; SessionToken?: string; Expiration?: Date } };
    try {
      r = await client.send(new Command({ RoleArn: c.roleArn, RoleSessionName: `dmctl-${Date.now()}`, DurationSeconds: ASSUME_ROLE_SECONDS }));
    } catch (err) {
      const m = mapS3Error(err, location, op);
      if (m.kind === 'not-found' || ['NoSuchEntity', 'MalformedPolicyDocument', 'InvalidParameterValue', 'ValidationError'].includes((err as any)?.name)) {
        throw storageError('access-denied', `${location}: ${op}: STS refused it (${(err as any)?.name ?? 'error'})`, { cause: err, hint: 'check the role ARN in the profile Secret and that the key pair may assume it' });
      }
      if (m.kind === 'access-denied' || m.kind === 'other') throw storageError('access-denied', m.message, { cause: err, hint: 'check the role ARN in the profile Secret and that the key pair may assume it (its trust policy)' });
      throw m;
    }
    const k = r.Credentials;
    if (!k?.AccessKeyId || !k.SecretAccessKey || !k.SessionToken) throw storageError('access-denied', `${location}: ${op}: STS answered without credentials`);
    return { accessKeyId: k.AccessKeyId, secretAccessKey: k.SecretAccessKey, sessionToken: k.SessionToken, expiration: k.Expiration };
  };
}

/** Maps an S3 SDK error onto the StorageError vocabulary: one line naming backend and operation. */
export function mapS3Error(err: unknown, location: string, op: string): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as any;
  const name: string = e?.name ?? e?.Code ?? '';
  const status = httpStatusOf(err);
  const msg = (text: string) => `${location}: ${op}: ${text}`;
  switch (name) {
    case 'NoSuchKey':
    case 'NotFound':
      return storageError('not-found', msg('not found'), { cause: err, status });
    case 'NoSuchBucket':
      return storageError('bucket-missing', msg('bucket does not exist'), { cause: err, status, hint: 'create the bucket, or run `dmctl repo init` which creates it' });
    case 'InvalidAccessKeyId':
    case 'SignatureDoesNotMatch':
    case 'InvalidToken':
    case 'ExpiredToken':
      return storageError('access-denied', msg(`credentials rejected (${name})`), { cause: err, status, hint: 'check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile credentials' });
    case 'AccessDenied':
    case 'AllAccessDisabled':
      return storageError('access-denied', msg('access denied'), { cause: err, status, hint: 'check the credentials and the bucket policy' });
    case 'PreconditionFailed':
      return storageError('already-exists', msg('already exists'), { cause: err, status });
    case 'SlowDown':
    case 'RequestTimeout':
    case 'InternalError':
    case 'ServiceUnavailable':
    case 'RequestTimeTooSkewed':
      return storageError('unreachable', msg(`server busy or failing (${name}${status ? ' ' + status : ''})`), { cause: err, status, retryable: name !== 'RequestTimeTooSkewed' });
    case 'CredentialsProviderError':
      return storageError('access-denied', msg('no AWS credentials found'), { cause: err, hint: 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use a profile' });
    case 'InvalidRange':
      return storageError('other', msg('byte range is past the end of the object'), { cause: err, status });
  }
  const net = describeNetworkError(err);
  if (net) return storageError(net.kind, msg(net.text), { cause: err, retryable: net.retryable, hint: net.hint });
  if (status === 404) return storageError('not-found', msg('not found'), { cause: err, status });
  if (status === 403 || status === 401) return storageError('access-denied', msg(`access denied (HTTP ${status})`), { cause: err, status, hint: 'check the credentials' });
  if (status === 412) return storageError('already-exists', msg('already exists'), { cause: err, status });
  if (status === 409) return storageError('other', msg('conflicting concurrent request (HTTP 409)'), { cause: err, status, retryable: true });
  if (status !== undefined && (status === 429 || status >= 500)) return storageError('unreachable', msg(`server error (HTTP ${status}${name && !/^\d+$/.test(name) ? ' ' + name : ''})`), { cause: err, status, retryable: true });
  const text = String(e?.message ?? err).split('\n')[0].slice(0, 200);
  return storageError('other', msg(status ? `HTTP ${status}: ${text}` : text), { cause: err, status });
}

/** True when the server refused a conditional-write header it does not implement. */
function conditionalUnsupported(err: unknown): boolean {
  const st = httpStatusOf(err);
  const name = (err as any)?.name ?? '';
  return st === 501 || name === 'NotImplemented' || (st === 400 && /InvalidArgument|InvalidRequest|NotImplemented|header/i.test(`${name} ${(err as any)?.message ?? ''}`));
}

function shortName(type: FileType, name: string): string {
  return type === 'config' ? 'config' : `${type}/${name}`;
}

export class S3Backend implements Backend {
  readonly location: string;
  readonly connections: number;
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  private conditionalPut: boolean | undefined;
  private bucketKnown = false;
  private readonly multipartThreshold: number;
  private readonly partSize: number;

  constructor(readonly settings: S3Settings) {
    this.location = settings.location.display;
    this.connections = settings.connections ?? 5;
    this.client = makeS3Client(settings);
    this.bucket = settings.location.bucket;
    this.prefix = settings.location.prefix;
    this.multipartThreshold = settings.multipartThreshold ?? 64 * 1024 * 1024;
    this.partSize = Math.max(5 * 1024 * 1024, settings.partSize ?? 16 * 1024 * 1024);
  }

  private p(rel: string): string {
    return this.prefix ? `${this.prefix}/${rel}` : rel;
  }

  key(type: FileType, name: string): string {
    if (type === 'config') return this.p('config');
    if (type === 'data') return this.p(`data/${name.slice(0, 2)}/${name}`);
    return this.p(`${type}/${name}`);
  }

  private async fail(err: unknown, op: string, ctx?: RequestContext): Promise<never> {
    if (ctx?.signal?.aborted) throw storageError('unreachable', `${this.location}: ${op}: request timed out`, { cause: err, retryable: true });
    let mapped = mapS3Error(err, this.location, op);
    // HEAD answers a bare 404 for a missing bucket too: tell the two apart once.
    if (mapped.kind === 'not-found' && !this.bucketKnown) {
      try {
        await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
        this.bucketKnown = true;
      } catch (e2) {
        const m2 = mapS3Error(e2, this.location, op);
        if (httpStatusOf(e2) === 404 || m2.kind === 'not-found') mapped = storageError('bucket-missing', `${this.location}: ${op}: bucket "${this.bucket}" does not exist`, { cause: err, hint: 'create the bucket, or run `dmctl repo init` which creates it' });
      }
    }
    throw mapped;
  }

  async create(ctx?: RequestContext): Promise<void> {
    const op = 'creating the bucket';
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: ctx?.signal });
      this.bucketKnown = true;
      return;
    } catch (err) {
      if (httpStatusOf(err) !== 404 && (err as any)?.name !== 'NotFound' && (err as any)?.name !== 'NoSuchBucket') throw mapS3Error(err, this.location, op);
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }), { abortSignal: ctx?.signal });
      this.bucketKnown = true;
    } catch (err) {
      const name = (err as any)?.name;
      if (name === 'BucketAlreadyOwnedByYou') return;
      throw mapS3Error(err, this.location, op);
    }
  }

  async save(type: FileType, name: string, data: Uint8Array, ctx?: RequestContext): Promise<void> {
    const op = `saving ${shortName(type, name)}`;
    const Key = this.key(type, name);
    if (data.length >= this.multipartThreshold) return this.saveMultipart(Key, data, op, ctx);
    const body = Buffer.from(data.buffer, data.byteOffset, data.length);
    if (this.conditionalPut === false) await this.refuseIfExists(Key, op, ctx);
    try {
      const put = new PutObjectCommand({ Bucket: this.bucket, Key, Body: body, ContentLength: body.length, ...(this.conditionalPut === false ? {} : { IfNoneMatch: '*' }) });
      // A pack's name is the SHA-256 of its bytes: given to the signer, it does not hash the body
      // again (16 MiB per pack on the main thread), and the server still checks it against the body.
      if (type === 'data' && ID_RE.test(name)) {
        put.middlewareStack.add(
          (next) => (args) => {
            (args.request as { headers: Record<string, string> }).headers['x-amz-content-sha256'] = name;
            return next(args);
          },
          { step: 'build', name: 'dmctlKnownPayloadHash' },
        );
      }
      await this.client.send(put, { abortSignal: ctx?.signal });
      if (this.conditionalPut === undefined) this.conditionalPut = true;
    } catch (err) {
      if (this.conditionalPut === undefined && conditionalUnsupported(err)) {
        this.conditionalPut = false;
        return this.save(type, name, data, ctx);
      }
      return this.fail(err, op, ctx);
    }
  }

  private async refuseIfExists(Key: string, op: string, ctx?: RequestContext): Promise<void> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: ctx?.signal });
    } catch (err) {
      if (httpStatusOf(err) === 404) return;
      return this.fail(err, op, ctx);
    }
    throw storageError('already-exists', `${this.location}: ${op}: already exists`);
  }

  private async saveMultipart(Key: string, data: Uint8Array, op: string, ctx?: RequestContext): Promise<void> {
    if (this.conditionalPut !== true) await this.refuseIfExists(Key, op, ctx);
    let UploadId: string | undefined;
    try {
      const created = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }), { abortSignal: ctx?.signal });
      UploadId = created.UploadId!;
      const parts: { ETag?: string; PartNumber: number }[] = [];
      for (let off = 0, n = 1; off < data.length; off += this.partSize, n++) {
        const chunk = Buffer.from(data.buffer, data.byteOffset + off, Math.min(this.partSize, data.length - off));
        const r = await this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber: n, Body: chunk, ContentLength: chunk.length }), { abortSignal: ctx?.signal });
        parts.push({ ETag: r.ETag, PartNumber: n });
      }
      const complete = (cond: boolean) =>
        this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: parts }, ...(cond ? { IfNoneMatch: '*' } : {}) }), { abortSignal: ctx?.signal });
      try {
        await complete(this.conditionalPut !== false);
      } catch (err) {
        if (this.conditionalPut !== false && conditionalUnsupported(err)) await complete(false);
        else throw err;
      }
      UploadId = undefined;
    } catch (err) {
      return this.fail(err, op, ctx);
    } finally {
      if (UploadId) await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })).catch(() => {});
    }
  }

  async load(type: FileType, name: string, offset = 0, length = 0, ctx?: RequestContext): Promise<Buffer> {
    const buf = await this.get(type, name, offset, length, ctx, (body, announced) => readBody(body, announced));
    if (length > 0 && buf.length !== length) {
      if (buf.length > length && offset === 0) return buf.subarray(0, length);
      throw this.truncated(type, name, offset, length, buf.length);
    }
    return buf;
  }

  /** `load` of `dest.length` bytes at `offset` straight into `dest` (a restore's read ring). */
  async loadInto(type: FileType, name: string, offset: number, dest: Buffer, ctx?: RequestContext): Promise<void> {
    const got = await this.get(type, name, offset, dest.length, ctx, (body) => readBodyInto(body, dest));
    // More than asked from offset 0: a server that ignored the range, and `dest` holds the start.
    if (got !== dest.length && !(got > dest.length && offset === 0)) throw this.truncated(type, name, offset, dest.length, got);
  }

  /** GETs a file (or `length` bytes from `offset`) and reads its body with `read`; errors in the backend's terms. */
  private async get<T>(type: FileType, name: string, offset: number, length: number, ctx: RequestContext | undefined, read: (body: AsyncIterable<Uint8Array> | undefined, announced?: number) => Promise<T>): Promise<T> {
    const op = `loading ${shortName(type, name)}`;
    const Range = offset > 0 || length > 0 ? `bytes=${offset}-${length > 0 ? offset + length - 1 : ''}` : undefined;
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(type, name), Range }), { abortSignal: ctx?.signal });
      return await read(r.Body as AsyncIterable<Uint8Array> | undefined, r.ContentLength);
    } catch (err) {
      if (httpStatusOf(err) === 416) throw storageError('other', `${this.location}: ${op}: offset ${offset} is past the end of the file`, { cause: err });
      return this.fail(err, op, ctx);
    }
  }

  private truncated(type: FileType, name: string, offset: number, wanted: number, got: number): StorageError {
    return storageError('other', `${this.location}: loading ${shortName(type, name)}: file is truncated (wanted ${wanted} bytes at offset ${offset}, got ${got})`);
  }

  async stat(type: FileType, name: string, ctx?: RequestContext): Promise<FileInfo> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(type, name) }), { abortSignal: ctx?.signal });
      return { name: type === 'config' ? 'config' : name, size: Number(r.ContentLength ?? 0) };
    } catch (err) {
      return this.fail(err, `stat ${shortName(type, name)}`, ctx);
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
    const Prefix = this.p(`${type}/`);
    try {
      const r = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix, ContinuationToken: token, MaxKeys: 1000 }), { abortSignal: ctx?.signal });
      const items: FileInfo[] = [];
      for (const o of r.Contents ?? []) {
        const key = o.Key ?? '';
        const rel = key.slice(Prefix.length);
        const base = rel.slice(rel.lastIndexOf('/') + 1);
        // data/XX/ID (sharded) or a flat TYPE/ID; anything deeper or foreign is skipped
        if (type === 'data' ? !(rel === base || rel === `${base.slice(0, 2)}/${base}`) : rel !== base) continue;
        if (validName(type, base)) items.push({ name: base, size: Number(o.Size ?? 0) });
      }
      return { items, next: r.IsTruncated ? r.NextContinuationToken : undefined };
    } catch (err) {
      return this.fail(err, `listing ${type}`, ctx);
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
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(type, name) }), { abortSignal: ctx?.signal });
    } catch (err) {
      if (httpStatusOf(err) === 404 && (err as any)?.name !== 'NoSuchBucket') return;
      return this.fail(err, `removing ${shortName(type, name)}`, ctx);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

