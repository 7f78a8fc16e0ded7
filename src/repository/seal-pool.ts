// The main thread's side of the seal workers (seal-worker.ts): large chunks (streams, big files)
// are hashed, compressed and encrypted there, so the main thread only chunks and writes packs.
//
// Why workers and not the thread pool: through WebCrypto and @mongodb-js/zstd each large blob cost
// four copies and four fresh native buffers (digest input, compressed output, cipher input and
// output) plus a new zstd context per call. At stream speed that garbage was a quarter of the main
// thread's time in collections, and the pool threads' malloc arenas grew with the stream's length.
// A worker keeps one zstd context for good; a chunk comes as a region of shared memory (a stream's
// ring, archiver/chunk-ring.ts), and the sealed blob is written into this pool's output ring,
// where the pack writer writes it out from.
import { Worker } from 'node:worker_threads';
import { MasterKey, OVERHEAD, masterKeyData } from './crypto.js';
import { sealBound, smallBlobZstd } from './compression.js';
import { WarmSlot, workerCount } from '../core/worker-pool.js';
import { SharedRing } from '../core/shared-ring.js';
import type { ReadFailure, SealReply, SealRequest } from './seal-worker.js';

export interface Sealed {
  /** A region of the pool's output ring: read it until calling `written`, not after. */
  sealed: Buffer;
  /** Plaintext length when compressed, 0 when stored as is. */
  ulen: number;
  /** Gives the region back. */
  written: () => void;
}

/** Output ring: room for the largest sealed chunk (sealBound(MAX_SIZE)) and the blobs waiting to be written. */
const OUT_RING = 10 * 1024 * 1024;

export { sealBound };

/** A chunk hashed in a worker and kept there until it is sealed or dropped. */
export interface HashedChunk {
  id: string;
  /** Compresses (level 0: not) and encrypts the chunk. */
  seal(level: number): Promise<Sealed>;
  /** Forgets the chunk (a duplicate). */
  drop(): void;
}

/** The sealed blobs of a batch, back to back in a region of the pool's output ring. */
export interface SealedBatch {
  buf: Buffer;
  lens: number[];
  ulens: number[];
  /** Gives the region back: call it once every blob in it is written (or abandoned). */
  written: () => void;
}

/**
 * A batch of files read, chunked and hashed by one worker, which keeps their chunks until they are
 * sealed or dropped.
 */
export interface FileBatch {
  /** Per chunk, in file order: its ID. */
  ids: string[];
  /** Per chunk: its length. */
  clens: number[];
  /** Per file: how many of the chunks are its content (0 for an empty file or one not read). */
  counts: number[];
  /** Per file: the content's length; -1 when not read (see errors). */
  lens: number[];
  /** Per file: why it could not be read; null for one read, or one not read because it has grown past its batch's limit. */
  errors: (ReadFailure | null)[];
  /**
   * Compresses (level 0: not; `asIs`: not what looks compressed already) and encrypts the chunks
   * marked in `keep`: their sealed blobs back to back in `buf`, in chunk order.
   */
  seal(keep: Uint8Array, level: number, asIs: boolean): Promise<SealedBatch>;
  /** Forgets the chunks (nothing to store). */
  drop(): void;
}

interface Slot {
  worker: Worker;
  /** Requests awaiting an answer. */
  waiting: Map<number, { resolve: (m: SealReply) => void; reject: (e: Error) => void }>;
  /** Chunk bytes the worker holds (hashed and not yet sealed or dropped). */
  bytes: number;
}

export class SealPool {
  private readonly slots: Slot[] = [];
  private seq = 1;
  private readonly out = new SharedRing(OUT_RING);
  private broken: Error | undefined;
  private closed = false;

  private constructor(key: MasterKey, size: number) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(new URL('./seal-worker.js', import.meta.url), {
        workerData: { key: masterKeyData(key), out: this.out.sab },
        resourceLimits: { maxYoungGenerationSizeMb: 4 },
      });
      const slot: Slot = { worker, waiting: new Map(), bytes: 0 };
      worker.unref();
      worker.on('message', (m: SealReply) => {
        const w = slot.waiting.get(m.seq);
        if (!w) return;
        slot.waiting.delete(m.seq);
        // (not once closing: the worker stays referenced until it has exited, see close())
        if (!slot.waiting.size && !this.closed) worker.unref();
        w.resolve(m);
      });
      const fail = (err: Error) => {
        if (this.closed) return;
        this.broken ??= err;
        for (const w of slot.waiting.values()) w.reject(err);
        slot.waiting.clear();
      };
      worker.on('error', fail);
      worker.on('exit', (code) => fail(new Error(`seal worker exited (code ${code})`)));
      this.slots.push(slot);
    }
  }

  /** A pool for this key, or undefined where the synchronous zstd binding did not build. */
  static create(key: MasterKey, size = workerCount(4)): SealPool | undefined {
    if (smallBlobZstd() !== 'zstd-napi') return undefined;
    return warm.take([key, size]) ?? new SealPool(key, size);
  }

  /**
   * Starts the workers of the next create(key) now (see WarmSlot): a backup calls this while it
   * waits for the repository, so its first blobs do not wait for the workers. A pool nobody takes
   * within `unusedMs` is stopped; so is the previous one. Returns the pool create(key) will hand out.
   */
  static prestart(key: MasterKey, unusedMs = 30_000): SealPool | undefined {
    if (smallBlobZstd() !== 'zstd-napi') return undefined;
    const size = workerCount(4);
    return warm.put([key, size], new SealPool(key, size), unusedMs);
  }

  /** Stops the workers prestart() started if no create() took them. */
  static discardWarm(): void {
    warm.discard();
  }

  private request(slot: Slot, req: SealRequest): Promise<SealReply> {
    if (this.broken) return Promise.reject(this.broken);
    return new Promise<SealReply>((resolve, reject) => {
      if (!slot.waiting.size) slot.worker.ref();
      slot.waiting.set(req.seq, { resolve, reject });
      slot.worker.postMessage(req);
    }).then((m) => {
      if (m.op === 'error') throw new Error(m.message);
      return m;
    });
  }

  /**
   * Hands bytes [off, off+len) of shared memory to the least loaded worker, which hashes them in
   * place, and resolves with their ID. The bytes must not change until `done` is called (once the
   * worker has sealed or dropped them, or failed).
   */
  async hashShared(buf: SharedArrayBuffer, off: number, len: number, done: () => void): Promise<HashedChunk> {
    const slot = this.pick();
    const seq = this.seq++;
    const release = this.holdOn(slot, len, done);
    let m: SealReply;
    try {
      m = await this.request(slot, { op: 'hash', seq, buf, off, len });
    } catch (err) {
      release();
      throw err;
    }
    return {
      id: (m as { id: string }).id,
      seal: async (level: number) => {
        const room = sealBound(len);
        const { at, reply } = await this.sealIntoRing<{ len: number; ulen: number }>(slot, room, (outOff) => ({ op: 'seal', seq, level, outOff, room }), release);
        return { sealed: this.out.bytes.subarray(at, at + reply.len), ulen: reply.ulen, written: () => this.out.release(at) };
      },
      drop: this.dropper(slot, seq, release),
    };
  }

  /** Counts `bytes` as held by `slot`'s worker until the returned function is called (once; it then calls `done`). */
  private holdOn(slot: Slot, bytes: number, done?: () => void): () => void {
    slot.bytes += bytes;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      slot.bytes -= bytes;
      done?.();
    };
  }

  /**
   * Takes `room` bytes of the output ring and has the worker seal into them (`ask` builds the
   * request for the region's offset); the region goes back on failure, the worker's hold in any case.
   */
  private async sealIntoRing<R>(slot: Slot, room: number, ask: (outOff: number) => SealRequest, release: () => void): Promise<{ at: number; reply: R }> {
    let outOff = -1;
    try {
      outOff = await this.out.take(room);
      const reply = (await this.request(slot, ask(outOff))) as R;
      return { at: outOff, reply };
    } catch (err) {
      if (outOff >= 0) this.out.release(outOff);
      throw err;
    } finally {
      release();
    }
  }

  /** Forgets what the worker holds under `seq` (a duplicate, or nothing to store). */
  private dropper(slot: Slot, seq: number, release: () => void): () => void {
    return () => {
      // The worker handles messages in order: once it reads this, it no longer reads the data,
      // and nothing sent after it can be overtaken by an earlier read.
      if (!this.broken) slot.worker.postMessage({ op: 'drop', seq } satisfies SealRequest);
      release();
    };
  }

  /** The least loaded worker. */
  private pick(): Slot {
    let slot = this.slots[0];
    for (const s of this.slots) if (s.bytes < slot.bytes) slot = s;
    return slot;
  }

  /** False once close() was called. */
  get isOpen(): boolean {
    return !this.closed;
  }

  /** Number of workers. */
  get size(): number {
    return this.slots.length;
  }

  /**
   * Has the least loaded worker read, chunk (with `polynomial`) and hash the files at `paths`
   * (expected sizes `sizes`, each under MID_FILE). The chunks stay in the worker until the batch is
   * sealed or dropped.
   */
  async readFiles(paths: Buffer[], sizes: number[], polynomial: bigint): Promise<FileBatch> {
    const slot = this.pick();
    const seq = this.seq++;
    const release = this.holdOn(slot, sizes.reduce((n, s) => n + s, 0));
    const joined = Buffer.allocUnsafe(paths.reduce((n, p) => n + p.length + 1, 0));
    let at = 0;
    for (const p of paths) {
      at += p.copy(joined, at);
      joined[at++] = 0;
    }
    let m: SealReply;
    try {
      m = await this.request(slot, { op: 'read', seq, paths: joined, sizes, poly: polynomial });
    } catch (err) {
      release();
      throw err;
    }
    const r = m as Extract<SealReply, { op: 'read' }>;
    return {
      ids: r.ids,
      clens: r.clens,
      counts: r.counts,
      lens: r.lens,
      errors: r.errors,
      seal: async (keep, level, asIs) => {
        let room = 0;
        for (let i = 0; i < keep.length; i++) if (keep[i]) room += sealBound(r.clens[i]);
        const { at, reply } = await this.sealIntoRing<Extract<SealReply, { op: 'sealedmany' }>>(slot, room, (outOff) => ({ op: 'sealmany', seq, keep, level, asIs, outOff, room }), release);
        const len = reply.lens.reduce((n, l) => n + l, 0);
        return { buf: this.out.bytes.subarray(at, at + len), lens: reply.lens, ulens: reply.ulens, written: () => this.out.release(at) };
      },
      drop: this.dropper(slot, seq, release),
    };
  }

  /**
   * A chunker in one of the workers (in turn) for a stream read into `sab`: cuts(start, end) finds
   * the boundaries in [start, end), continuing the chunk begun by the previous call. close() once
   * the stream is read.
   */
  cutter(sab: SharedArrayBuffer, polynomial: bigint): { cuts(start: number, end: number): Promise<number[]>; close(): void } {
    const slot = this.slots[this.nextCutter++ % this.slots.length];
    const sid = this.seq++;
    return {
      cuts: async (start, end) => {
        const m = await this.request(slot, { op: 'cut', seq: this.seq++, sid, buf: sab, start, end, poly: polynomial });
        return (m as Extract<SealReply, { op: 'cuts' }>).cuts;
      },
      close: () => {
        if (!this.broken) slot.worker.postMessage({ op: 'endcut', seq: 0, sid } satisfies SealRequest);
      },
    };
  }
  private nextCutter = 0;

  /** The SHA-256 (hex) of the first `size` bytes of a file, computed by the least loaded worker. */
  async hashFile(path: string, size: number): Promise<string> {
    const m = await this.request(this.pick(), { op: 'hashfile', seq: this.seq++, path, size });
    return (m as Extract<SealReply, { op: 'hashedfile' }>).id;
  }

  /** Chunk bytes held by the workers. */
  get heldBytes(): number {
    let n = 0;
    for (const s of this.slots) n += s.bytes;
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.broken ??= new Error('seal pool closed');
    // Referenced until they have exited: terminate() of an unreferenced worker does not keep the
    // event loop alive, so a caller awaiting it (restore-stream's clean-up after a failed write)
    // could find nothing left to run and the process end half way, with status 0.
    await Promise.all(
      this.slots.map((s) => {
        s.worker.ref();
        return s.worker.terminate();
      }),
    );
    for (const s of this.slots) {
      for (const w of s.waiting.values()) w.reject(this.broken);
      s.waiting.clear();
    }
  }
}

/** Workers started ahead of their first use (SealPool.prestart). */
const warm = new WarmSlot<SealPool>();
