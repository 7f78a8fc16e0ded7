// The small and mid-sized files of a tree backup (under MID_FILE, 4 MiB: nearly every file of a
// typical tree) go to the seal workers in batches. A worker opens and reads every file of a batch,
// chunks the ones of MIN_SIZE or more (the others are one blob each) and hashes the chunks; the main
// thread checks the IDs against the index and claims the new ones; the worker then compresses and
// encrypts those into one buffer, which the pack writer takes as it is. The main thread is left
// with the walk (readdir, lstat, xattrs), the trees and the packs.
//
// Why batches: one message per file cost the main thread more than the file's own work (measured in
// session 5); a batch of up to BATCH_FILES files or BATCH_BYTES bytes costs four messages. Why not
// wait for full batches: a batch goes out as soon as the main thread has nothing else to do and a
// worker is free, so the workers are never idle while files wait.
import { DmctlError } from '../core/errors.js';
import type { SealPool } from '../repository/seal-pool.js';
import type { BlobWriter } from '../repository/repository.js';
import type { SavedContent } from './file-saver.js';

const BATCH_FILES = 256;
const BATCH_BYTES = 1024 * 1024;

/** A file of a batch that could not be read: the archiver warns and leaves it out (restic does the same). */
export class FileReadError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'FileReadError';
  }
}

/** What became of a file: its content, or 'big' (it has grown past its batch's limit: read it another way). */
export type SmallResult = SavedContent | 'big';

interface Batch {
  paths: Buffer[];
  sizes: number[];
  bytes: number;
  settle: { resolve: (r: SmallResult) => void; reject: (e: unknown) => void }[];
}

export class SmallFiles {
  private open: Batch | undefined;
  private inFlight = 0;
  private waiting: (() => void)[] = [];
  private readonly maxInFlight: number;
  /** The first failure that is not one file's (a worker, the repository): every later add throws it. */
  private failure: unknown;

  constructor(
    private readonly pool: SealPool,
    private readonly writer: BlobWriter,
    private readonly polynomial: bigint,
  ) {
    // Two batches per worker: one being read while the other is sealed.
    this.maxInFlight = 2 * pool.size;
  }

  /**
   * Waits until there is room, then adds a file to the open batch. Resolves with its outcome boxed,
   * so that awaiting add() does not wait for it. The outcome rejects with a FileReadError when the
   * file could not be read, with anything else when the backup cannot go on.
   */
  async add(path: Buffer, size: number): Promise<{ outcome: Promise<SmallResult> }> {
    while (this.inFlight >= this.maxInFlight && !this.failure) await new Promise<void>((r) => this.waiting.push(r));
    if (this.failure) throw this.failure;
    let b = this.open;
    if (!b) {
      const fresh: Batch = (b = this.open = { paths: [], sizes: [], bytes: 0, settle: [] });
      // Out as soon as the main thread has nothing else to do, when a worker is free; otherwise
      // when a batch comes back (send's finally).
      setImmediate(() => {
        if (this.open === fresh && this.inFlight < this.pool.size) this.send();
      });
    }
    const batch = b;
    const outcome = new Promise<SmallResult>((resolve, reject) => batch.settle.push({ resolve, reject }));
    batch.paths.push(path);
    batch.sizes.push(size);
    batch.bytes += size;
    if (batch.paths.length >= BATCH_FILES || batch.bytes >= BATCH_BYTES) this.send();
    return { outcome };
  }

  /** Sends the open batch now: its files' outcomes are about to be awaited. */
  flush(): void {
    if (this.open) this.send();
  }

  private send(): void {
    const b = this.open!;
    this.open = undefined;
    this.inFlight++;
    void this.process(b).finally(() => {
      this.inFlight--;
      if (this.open && this.inFlight < this.pool.size) this.send();
      const woken = this.waiting;
      this.waiting = [];
      for (const w of woken) w();
    });
  }

  private async process(b: Batch): Promise<void> {
    let settled = 0;
    try {
      const batch = await this.pool.readFiles(b.paths, b.sizes, this.polynomial);
      await this.writer.enqueueFileBatch(batch);
      let chunk = 0;
      for (; settled < b.settle.length; settled++) {
        const { resolve, reject } = b.settle[settled];
        const len = batch.lens[settled];
        const err = batch.errors[settled];
        const count = batch.counts[settled];
        const content = batch.ids.slice(chunk, chunk + count);
        chunk += count;
        if (len >= 0) resolve({ content, size: len });
        else if (err) reject(new FileReadError(err.message, err.code));
        else resolve('big');
      }
    } catch (err) {
      // A worker or the repository failed: the backup cannot go on (a DmctlError, so that the
      // archiver does not mistake it for one unreadable file).
      const fatal = err instanceof DmctlError ? err : new DmctlError('seal-worker', `backup stopped: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      this.failure ??= fatal;
      for (; settled < b.settle.length; settled++) b.settle[settled].reject(fatal);
    }
  }
}
