// Pack files (reference §6): encrypted blobs back to back, then the encrypted header, then its
// length as uint32 LE. Header entries are 37 bytes (uncompressed) or 41 bytes (zstd) each.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { IntegrityError } from '../core/errors.js';
import { Backend } from '../storage/backend.js';
import { MasterKey, OVERHEAD, open, seal, sha256hex } from './crypto.js';

export type BlobType = 'data' | 'tree';

export interface PackedBlob {
  type: BlobType;
  id: string;
  /** Offset of the encrypted blob in the pack. */
  offset: number;
  /** Length of the encrypted blob (payload + 32). */
  length: number;
  /** Plaintext length when the blob is zstd-compressed; 0 when stored uncompressed. */
  uncompressedLength: number;
}

export const MAX_HEADER_SIZE = 16 * 1024 * 1024 + 4;
/** Header tail restic reads first; we read a little more so one request covers ~100 entries. */
const TAIL_GUESS = 4096;

export function entrySize(b: { uncompressedLength: number }): number {
  return b.uncompressedLength ? 41 : 37;
}

/** Size a pack must have on disk given its blobs (restic's "pack size does not match" check). */
export function expectedPackSize(blobs: readonly PackedBlob[]): number {
  let s = 4 + OVERHEAD;
  for (const b of blobs) s += entrySize(b) + b.length;
  return s;
}

export function encodeHeader(blobs: readonly PackedBlob[]): Buffer {
  let size = 0;
  for (const b of blobs) size += entrySize(b);
  const h = Buffer.allocUnsafe(size);
  let o = 0;
  for (const b of blobs) {
    const compressed = b.uncompressedLength !== 0;
    h[o] = (b.type === 'tree' ? 1 : 0) | (compressed ? 2 : 0);
    h.writeUInt32LE(b.length, o + 1);
    o += 5;
    if (compressed) {
      h.writeUInt32LE(b.uncompressedLength, o);
      o += 4;
    }
    h.write(b.id, o, 32, 'hex');
    o += 32;
  }
  return h;
}

export function decodeHeader(h: Buffer, what: string): PackedBlob[] {
  const out: PackedBlob[] = [];
  let o = 0;
  let offset = 0;
  while (o < h.length) {
    const t = h[o];
    if (t > 3) throw new IntegrityError(`${what}: invalid blob type ${t} in header`);
    const compressed = (t & 2) !== 0;
    const size = compressed ? 41 : 37;
    if (o + size > h.length) throw new IntegrityError(`${what}: header entry truncated`);
    const length = h.readUInt32LE(o + 1);
    const uncompressedLength = compressed ? h.readUInt32LE(o + 5) : 0;
    const id = h.toString('hex', o + size - 32, o + size);
    if (length < OVERHEAD) throw new IntegrityError(`${what}: blob ${id.slice(0, 10)} has impossible length ${length}`);
    out.push({ type: t & 1 ? 'tree' : 'data', id, offset, length, uncompressedLength });
    offset += length;
    o += size;
  }
  return out;
}

/**
 * Accumulates encrypted blobs of one type into a pack in memory. Each blob is copied once, into one
 * buffer that becomes the pack (before: a copy per borrowed blob, then a concatenation of all of
 * them, and the pack's SHA-256 computed blob by blob on the main thread).
 */
export class PackBuilder {
  readonly type: BlobType;
  readonly blobs: PackedBlob[] = [];
  private buf: Buffer;
  size = 0;

  /**
   * `capacity`: room for the largest pack expected: the target size plus the largest blob, which
   * may come just before the target is reached (pages never written to cost no memory).
   */
  constructor(type: BlobType, capacity = 25 * 1024 * 1024) {
    this.type = type;
    this.buf = Buffer.allocUnsafeSlow(capacity);
  }

  get count(): number {
    return this.blobs.length;
  }

  /** Copies `sealed` in; `written`, if given, is called at once (the memory is free to reuse). */
  add(id: string, sealed: Buffer, uncompressedLength: number, written?: () => void): PackedBlob {
    this.room(sealed.length);
    sealed.copy(this.buf, this.size);
    written?.();
    const b: PackedBlob = { type: this.type, id, offset: this.size, length: sealed.length, uncompressedLength };
    this.blobs.push(b);
    this.header += entrySize(b);
    this.size += sealed.length;
    return b;
  }

  private room(n: number): void {
    if (this.size + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafeSlow(Math.max(this.buf.length * 2, this.size + n));
    this.buf.copy(bigger, 0, 0, this.size);
    this.buf = bigger;
  }

  /** Header size once finished (for the "close when ≥ target" decision), kept as blobs are added. */
  private header = 4 + OVERHEAD;
  headerSize(): number {
    return this.header;
  }

  /** Appends the encrypted header and its length: the pack's bytes. */
  private close(key: MasterKey): Buffer {
    const header = seal(key, encodeHeader(this.blobs));
    this.room(header.length + 4);
    header.copy(this.buf, this.size);
    this.buf.writeUInt32LE(header.length, this.size + header.length);
    return this.buf.subarray(0, this.size + header.length + 4);
  }

  /**
   * The finished pack and its ID. The SHA-256 runs here: on the thread pool (WebCrypto) the 16 MiB
   * copy it makes of its input cost the main thread more than hashing (SHA extensions) does.
   */
  finish(key: MasterKey): { id: string; data: Buffer; blobs: PackedBlob[] } {
    const data = this.close(key);
    return { id: sha256hex(data), data, blobs: this.blobs };
  }
}

/** Reads and decrypts a pack's header. `size` is the pack's size (from a listing or stat). */
export async function readPackHeader(be: Backend, key: MasterKey, packId: string, size: number): Promise<PackedBlob[]> {
  const what = `pack ${packId.slice(0, 10)}`;
  if (size < 4 + OVERHEAD) throw new IntegrityError(`${what}: file too small (${size} bytes) to be a pack`);
  const tailLen = Math.min(size, TAIL_GUESS);
  let tail = await be.load('data', packId, size - tailLen, tailLen);
  const hlen = tail.readUInt32LE(tail.length - 4);
  if (hlen < OVERHEAD || hlen > size - 4 || hlen > MAX_HEADER_SIZE) {
    throw new IntegrityError(`${what}: invalid header length ${hlen} (pack damaged or truncated)`);
  }
  let header: Buffer;
  if (hlen + 4 <= tail.length) header = tail.subarray(tail.length - 4 - hlen, tail.length - 4);
  else {
    tail = await be.load('data', packId, size - 4 - hlen, hlen);
    header = tail;
  }
  const blobs = decodeHeader(open(key, header, `${what} header`), what);
  const end = blobs.reduce((s, b) => s + b.length, 0);
  if (end !== size - 4 - hlen) throw new IntegrityError(`${what}: header describes ${end} bytes of blobs, pack holds ${size - 4 - hlen}`);
  return blobs;
}

export function sealBlob(key: MasterKey, payload: Uint8Array): Buffer {
  return seal(key, payload);
}

/** Resolves with the SHA-256 (hex) of the first `size` bytes of the file at `path`. */
export type PackFileHasher = (path: string, size: number) => Promise<string>;

/**
 * The SHA-256 (hex) of the first `size` bytes of the file at `path`, read with blocking calls into
 * `buf` (a seal worker passes one it reuses). Throws if the file is shorter.
 */
export function hashFileSync(path: string, size: number, buf: Buffer = Buffer.allocUnsafe(Math.min(size, 1024 * 1024))): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(path, 'r');
  try {
    for (let pos = 0; pos < size; ) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
      if (n === 0) throw new Error(`${path}: ${pos} bytes, expected ${size}`);
      h.update(n === buf.length ? buf : buf.subarray(0, n));
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/**
 * Like PackBuilder, but appends each blob to a temp file as it comes (the way restic keeps packs in
 * temp files), so a pack being filled costs no memory. The finished file is handed to the backend's
 * adoptFile (same filesystem) instead of being uploaded from memory.
 */
export class FilePackBuilder {
  readonly blobs: PackedBlob[] = [];
  /** Hashed as blobs are added, unless another thread hashes the finished file (create's hashFile). */
  private hash: crypto.Hash | undefined;
  private writes: Promise<unknown>[] = [];
  private failure: unknown;
  /** Bytes handed to writes that have not completed (the sealed buffers they keep alive). */
  private unwritten = 0;
  private writeDone: (() => void)[] = [];
  size = 0;

  private constructor(
    readonly type: BlobType,
    readonly path: string,
    private readonly fh: import('node:fs').promises.FileHandle,
    private readonly hashFile: PackFileHasher | undefined,
  ) {
    if (!hashFile) this.hash = crypto.createHash('sha256');
  }

  /**
   * `hashFile`, if given, computes the pack's ID from the finished file (a seal worker reads it
   * back from the page cache) instead of the thread that adds the blobs hashing them as they come.
   */
  static async create(type: BlobType, dir: string, hashFile?: PackFileHasher): Promise<FilePackBuilder> {
    const { promises: fsp } = await import('node:fs');
    const p = `${dir}/${spoolName()}`;
    const fh = await fsp.open(p, 'wx', 0o600);
    return new FilePackBuilder(type, p, fh, hashFile);
  }

  get count(): number {
    return this.blobs.length;
  }

  /** Kept as blobs are added: summing the entries on every add made filling a pack of small blobs quadratic. */
  private header = 4 + OVERHEAD;
  headerSize(): number {
    return this.header;
  }

  /** Sealed blobs not yet written (small blobs are written in batches, one writev per ~1 MiB). */
  private batch: Buffer[] = [];
  private batchWritten: (() => void)[] = [];
  private batchBytes = 0;
  private batchStart = 0;

  /** `written`, if given, is called once `sealed` is written (or the pack abandoned) and no longer read. */
  add(id: string, sealed: Buffer, uncompressedLength: number, written?: () => void): PackedBlob {
    const b: PackedBlob = { type: this.type, id, offset: this.size, length: sealed.length, uncompressedLength };
    this.blobs.push(b);
    this.header += entrySize(b);
    this.hash?.update(sealed);
    if (!this.batch.length) this.batchStart = this.size;
    this.batch.push(sealed);
    if (written) this.batchWritten.push(written);
    this.batchBytes += sealed.length;
    this.size += sealed.length;
    if (this.batchBytes >= WRITE_BATCH) this.flushBatch();
    return b;
  }

  /**
   * Starts writing the blobs added since the last write now, without waiting for WRITE_BATCH bytes
   * of them: their `written` callbacks come once that write is done. For blobs whose bytes are
   * borrowed from a ring that others wait on: held until a batch fills, they could keep it full.
   */
  flush(): void {
    this.flushBatch();
  }

  private flushBatch(): void {
    if (!this.batch.length) return;
    const bufs = this.batch;
    const written = this.batchWritten;
    const pos = this.batchStart;
    this.batch = [];
    this.batchWritten = [];
    this.batchBytes = 0;
    const bytes = this.size - pos;
    this.unwritten += bytes;
    this.writes.push(
      writevAll(this.fh, bufs, pos)
        .catch((err) => (this.failure ??= err))
        .finally(() => {
          this.unwritten -= bytes;
          for (const w of written) w();
          for (const w of this.writeDone.splice(0)) w();
        }),
    );
    if (this.writes.length > 16) this.writes = [Promise.all(this.writes)];
  }

  /**
   * Resolves once at most `limit` bytes wait to be written: back-pressure for the caller, so that a
   * slow disk (dirty-page throttling on a busy machine) does not let sealed blobs pile up in memory.
   */
  async drain(limit: number): Promise<void> {
    while (this.unwritten > limit && !this.failure) await new Promise<void>((r) => this.writeDone.push(r));
  }

  /**
   * Writes the header and closes the file. `sync` (default): flushed to disk, for a file that
   * becomes the repository's pack; not for a temp copy that is uploaded and removed.
   */
  async finish(key: MasterKey, opts: { sync?: boolean } = {}): Promise<{ id: string; path: string; blobs: PackedBlob[]; size: number }> {
    const header = seal(key, encodeHeader(this.blobs));
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(header.length, 0);
    this.hash?.update(header);
    this.hash?.update(len);
    this.flushBatch();
    const size = this.size + header.length + 4;
    let id: string;
    try {
      await Promise.all(this.writes);
      if (this.failure) throw this.failure;
      await writeAll(this.fh, Buffer.concat([header, len]), this.size);
      // (the file is complete: it is hashed while it is flushed)
      const [hashed] = await Promise.all([this.hashFile?.(this.path, size), (opts.sync ?? true) ? this.fh.sync() : undefined]);
      id = hashed ?? this.hash!.digest('hex');
    } finally {
      await this.fh.close().catch(() => {});
    }
    return { id, path: this.path, blobs: this.blobs, size };
  }

  async abort(): Promise<void> {
    for (const w of this.batchWritten.splice(0)) w();
    this.batch = [];
    await Promise.allSettled(this.writes);
    await this.fh.close().catch(() => {});
    const { promises: fsp } = await import('node:fs');
    await fsp.unlink(this.path).catch(() => {});
  }
}

const WRITE_BATCH = 1024 * 1024;

async function writevAll(fh: import('node:fs').promises.FileHandle, bufs: Buffer[], pos: number): Promise<void> {
  if (bufs.length === 1) return writeAll(fh, bufs[0], pos);
  const total = bufs.reduce((n, b) => n + b.length, 0);
  const { bytesWritten } = await fh.writev(bufs, pos);
  if (bytesWritten < total) await writeAll(fh, Buffer.concat(bufs).subarray(bytesWritten), pos + bytesWritten);
}

async function writeAll(fh: import('node:fs').promises.FileHandle, buf: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, pos + done);
    done += bytesWritten;
  }
}

/** Spooled pack names carry host and PID, so leftovers of a killed process can be recognised. */
const SPOOL_RE = /^([A-Za-z0-9.]*)-(\d+)-[0-9a-f]{16}-tmp-dmctl-pack$/;
/** Spool files of other hosts (shared filesystems) are removed only when this old. */
const FOREIGN_SPOOL_MAX_AGE_MS = 24 * 3600 * 1000;

function spoolHost(): string {
  return os.hostname().replace(/[^A-Za-z0-9.]/g, '').slice(0, 64);
}

function spoolName(): string {
  return `${spoolHost()}-${process.pid}-${crypto.randomBytes(8).toString('hex')}-tmp-dmctl-pack`;
}

/**
 * Removes temp packs that a killed dmctl left in `dir`: from this host when their process is gone,
 * from other hosts after a day. Nothing refers to them (their data was never indexed). Best effort.
 */
export async function removeStaleSpool(dir: string): Promise<number> {
  const { promises: fsp } = await import('node:fs');
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  const host = spoolHost();
  for (const n of names) {
    const m = SPOOL_RE.exec(n);
    if (!m) continue;
    const p = `${dir}/${n}`;
    let stale: boolean;
    if (m[1] === host) {
      const pid = Number(m[2]);
      stale = pid !== process.pid && !pidAlive(pid);
    } else {
      const st = await fsp.stat(p).catch(() => undefined);
      stale = !!st && Date.now() - st.mtimeMs > FOREIGN_SPOOL_MAX_AGE_MS;
    }
    if (stale && (await fsp.unlink(p).then(() => true, () => false))) removed++;
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
