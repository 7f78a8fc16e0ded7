// Reads a file or stream, chunks it with restic's chunker, hashes each chunk and hands new chunks to
// the BlobWriter. Several chunks of one file are compressed/encrypted concurrently; the content list
// keeps file order because IDs are known as soon as a chunk is hashed.
import { promises as fsp } from 'node:fs';
import { MID_FILE, readWholeSync } from './read-source.js';
import { readAt } from '../storage/local.js';
import { OFFLOAD_MIN, sha256hex, sha256hexAsync } from '../repository/crypto.js';
import { Chunker, MAX_SIZE, MIN_SIZE } from '../chunker/chunker.js';
import { BlobWriter } from '../repository/repository.js';
import { ChunkRing, ReadFn, acquireRing, releaseRing, chunkIntoRing } from './chunk-ring.js';

/** Read size for large files and streams. */
const READ_SIZE = 1024 * 1024;

export interface SavedContent {
  content: string[];
  size: number;
}

export type BytesFn = (n: number) => void;

/** Large chunks being hashed (in the seal workers or on the thread pool): at most this many bytes at once. */
const HASHING_BYTES = 4 * 1024 * 1024;

/**
 * Consumes chunk buffers: hash, then hand new blobs to the writer's queue. Large chunks are hashed
 * off the main thread while the chunker goes on with the next ones; the content list keeps the
 * chunks' order because each hash fills its own slot.
 */
class ContentSink {
  readonly content: string[] = [];
  size = 0;
  private readonly hashing = new Set<Promise<void>>();
  private hashingBytes = 0;
  private failure: unknown;

  constructor(
    private readonly writer: BlobWriter,
    private readonly onBytes?: BytesFn,
  ) {}

  async push(chunk: Buffer): Promise<void> {
    const slot = this.reserve(chunk.length);
    if (chunk.length < OFFLOAD_MIN) {
      const id = sha256hex(chunk);
      this.content[slot] = id;
      await this.writer.enqueue('data', id, chunk);
      return;
    }
    await this.room(chunk.length);
    // Hashed on the thread pool, sealed through the writer's queue (without seal workers, or for a
    // file that grew past its batch's limit; with them, files go to the workers whole or through a
    // ring).
    this.track(
      chunk.length,
      sha256hexAsync(chunk).then((id) => {
        this.content[slot] = id;
        return this.writer.enqueue('data', id, chunk);
      }),
    );
  }

  /** Like push, for a chunk that is region [start, end) of a ring, read there by a seal worker. */
  async pushRegion(ring: ChunkRing, start: number, end: number): Promise<void> {
    const len = end - start;
    const pool = this.writer.sealPool();
    if (!pool || len < OFFLOAD_MIN) return this.push(Buffer.from(ring.bytes.subarray(start, end)));
    const slot = this.reserve(len);
    await this.room(len);
    ring.hold(start, end);
    this.track(
      len,
      pool.hashShared(ring.sab, start, len, () => ring.release(start)).then((h) => {
        this.content[slot] = h.id;
        return this.writer.enqueueHashed('data', h, len);
      }),
    );
  }

  /** Takes the next content slot for a chunk of `len` bytes. */
  private reserve(len: number): number {
    if (this.failure) throw this.failure;
    const slot = this.content.length;
    this.content.push('');
    this.size += len;
    this.onBytes?.(len);
    return slot;
  }

  /** Waits until `len` more bytes may be hashed at once. */
  private async room(len: number): Promise<void> {
    while (this.hashingBytes > 0 && this.hashingBytes + len > HASHING_BYTES) {
      await Promise.race(this.hashing);
      if (this.failure) throw this.failure;
    }
  }

  /** Counts `len` bytes as being hashed until `work` (hash, then hand the blob on) settles; failures surface later. */
  private track(len: number, work: Promise<void>): void {
    this.hashingBytes += len;
    const task: Promise<void> = work
      .catch((err) => {
        this.failure ??= err;
      })
      .finally(() => {
        this.hashing.delete(task);
        this.hashingBytes -= len;
      });
    this.hashing.add(task);
  }

  async finish(): Promise<SavedContent> {
    while (this.hashing.size) await Promise.all(this.hashing);
    if (this.failure) throw this.failure;
    return { content: this.content, size: this.size };
  }
}

/**
 * Splits a sequence of buffers into chunks. A chunk that lies inside one input buffer is a view of
 * it (no copy); one spanning buffers is concatenated once.
 */
async function chunkInto(sink: ContentSink, chunker: Chunker, source: AsyncIterable<Buffer>): Promise<void> {
  let pieces: Buffer[] = [];
  let pieceBytes = 0;
  for await (const buf of source) {
    let start = 0;
    while (start < buf.length) {
      const end = chunker.next(buf, start, buf.length);
      if (end < 0) {
        pieces.push(buf.subarray(start));
        pieceBytes += buf.length - start;
        break;
      }
      const tail = buf.subarray(start, end);
      const chunk = pieces.length ? Buffer.concat([...pieces, tail], pieceBytes + tail.length) : tail;
      pieces = [];
      pieceBytes = 0;
      await sink.push(chunk);
      start = end;
    }
  }
  if (pieceBytes) await sink.push(pieces.length === 1 ? pieces[0] : Buffer.concat(pieces, pieceBytes));
}

/** Yields fresh buffers of `size` bytes filled by `read` (short counts allowed) until EOF. */
async function* readBuffers(read: (buf: Buffer, off: number, len: number) => Promise<number>, size: number): AsyncGenerator<Buffer> {
  for (;;) {
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const n = await read(buf, got, size - got);
      if (n === 0) break;
      got += n;
    }
    if (got > 0) yield got === size ? buf : buf.subarray(0, got);
    if (got < size) return;
  }
}

/** Yields fresh buffers read from a file handle until EOF. */
function readHandle(fh: fsp.FileHandle): AsyncGenerator<Buffer> {
  return readBuffers(async (buf, off, len) => (await fh.read(buf, off, len, null)).bytesRead, READ_SIZE);
}

/** Saves the content of an open file. `sizeHint` from lstat lets small files go through one read. */
export async function saveFile(writer: BlobWriter, polynomial: bigint, fh: fsp.FileHandle, sizeHint: number, onBytes?: BytesFn): Promise<SavedContent> {
  const sink = new ContentSink(writer, onBytes);
  if (sizeHint < MIN_SIZE) {
    // One chunk for sure (unless the file grew): a single read, no chunker.
    const buf = Buffer.allocUnsafe(sizeHint + 1);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got <= sizeHint) {
      if (got > 0) await sink.push(buf.subarray(0, got));
      return await sink.finish();
    }
    // grew while reading: fall through to the general path from the start
    const chunker = new Chunker(polynomial);
    await chunkInto(sink, chunker, (async function* () {
      yield buf.subarray(0, got);
      let pos = got;
      for (;;) {
        const more = Buffer.allocUnsafe(READ_SIZE);
        const { bytesRead } = await fh.read(more, 0, READ_SIZE, pos);
        if (bytesRead === 0) return;
        pos += bytesRead;
        yield more.subarray(0, bytesRead);
      }
    })());
    return await sink.finish();
  }
  if (sizeHint >= RING_FILE && writer.sealPool()) {
    // Chunked in a worker: the main thread of a tree backup has the walk to do, and left to chunk
    // the big files itself, it kept the workers waiting (bench tree: ~0.5 s of both mostly idle).
    return saveThroughRing(writer, polynomial, async (buf, off, len) => (await fh.read(buf, off, len, null)).bytesRead, onBytes, true);
  }
  const chunker = new Chunker(polynomial);
  await chunkInto(sink, chunker, readHandle(fh));
  return await sink.finish();
}

/**
 * Files at least this large are read through a ring and sealed by the seal workers, as streams are
 * (smaller ones go to the workers whole, in batches: small-files.ts).
 */
const RING_FILE = MID_FILE;

/** A source of bytes: an async iterable (a Node stream) or a read function (a file descriptor). */
export type ByteSource = AsyncIterable<Uint8Array> | ReadFn;

/**
 * Saves a stream (stdin, a command's stdout). With the seal workers the stream is read into a ring
 * of shared memory and chunked in place (memory: the ring); without them, into fresh buffers
 * (memory: one read buffer + MAX_SIZE + chunks in flight).
 */
export async function saveStream(writer: BlobWriter, polynomial: bigint, input: ByteSource, onBytes?: BytesFn): Promise<SavedContent> {
  const read = typeof input === 'function' ? input : undefined;
  if (writer.sealPool()) return saveThroughRing(writer, polynomial, read ?? iterableRead(input as AsyncIterable<Uint8Array>), onBytes);
  const sink = new ContentSink(writer, onBytes);
  const chunker = new Chunker(polynomial);
  await chunkInto(sink, chunker, read ? readBuffers(read, READ_SIZE) : coalesce(input as AsyncIterable<Uint8Array>, READ_SIZE));
  return await sink.finish();
}

/**
 * Reads `read` to its end through a ring (chunk-ring.ts); the ring is reused once its chunks are
 * sealed. `cutInWorker`: a seal worker finds the boundaries, not the main thread (which a stream's
 * backup has nothing else for: there it would only add a round trip per read).
 */
async function saveThroughRing(writer: BlobWriter, polynomial: bigint, read: ReadFn, onBytes?: BytesFn, cutInWorker = false): Promise<SavedContent> {
  const ring = await acquireRing();
  const cutter = cutInWorker ? writer.sealPool()?.cutter(ring.sab, polynomial) : undefined;
  try {
    const sink = new ContentSink(writer, onBytes);
    await chunkIntoRing(ring, cutter ?? new Chunker(polynomial), read, (r, start, end) => sink.pushRegion(r, start, end));
    return await sink.finish();
  } finally {
    cutter?.close();
    // Chunks still being sealed keep their regions; the ring goes back once they are done.
    void ring.drain().then(() => releaseRing(ring));
  }
}

/** A read function over an async iterable: copies its pieces into the reader's buffer. */
function iterableRead(input: AsyncIterable<Uint8Array>): ReadFn {
  const it = input[Symbol.asyncIterator]();
  let piece: Uint8Array | undefined;
  let pos = 0;
  return async (buf, off, len) => {
    while (!piece || pos >= piece.length) {
      const r = await it.next();
      if (r.done) return 0;
      if (!(r.value instanceof Uint8Array)) throw new TypeError(`expected binary data, got ${typeof r.value}`);
      piece = r.value;
      pos = 0;
    }
    const n = Math.min(len, piece.length - pos);
    buf.set(piece.subarray(pos, pos + n), off);
    pos += n;
    return n;
  };
}

/** Reads a file descriptor (stdin redirected from a regular file) at its current position. */
export function fdRead(fd: number): ReadFn {
  return (buf, off, len) => readAt(fd, buf, off, len, null);
}

/**
 * Reads stdin when it is a pipe or socket with blocking reads on the thread pool (no 64 KiB stream
 * pieces to allocate, copy and collect), which block a thread only while the producer has nothing
 * to give. If the descriptor is non-blocking (EAGAIN), the rest is read through process.stdin.
 */
export function stdinRead(): ReadFn {
  let fallback: ReadFn | undefined;
  return async (buf, off, len) => {
    if (fallback) return fallback(buf, off, len);
    try {
      return await readAt(0, buf, off, len, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK') throw err;
      fallback = iterableRead(process.stdin);
      return fallback(buf, off, len);
    }
  };
}

/** Groups small stream reads (pipes give 64 KiB) into larger buffers; large pieces pass through. */
async function* coalesce(input: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Buffer> {
  let buf = Buffer.allocUnsafe(size);
  let used = 0;
  for await (const piece of input) {
    if (used === 0 && piece.length >= size) {
      yield Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.length);
      continue;
    }
    let off = 0;
    while (off < piece.length) {
      const n = Math.min(size - used, piece.length - off);
      buf.set(piece.subarray(off, off + n), used);
      used += n;
      off += n;
      if (used === size) {
        yield buf;
        buf = Buffer.allocUnsafe(size);
        used = 0;
      }
    }
  }
  if (used) yield buf.subarray(0, used);
}

/** Files below this size are read synchronously in one go (they are one chunk anyway). */
export const SMALL_FILE = 128 * 1024;

/**
 * Reads a small file with blocking calls (cheap on the main thread when the data is cached).
 * Reads up to sizeHint + 1 bytes and then to EOF, so a file that grew is still read whole.
 */
export function readSmallFile(path: string | Buffer, sizeHint: number): Buffer {
  return readWholeSync(path, Buffer.allocUnsafe(sizeHint + 1))!;
}

/** Saves an in-memory file: chunked like any other (one chunk below 512 KiB). */
export async function saveBuffer(writer: BlobWriter, data: Buffer, onBytes?: BytesFn, polynomial?: bigint): Promise<SavedContent> {
  const sink = new ContentSink(writer, onBytes);
  if (data.length >= MIN_SIZE) {
    if (polynomial === undefined) throw new Error('saveBuffer: polynomial needed for data >= MIN_SIZE');
    await chunkInto(sink, new Chunker(polynomial), (async function* () { yield data; })());
  } else if (data.length > 0) await sink.push(data);
  return await sink.finish();
}
