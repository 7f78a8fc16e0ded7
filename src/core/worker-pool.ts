// A small pool of worker threads running one module, one job per worker at a time.
//
// For CPU work that is many small native calls (decrypting, decompressing and hashing thousands
// of blobs): on the main thread each call's promise and callback machinery costs more than the
// work, and on libuv's thread pool every call is a round trip. A worker does a whole job (a pack)
// synchronously, and the pool spreads jobs over the cores. Buffers are transferred, not copied.
//
// The worker module answers each message {job, req} with {job, ok: true, res} or {job, ok: false,
// message}; see serveJobs below. Idle workers do not keep the process alive.
import { Worker, parentPort, workerData, type ResourceLimits } from 'node:worker_threads';
import os from 'node:os';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: Pending | undefined;
  job: number;
}

type Reply = { job: number; ok: true; res: unknown } | { job: number; ok: false; message: string };

/**
 * The memory to hand a worker for `data`: its own ArrayBuffer when the Buffer spans all of it
 * (`moved`: unusable here afterwards), else a copy (a Buffer sharing Node's pool or a larger read).
 */
export function transferable(data: Buffer): { buf: ArrayBuffer; moved: boolean } {
  const moved = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer;
  return { buf: moved ? (data.buffer as ArrayBuffer) : new Uint8Array(data).buffer, moved };
}

/** Workers for CPU-bound jobs: one per core, at least 2, at most `max`. */
export function workerCount(max = 4): number {
  return Math.max(2, Math.min(max, os.availableParallelism()));
}

/**
 * One pool of worker threads started ahead of its first use. A worker takes ~60 ms to be ready (a
 * Node environment, its modules, native bindings); an operation that knows it will need workers
 * starts them while it still waits for the repository (the lock written and checked, the index
 * listed) and its first jobs do not wait. The pool is handed out once, and only to a caller asking
 * with the same key (the master key object, the pool's size); one nobody takes within `unusedMs`
 * is stopped, and so is the one a new put() replaces.
 */
export class WarmSlot<P extends { close(): Promise<void> }> {
  private held: { key: readonly unknown[]; pool: P; timer: NodeJS.Timeout } | undefined;

  put(key: readonly unknown[], pool: P, unusedMs: number): P {
    this.discard();
    const timer = setTimeout(() => {
      if (this.held?.pool === pool) this.discard();
    }, unusedMs);
    timer.unref();
    this.held = { key, pool, timer };
    return pool;
  }

  /** The pool put with this key (compared element by element with ===), once. */
  take(key: readonly unknown[]): P | undefined {
    const h = this.held;
    if (!h || h.key.length !== key.length || h.key.some((k, i) => k !== key[i])) return undefined;
    this.held = undefined;
    clearTimeout(h.timer);
    return h.pool;
  }

  /** Stops the pool if nobody took it. */
  discard(): void {
    const h = this.held;
    this.held = undefined;
    if (!h) return;
    clearTimeout(h.timer);
    void h.pool.close();
  }
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: { req: unknown; transfer: ArrayBuffer[]; p: Pending }[] = [];
  private nextJob = 1;
  private broken: Error | undefined;
  private closing = false;

  constructor(file: URL, size: number, data?: unknown, resourceLimits?: ResourceLimits) {
    for (let i = 0; i < size; i++) {
      const slot: Slot = { worker: new Worker(file, { workerData: data, resourceLimits }), busy: undefined, job: 0 };
      slot.worker.unref();
      slot.worker.on('message', (m: Reply) => this.onReply(slot, m));
      const fail = (err: Error) => {
        this.broken ??= err;
        const p = slot.busy;
        slot.busy = undefined;
        p?.reject(err);
        for (const q of this.queue.splice(0)) q.p.reject(err);
      };
      slot.worker.on('error', fail);
      slot.worker.on('exit', (code) => fail(new Error(`worker thread exited (code ${code})`)));
      this.slots.push(slot);
    }
  }

  /** Number of worker threads. */
  get size(): number {
    return this.slots.length;
  }

  /** Runs one job; `transfer` lists buffers handed over to the worker (unusable here afterwards). */
  run<T>(req: unknown, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.broken) return Promise.reject(this.broken);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ req, transfer, p: { resolve: resolve as (v: unknown) => void, reject } });
      this.dispatch();
    });
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.busy) continue;
      const next = this.queue.shift();
      if (!next) return;
      slot.busy = next.p;
      slot.job = this.nextJob++;
      slot.worker.ref();
      slot.worker.postMessage({ job: slot.job, req: next.req }, next.transfer);
    }
  }

  private onReply(slot: Slot, m: Reply): void {
    if (m.job !== slot.job || !slot.busy) return;
    const p = slot.busy;
    slot.busy = undefined;
    // (not once closing: the worker stays referenced until it has exited, see close())
    if (!this.closing) slot.worker.unref();
    if (m.ok) p.resolve(m.res);
    else p.reject(new Error(m.message));
    this.dispatch();
  }

  /** Stops the workers (jobs in flight are rejected). */
  async close(): Promise<void> {
    this.closing = true;
    this.broken ??= new Error('worker pool closed');
    // Referenced until they have exited: terminate() of an unreferenced worker does not keep the
    // event loop alive, so a caller awaiting it (restore-stream's clean-up after a failed write)
    // could find nothing left to run and the process end half way, with status 0.
    await Promise.all(
      this.slots.map((s) => {
        s.worker.ref();
        return s.worker.terminate();
      }),
    );
  }
}

/**
 * In a worker module: answers the pool's jobs with `handle` (sync or async), one at a time.
 * `afterEach` runs once a job's answer is sent and nothing refers to the job any more.
 */
export function serveJobs<Req, Res>(handle: (req: Req, data: unknown) => Res | Promise<Res>, afterEach?: () => void): void {
  const port = parentPort;
  if (!port) throw new Error('this module runs as a worker thread');
  port.on('message', async (m: { job: number; req: Req }) => {
    try {
      port.postMessage({ job: m.job, ok: true, res: await handle(m.req, workerData) });
    } catch (err) {
      port.postMessage({ job: m.job, ok: false, message: err instanceof Error ? err.message : String(err) });
    }
    if (afterEach) setImmediate(afterEach);
  });
}
