// The data phase of a restore for one read region of a pack, done synchronously: verify and decode
// each blob (MAC, decryption, decompression, size, SHA-256), then write it where the snapshot needs
// it. A blob that is a whole file creates that file and sets its metadata; a part of a larger file is
// written at its offset into the file the restorer created beforehand.
//
// It runs in a worker thread (restore-worker.ts), so a restore of many small files makes no thread-pool
// round trip per file operation and the main thread only walks trees and reads packs; where no worker
// can run, the restorer calls it on the main thread. Nothing here touches a file that is not a target.
import { closeSync, constants as fsc, ftruncateSync, openSync, rmSync, writeSync } from 'node:fs';
import type { MasterKey } from '../repository/crypto.js';
import { applyFileMetaFd, type FileMeta } from './fsmeta.js';

export interface RegionTarget {
  /** The file's path (bytes: names need not be UTF-8). */
  path: Uint8Array;
  /** Where the blob goes in the file. */
  offset: number;
  /** Set when the blob is the whole file: create it and restore this metadata. */
  whole?: { meta?: FileMeta };
}

export interface RegionBlob {
  id: string;
  /** Where the blob's ciphertext starts in the region, and its length. */
  at: number;
  length: number;
  uncompressedLength: number;
  targets: RegionTarget[];
}

export interface RegionJob {
  packId: string;
  /**
   * The region's bytes: an ArrayBuffer of its own (transferred to the worker), or the restorer's
   * shared read ring, where the region is [base, base + size). Either way the job may overwrite them
   * (blobs are decrypted in place).
   */
  buf: ArrayBuffer | SharedArrayBuffer;
  base?: number;
  size?: number;
  blobs: RegionBlob[];
  /** Restore owners (running as root). */
  owner: boolean;
}

export interface RegionResult {
  /** Blobs that failed verification: nothing was written for them. */
  damaged: { blob: number; message: string }[];
  /** Whole files whose metadata could not be set (the file itself is complete). */
  metaErrors: { blob: number; target: number; code?: string; message: string }[];
  /** A write that failed (target full, read-only...): the job stopped there. */
  fatal?: { blob: number; target: number; code?: string; message: string };
  /** Blobs handled (all of them unless `fatal`, which is at blob `done`). */
  done: number;
  bytes: number;
}

export interface RegionOps {
  /** Checks the MAC and decrypts; may decrypt in place (the region is the job's to overwrite). */
  open(key: MasterKey, data: Buffer, what: string): Buffer;
  /** May return a buffer it reuses: the bytes are written before the next call. */
  decompress(data: Uint8Array, what: string): Buffer | Promise<Buffer>;
  sha256hex(data: Uint8Array): string;
}

function errInfo(err: unknown): { code?: string; message: string } {
  const e = err as NodeJS.ErrnoException;
  return { code: e?.code, message: e?.message ?? String(err) };
}

/**
 * Creates `p` holding `data` without following or reusing what is there: exclusive create, and only if
 * something exists (a re-restore) remove it and create again. The common case is one open. `mode`
 * is what it is created with (less the umask); the descriptor may write whatever the mode says.
 */
export function createWhole(p: Buffer, data: Uint8Array, written?: (fd: number) => void, mode = 0o600): void {
  let fd: number;
  try {
    fd = openSync(p, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    rmSync(p, { force: true, recursive: true });
    fd = openSync(p, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, mode);
  }
  try {
    writeAll(fd, data, 0);
  } catch (err) {
    closeSync(fd);
    rmSync(p, { force: true });
    throw err;
  }
  try {
    written?.(fd);
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done);
}

/** Creates (or replaces) a file of `size` bytes that parts are written into later. */
export function createSized(p: Buffer, size: number): void {
  rmSync(p, { force: true, recursive: true });
  const fd = openSync(p, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  try {
    if (size > 0) ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
}

function regionBytes(job: { buf: ArrayBuffer | SharedArrayBuffer; base?: number; size?: number }): Buffer {
  const base = job.base ?? 0;
  return Buffer.from(job.buf, base, job.size ?? job.buf.byteLength - base);
}

export async function restoreRegion(key: MasterKey, job: RegionJob, ops: RegionOps): Promise<RegionResult> {
  const buf = regionBytes(job);
  const res: RegionResult = { damaged: [], metaErrors: [], done: 0, bytes: 0 };
  for (let i = 0; i < job.blobs.length; i++) {
    const b = job.blobs[i]!;
    const what = `data blob ${b.id.slice(0, 10)} in pack ${job.packId.slice(0, 10)}`;
    let plain: Buffer;
    try {
      plain = ops.open(key, buf.subarray(b.at, b.at + b.length), what);
      if (b.uncompressedLength) {
        plain = await ops.decompress(plain, what);
        if (plain.length !== b.uncompressedLength) throw new Error(`${what}: decompressed size ${plain.length} != ${b.uncompressedLength}`);
      }
      if (ops.sha256hex(plain) !== b.id) throw new Error(`${what}: content does not match its ID`);
    } catch (err) {
      res.damaged.push({ blob: i, message: (err as Error).message });
      res.done = i + 1;
      continue;
    }
    for (let t = 0; t < b.targets.length; t++) {
      const target = b.targets[t]!;
      const p = Buffer.from(target.path.buffer, target.path.byteOffset, target.path.length);
      const meta = target.whole?.meta;
      let metaErr: unknown;
      try {
        if (target.whole) {
          // Metadata through the descriptor, before it is closed: a failure there is not a failed write.
          // Created with its final permission bits (setuid, setgid and sticky come with the chmod,
          // after any chown), so that usually no chmod is needed. While it is written it sits in a
          // directory the restore made 0700 (directories get their modes last), or in one the
          // user restores into, where it gets these permissions a moment later anyway.
          createWhole(
            p,
            plain,
            (fd) => {
              if (!meta) return;
              try {
                applyFileMetaFd(fd, p, meta, job.owner, true);
              } catch (err) {
                metaErr = err;
              }
            },
            meta ? meta.mode & 0o777 : 0o600,
          );
        } else {
          const fd = openSync(p, fsc.O_WRONLY);
          try {
            writeAll(fd, plain, target.offset);
          } finally {
            closeSync(fd);
          }
        }
      } catch (err) {
        res.fatal = { blob: i, target: t, ...errInfo(err) };
        res.done = i;
        return res;
      }
      res.bytes += plain.length;
      if (metaErr !== undefined) res.metaErrors.push({ blob: i, target: t, ...errInfo(metaErr) });
    }
    res.done = i + 1;
  }
  return res;
}

/** A blob of a dump's run: where its ciphertext is in the region, and its plaintext length. */
export interface DecodeBlob {
  id: string;
  at: number;
  length: number;
  /** Set when the blob is compressed (as in the index). */
  uncompressedLength: number;
  plain: number;
}

/**
 * A run of consecutive blobs of one file (restore-stream): decoded in order into the output ring at
 * [outBase, outBase + sum of plain), where the writer takes them from.
 */
export interface DecodeJob {
  packId: string;
  buf: SharedArrayBuffer;
  base: number;
  size: number;
  blobs: DecodeBlob[];
  out: SharedArrayBuffer;
  outBase: number;
}

export interface DecodeResult {
  /** The first blob that failed verification (the output after it is not written). */
  damaged?: { blob: number; message: string };
}

export interface DecodeOps {
  open(key: MasterKey, data: Buffer, what: string): Buffer;
  decompressInto(dst: Buffer, data: Uint8Array, what: string): Promise<void>;
  sha256hex(data: Uint8Array): string;
}

/** Verifies and decodes a run's blobs into the output ring: MAC, decryption, decompression, size, SHA-256. */
export async function decodeRegion(key: MasterKey, job: DecodeJob, ops: DecodeOps): Promise<DecodeResult> {
  const buf = regionBytes(job);
  let pos = job.outBase;
  for (let i = 0; i < job.blobs.length; i++) {
    const b = job.blobs[i]!;
    const what = `data blob ${b.id.slice(0, 10)} in pack ${job.packId.slice(0, 10)}`;
    const dst = Buffer.from(job.out, pos, b.plain);
    try {
      const plain = ops.open(key, buf.subarray(b.at, b.at + b.length), what);
      if (b.uncompressedLength) await ops.decompressInto(dst, plain, what);
      else if (plain.length !== b.plain) throw new Error(`${what}: ${plain.length} bytes where the index says ${b.plain}`);
      else dst.set(plain);
      if (ops.sha256hex(dst) !== b.id) throw new Error(`${what}: content does not match its ID`);
    } catch (err) {
      return { damaged: { blob: i, message: (err as Error).message } };
    }
    pos += b.plain;
  }
  return {};
}
