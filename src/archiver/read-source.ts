// Opening and reading a source file for a backup, with blocking calls: on the main thread for small
// files (archiver.ts, file-saver.ts) and in the seal workers for batches of them (seal-worker.ts).
// Nothing here may import more than node:fs: the workers load it.
import { openSync, readSync, closeSync, fstatSync, constants as fsc } from 'node:fs';

/**
 * Files below this size are read, chunked and hashed whole by the seal workers, in batches; larger
 * ones are read a piece at a time (through a ring of shared memory or on the main thread).
 */
export const MID_FILE = 4 * 1024 * 1024;

const OPEN_FLAGS = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;

/**
 * Opens a file to back it up: without following a symlink put in its place, without blocking on a
 * FIFO put there (refused: not a regular file), and without touching its access time where the
 * kernel allows: O_NOATIME needs the file's owner or CAP_FOWNER, anyone else gets EPERM and the
 * file is opened without it.
 */
function openSourceSync(path: string | Uint8Array): number {
  let fd: number;
  try {
    fd = openSync(path as Buffer, OPEN_FLAGS | (fsc.O_NOATIME ?? 0));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM' || !fsc.O_NOATIME) throw err;
    fd = openSync(path as Buffer, OPEN_FLAGS);
  }
  try {
    if (!fstatSync(fd).isFile()) throw Object.assign(new Error('not a regular file any more'), { code: 'ENOTREG' });
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return fd;
}

/**
 * Reads a whole file into `into` (room for its expected size and one byte more, to see growth), or
 * into a larger buffer of its own when it has grown. Returns its content, or undefined once it
 * reaches `limit` bytes (the caller then reads it another way).
 */
export function readWholeSync(path: string | Uint8Array, into: Buffer, limit = Infinity): Buffer | undefined {
  const fd = openSourceSync(path);
  try {
    let buf = into;
    let got = 0;
    for (;;) {
      if (got === buf.length) {
        if (got >= limit) return undefined;
        const bigger = Buffer.allocUnsafe(Math.min(Math.max(buf.length * 2, 4096), limit));
        buf.copy(bigger, 0, 0, got);
        buf = bigger;
      }
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
    }
    return got >= limit ? undefined : buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}
