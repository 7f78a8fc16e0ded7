// Plain object streams for kando's `location push/pull/delete`: any key under a location's prefix,
// streamed with bounded memory. S3: multipart with a fixed part buffer (8 MiB, two parts in
// flight), each part retried alone; Azure: uploadStream with bounded buffers; GCS: a resumable
// write stream; a local directory for tests. Objects appear whole (multipart/commit) or not at all.
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  PutObjectCommand, GetObjectCommand, ListObjectsV2Command, DeleteObjectsCommand, DeleteObjectCommand,
  CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand, AbortMultipartUploadCommand, S3Client,
} from '@aws-sdk/client-s3';
import { StorageError, UsageError } from '../core/errors.js';
import { makeS3Client, mapS3Error } from './s3.js';
import { makeContainerClient, mapAzureError, releaseContainerClient } from './azure.js';
import { makeGcsBucket, mapGcsError } from './gcs.js';
import { loadCa, BackendOptions } from './open.js';
import { RetryPolicy, Semaphore, storageError } from './retry.js';
import type { RepoLocation } from './url.js';

export interface ObjectStore {
  readonly location: string;
  /** Streams `source` to `key` (relative to the location prefix); replaces an existing object. */
  putStream(key: string, source: Readable): Promise<{ key: string; bytes: number }>;
  /** A readable stream of the object's bytes; kind 'not-found' if it does not exist. */
  getStream(key: string): Promise<Readable>;
  /** Deletes every object whose key starts with `prefix` (string prefix, as kando). Returns how many. */
  deleteWithPrefix(prefix: string): Promise<number>;
  close(): Promise<void>;
}

export interface ObjectStoreOptions extends BackendOptions {
  /** Multipart part / block size (default 8 MiB; S3 needs at least 5 MiB). */
  partSize?: number;
  /** Parts uploaded at once (default 2): memory is about (partsInFlight + 1) × partSize. */
  partsInFlight?: number;
}

/** kando's object path: join(Location.Prefix, --path), cleaned, without a leading slash. */
export function objectKey(prefix: string, key: string): string {
  const joined = path.posix.normalize([prefix, key].filter(Boolean).join('/')).replace(/^\/+/, '');
  if (joined === '.' || joined === '') throw new UsageError('the object path is empty', 'give --path');
  if (joined.split('/').includes('..')) throw new UsageError(`invalid object path "${key}": '..' is not allowed`);
  return joined;
}

/** A pass-through that counts bytes (a 'data' listener on the source would start it flowing early). */
function counting(source: Readable): { stream: Readable; bytes: () => number } {
  let n = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      cb(null, chunk);
    },
  });
  source.on('error', (err) => t.destroy(err));
  source.pipe(t);
  return { stream: t, bytes: () => n };
}

/** Reads a stream into buffers of exactly `size` bytes (the last one shorter). */
async function* fixedChunks(source: AsyncIterable<Buffer | string>, size: number): AsyncGenerator<Buffer> {
  let buf = Buffer.allocUnsafe(size);
  let used = 0;
  for await (const c0 of source) {
    let c = typeof c0 === 'string' ? Buffer.from(c0) : c0;
    while (c.length > 0) {
      const n = Math.min(size - used, c.length);
      c.copy(buf, used, 0, n);
      used += n;
      c = c.subarray(n);
      if (used === size) {
        yield buf;
        buf = Buffer.allocUnsafe(size);
        used = 0;
      }
    }
  }
  if (used > 0) yield buf.subarray(0, used);
}

class S3ObjectStore implements ObjectStore {
  readonly location: string;
  constructor(private readonly client: S3Client, private readonly bucket: string, private readonly prefix: string, location: string, private readonly policy: RetryPolicy, private readonly partSize: number, private readonly inFlight: number) {
    this.location = location;
  }

  async putStream(key: string, source: Readable): Promise<{ key: string; bytes: number }> {
    const Key = objectKey(this.prefix, key);
    const op = `uploading ${Key}`;
    const chunks = fixedChunks(source, this.partSize);
    let bytes = 0;
    const first = await chunks.next();
    const firstBuf = first.done ? Buffer.alloc(0) : first.value;
    bytes += firstBuf.length;
    const second = first.done ? { done: true as const, value: undefined } : await chunks.next();
    if (second.done) {
      await this.policy.call(op, (ctx) => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: firstBuf, ContentLength: firstBuf.length }), { abortSignal: ctx.signal }).catch((e) => { throw mapS3Error(e, this.location, op); }), firstBuf.length);
      return { key: Key, bytes };
    }
    const created = await this.policy.call(op, (ctx) => this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }), { abortSignal: ctx.signal }).catch((e) => { throw mapS3Error(e, this.location, op); }));
    const UploadId = created.UploadId!;
    const parts: { ETag?: string; PartNumber: number }[] = [];
    const pending = new Set<Promise<void>>();
    let failure: unknown;
    const upload = (body: Buffer, PartNumber: number) => {
      const p = this.policy
        .call(`${op} (part ${PartNumber})`, (ctx) => this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber, Body: body, ContentLength: body.length }), { abortSignal: ctx.signal }).catch((e) => { throw mapS3Error(e, this.location, op); }), body.length, { limit: false })
        .then((r) => { parts.push({ ETag: r.ETag, PartNumber }); }, (e) => { failure ??= e; })
        .finally(() => pending.delete(p));
      pending.add(p);
    };
    try {
      let n = 1;
      upload(firstBuf, n++);
      bytes += second.value.length;
      upload(second.value, n++);
      for await (const body of { [Symbol.asyncIterator]: () => chunks }) {
        while (pending.size >= this.inFlight) await Promise.race(pending);
        if (failure) throw failure;
        bytes += body.length;
        if (n > 10000) throw new StorageError('other', `${this.location}: ${op}: more than 10,000 parts`, { hint: 'the stream is too large for the part size' });
        upload(body, n++);
      }
      await Promise.all(pending);
      if (failure) throw failure;
      parts.sort((a, b) => a.PartNumber - b.PartNumber);
      await this.policy.call(`${op} (complete)`, (ctx) => this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: parts } }), { abortSignal: ctx.signal }).catch((e) => { throw mapS3Error(e, this.location, op); }));
      return { key: Key, bytes };
    } catch (err) {
      await Promise.allSettled(pending);
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })).catch(() => {});
      throw err;
    }
  }

  async getStream(key: string): Promise<Readable> {
    const Key = objectKey(this.prefix, key);
    const op = `downloading ${Key}`;
    const r = await this.policy.call(op, () => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key })).catch((e) => { throw mapS3Error(e, this.location, op); }));
    return r.Body as Readable;
  }

  async deleteWithPrefix(prefix: string): Promise<number> {
    const Prefix = objectKey(this.prefix, prefix);
    const op = `deleting ${Prefix}*`;
    let token: string | undefined;
    let count = 0;
    do {
      const page = await this.policy.call(op, (ctx) => this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix, ContinuationToken: token }), { abortSignal: ctx.signal }).catch((e) => { throw mapS3Error(e, this.location, op); }));
      const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
      if (keys.length) {
        const r = await this.policy.call(op, (ctx) => this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys, Quiet: true } }), { abortSignal: ctx.signal }).catch((e) => { throw mapS3Error(e, this.location, op); }));
        if (r.Errors?.length) {
          // some servers refuse batch deletes partly: fall back to one by one for those
          for (const e of r.Errors) await this.policy.call(op, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: e.Key! })).catch((er) => { throw mapS3Error(er, this.location, op); }));
        }
        count += keys.length;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return count;
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

class AzureObjectStore implements ObjectStore {
  constructor(readonly location: string, private readonly container: ReturnType<typeof makeContainerClient>, private readonly prefix: string, private readonly partSize: number, private readonly inFlight: number) {}

  async putStream(key: string, source: Readable): Promise<{ key: string; bytes: number }> {
    const name = objectKey(this.prefix, key);
    try {
      await this.container.createIfNotExists();
    } catch (err) {
      throw mapAzureError(err, this.location, `uploading ${name}`);
    }
    const c = counting(source);
    try {
      // uploadStream keeps at most `inFlight` buffers of partSize; blocks stay invisible until the commit.
      await this.container.getBlockBlobClient(name).uploadStream(c.stream, this.partSize, this.inFlight);
    } catch (err) {
      throw mapAzureError(err, this.location, `uploading ${name}`);
    }
    return { key: name, bytes: c.bytes() };
  }

  async getStream(key: string): Promise<Readable> {
    const name = objectKey(this.prefix, key);
    try {
      const r = await this.container.getBlobClient(name).download();
      return r.readableStreamBody as Readable;
    } catch (err) {
      throw mapAzureError(err, this.location, `downloading ${name}`);
    }
  }

  async deleteWithPrefix(prefix: string): Promise<number> {
    const p = objectKey(this.prefix, prefix);
    const sem = new Semaphore(8);
    let count = 0;
    try {
      const jobs: Promise<unknown>[] = [];
      for await (const b of this.container.listBlobsFlat({ prefix: p })) {
        await sem.acquire();
        jobs.push(this.container.deleteBlob(b.name).then(() => { count++; }).finally(() => sem.release()));
      }
      await Promise.all(jobs);
    } catch (err) {
      if ((err as any)?.code === 'ContainerNotFound') return count;
      throw mapAzureError(err, this.location, `deleting ${p}*`);
    }
    return count;
  }

  async close(): Promise<void> {
    releaseContainerClient(this.container);
  }
}

class GcsObjectStore implements ObjectStore {
  constructor(readonly location: string, private readonly bucket: ReturnType<typeof makeGcsBucket>, private readonly prefix: string) {}

  async putStream(key: string, source: Readable): Promise<{ key: string; bytes: number }> {
    const name = objectKey(this.prefix, key);
    const c = counting(source);
    try {
      await pipeline(c.stream, this.bucket.file(name).createWriteStream({ resumable: true, validation: false, contentType: 'application/octet-stream' }));
    } catch (err) {
      throw mapGcsError(err, this.location, `uploading ${name}`);
    }
    return { key: name, bytes: c.bytes() };
  }

  async getStream(key: string): Promise<Readable> {
    const name = objectKey(this.prefix, key);
    const file = this.bucket.file(name);
    try {
      await file.getMetadata();
    } catch (err) {
      throw mapGcsError(err, this.location, `downloading ${name}`);
    }
    return file.createReadStream({ validation: false });
  }

  async deleteWithPrefix(prefix: string): Promise<number> {
    const p = objectKey(this.prefix, prefix);
    let count = 0;
    try {
      let token: string | undefined;
      do {
        const [files, next] = await this.bucket.getFiles({ prefix: p, autoPaginate: false, maxResults: 1000, pageToken: token });
        await Promise.all(files.map((f) => f.delete({ ignoreNotFound: true }).then(() => { count++; })));
        token = (next as { pageToken?: string } | null)?.pageToken;
      } while (token);
    } catch (err) {
      throw mapGcsError(err, this.location, `deleting ${p}*`);
    }
    return count;
  }

  async close(): Promise<void> {}
}

class LocalObjectStore implements ObjectStore {
  readonly location: string;
  constructor(private readonly root: string) {
    this.location = `local:${root}`;
  }

  async putStream(key: string, source: Readable): Promise<{ key: string; bytes: number }> {
    const name = objectKey('', key);
    const final = path.join(this.root, name);
    const tmp = `${final}.tmp-${crypto.randomBytes(6).toString('hex')}`;
    let bytes = 0;
    try {
      await fsp.mkdir(path.dirname(final), { recursive: true });
      const c = counting(source);
      await pipeline(c.stream, createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
      bytes = c.bytes();
      await fsp.rename(tmp, final);
    } catch (err) {
      await fsp.unlink(tmp).catch(() => {});
      throw storageError('other', `${this.location}: uploading ${name}: ${(err as Error).message}`, { cause: err });
    }
    return { key: name, bytes };
  }

  async getStream(key: string): Promise<Readable> {
    const name = objectKey('', key);
    try {
      const fh = await fsp.open(path.join(this.root, name), 'r');
      return createReadStream('', { fd: fh.fd, autoClose: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw storageError('not-found', `${this.location}: downloading ${name}: not found`);
      throw storageError('other', `${this.location}: downloading ${name}: ${(err as Error).message}`, { cause: err });
    }
  }

  async deleteWithPrefix(prefix: string): Promise<number> {
    const p = objectKey('', prefix);
    let count = 0;
    const walk = async (dir: string): Promise<void> => {
      const ents = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of ents) {
        const full = path.join(dir, e.name);
        const rel = path.relative(this.root, full).split(path.sep).join('/');
        if (e.isDirectory()) {
          if (p.startsWith(rel + '/') || rel.startsWith(p)) await walk(full);
        } else if (rel.startsWith(p)) {
          await fsp.unlink(full);
          count++;
        }
      }
    };
    await walk(this.root);
    return count;
  }

  async close(): Promise<void> {}
}

/** Opens an object store at a location (the location's prefix is the root of all keys). */
export async function openObjectStore(loc: RepoLocation, opts: ObjectStoreOptions = {}): Promise<ObjectStore> {
  const partSize = Math.max(5 * 1024 * 1024, opts.partSize ?? 8 * 1024 * 1024);
  const inFlight = Math.max(1, opts.partsInFlight ?? 2);
  const env = opts.env ?? process.env;
  switch (loc.scheme) {
    case 's3': {
      const ca = await loadCa(opts.cacert);
      const client = makeS3Client({ location: loc, credentials: opts.profile?.s3, insecureTls: opts.insecureTls, ca, connections: inFlight + 1, env });
      const policy = new RetryPolicy(loc.display, inFlight + 1, opts.retry);
      return new S3ObjectStore(client, loc.bucket, loc.prefix, loc.display, policy, partSize, inFlight);
    }
    case 'azure': {
      const ca = await loadCa(opts.cacert);
      const container = makeContainerClient({ location: loc, credentials: opts.profile?.azure, insecureTls: opts.insecureTls, ca, env }, { maxTries: 5 });
      return new AzureObjectStore(loc.display, container, loc.prefix, partSize, inFlight);
    }
    case 'gs': {
      const ca = await loadCa(opts.cacert);
      return new GcsObjectStore(loc.display, makeGcsBucket({ location: loc, credentials: opts.profile?.gcs, insecureTls: opts.insecureTls, ca, env }, { autoRetry: true }), loc.prefix);
    }
    case 'local':
      return new LocalObjectStore(loc.path);
    case 'rest':
      throw new UsageError('location commands need an object store (s3Compliant, azure or gcs profile)');
  }
}

