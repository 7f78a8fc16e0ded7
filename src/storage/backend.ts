// The one storage interface. A Backend stores named, immutable files by type, in restic's layout.
// Providers (local, s3, azure, gcs, rest) implement it and map their errors onto StorageError kinds;
// retries, timeouts and concurrency limits wrap it (storage/retry.ts), providers don't reinvent them.

export const FILE_TYPES = ['config', 'keys', 'locks', 'snapshots', 'index', 'data'] as const;
export type FileType = (typeof FILE_TYPES)[number];

export interface FileInfo {
  /** File name: 64 lowercase hex chars (or 'config' for the config file). */
  name: string;
  size: number;
}

export interface Backend {
  /** Where this backend points, for messages; never contains secrets. */
  readonly location: string;
  /** How many requests it is sensible to run at once against this backend. */
  readonly connections: number;

  /** Creates the repository layout (directories, bucket prefix). Idempotent. */
  create(): Promise<void>;

  /**
   * Stores a file atomically: nothing is visible under the final name until all bytes are written.
   * Never overwrites: an existing name fails with StorageError kind 'already-exists'.
   * For type 'config' the name is ignored.
   */
  save(type: FileType, name: string, data: Uint8Array): Promise<void>;

  /**
   * Reads a file, or `length` bytes from `offset` when given (length 0 / undefined: to the end).
   * A missing file fails with kind 'not-found'; a short read (file smaller than offset+length) fails
   * with kind 'other' naming the file, never returns fewer bytes silently.
   */
  load(type: FileType, name: string, offset?: number, length?: number): Promise<Buffer>;

  /**
   * Optional: `load` of `dest.length` bytes from `offset` into a buffer the caller owns (check reads
   * whole packs into a few reused shared buffers instead of a new one per pack). Same errors as load.
   */
  loadInto?(type: FileType, name: string, offset: number, dest: Buffer): Promise<void>;

  /** Size of a file; kind 'not-found' if it does not exist. */
  stat(type: FileType, name: string): Promise<FileInfo>;

  /** Every file of a type (any order). Names that are not valid restic IDs are skipped. */
  list(type: FileType): AsyncIterable<FileInfo>;

  /** Removes a file. Removing a missing file is not an error. */
  remove(type: FileType, name: string): Promise<void>;

  /** Releases connections, handles. */
  close(): Promise<void>;
}

export const ID_RE = /^[0-9a-f]{64}$/;

/** Collects a listing into an array. */
export async function listAll(be: Backend, type: FileType): Promise<FileInfo[]> {
  const out: FileInfo[] = [];
  for await (const fi of be.list(type)) out.push(fi);
  return out;
}

/** True when the backend holds a repository (a config file exists). */
export async function hasConfig(be: Backend): Promise<boolean> {
  try {
    await be.stat('config', 'config');
    return true;
  } catch (err) {
    const { isNotFound } = await import('../core/errors.js');
    if (isNotFound(err)) return false;
    throw err;
  }
}

/**
 * Optional capability of backends on a local filesystem: the pack writer appends blobs to a temp
 * file in `spoolDir()` and hands the finished file over with `adoptFile`, so packs never sit in
 * memory. The temp file must be on the same filesystem as the final location.
 */
export interface SpoolingBackend {
  spoolDir(): string;
  /** Makes `tmpPath` the stored file type/name (atomic, never overwriting) and removes tmpPath. */
  adoptFile(type: FileType, name: string, tmpPath: string): Promise<void>;
  /** The error to report for a failed write of a spooled pack (a full disk is a storage error, not a crash). */
  spoolError(err: unknown): Error;
}

/** The spooling capability of a backend (looking through wrappers that expose `inner`), if any. */
export function spoolingOf(be: Backend): SpoolingBackend | undefined {
  let cur: unknown = be;
  for (let i = 0; i < 4 && cur; i++) {
    const c = cur as Partial<SpoolingBackend> & { inner?: unknown };
    if (typeof c.spoolDir === 'function' && typeof c.adoptFile === 'function') return c as SpoolingBackend;
    cur = c.inner;
  }
  return undefined;
}
