// zstd, as restic v2 uses it: one plain frame per blob or unpacked file, no checksum required.
//
// Two bindings. Small blobs (most of a tree of files: every file under 512 KiB is one blob) go
// through zstd-napi synchronously with one reused context per level: a thread-pool round trip
// through @mongodb-js/zstd cost the main thread ~100 µs per call in its completion and promise
// machinery (most of a tree backup's time), and a fresh context per call costs more than
// compressing a few KiB. Large blobs go to @mongodb-js/zstd on the libuv thread pool, so their
// compression overlaps hashing and encryption of the next ones. zstd-napi is an optional
// dependency built from source at install; without it everything goes the thread-pool way.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { IntegrityError } from '../core/errors.js';
import { OVERHEAD } from './crypto.js';

/**
 * Level for restic's "auto" mode. restic uses klauspost/compress's SpeedDefault, which matches
 * zstd's level 3 in ratio at a higher speed; zstd level 2 is the closer match in speed: measured
 * here it compresses 1.6x faster than level 3, stores the bench tree's small files 1.9% larger
 * and the bench SQL dump 3% smaller (1 MiB chunks).
 */
export const ZSTD_LEVEL = 2;

/** Level for "max" (restic: SpeedBestCompression, which its library likens to zstd level 11). */
export const ZSTD_LEVEL_MAX = 11;

/**
 * zstd parameters for a large blob (the seal workers, seal-worker.ts) compressed at `level`. In auto
 * mode large blobs (streams, parts of big files) get zstd's fastest strategy with a 64 Ki-entry hash
 * table: on the bench SQL dump (1.5 MiB chunks) 1.27x faster than level 2 for 0.3% more bytes, and
 * still 0.9% smaller than restic stores it. Plain level 1 (8 Ki entries) was 1.46x faster but 1.2%
 * larger, level 3 2x slower and larger.
 */
export function zstdParams(level: number): Record<string, number> {
  if (level === ZSTD_LEVEL) return { compressionLevel: 1, hashLog: 16 };
  return { compressionLevel: level };
}

/**
 * Signatures of formats that are compressed already: gzip, zstd, xz, bzip2, zip (also jar, docx,
 * apk), 7z, lz4 frames, PNG, JPEG, GIF, WebP. In "auto" mode a blob that starts with one is stored
 * uncompressed: zstd saves ~0.6% on them (the bench tree's 28,700 such files: 93.7 MB -> 93.1 MB)
 * for a fifth of a tree backup's compression time. restic reads uncompressed blobs in v2 repositories.
 */
const COMPRESSED_MAGIC: readonly (readonly number[])[] = [
  [0x1f, 0x8b, 0x08],
  [0x28, 0xb5, 0x2f, 0xfd],
  [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
  [0x42, 0x5a, 0x68],
  [0x50, 0x4b, 0x03, 0x04],
  [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c],
  [0x04, 0x22, 0x4d, 0x18],
  [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
  [0xff, 0xd8, 0xff],
  [0x47, 0x49, 0x46, 0x38],
];

/** True when the data starts like a compressed format (see COMPRESSED_MAGIC) or is a WebP image. */
export function looksCompressed(data: Uint8Array): boolean {
  if (data.length < 16) return false;
  for (const m of COMPRESSED_MAGIC) {
    let i = 0;
    while (i < m.length && data[i] === m[i]) i++;
    if (i === m.length) return true;
  }
  // RIFF....WEBP
  return data[0] === 0x52 && data[1] === 0x49 && data[2] === 0x46 && data[3] === 0x46 && data[8] === 0x57 && data[9] === 0x45 && data[10] === 0x42 && data[11] === 0x50;
}

/** Room a sealed blob of `len` plaintext bytes may need: zstd's worst case (ZSTD_COMPRESSBOUND) plus IV and MAC. */
export function sealBound(len: number): number {
  const small = len < 128 * 1024 ? (128 * 1024 - len) >>> 11 : 0;
  return len + (len >>> 8) + small + OVERHEAD;
}

/** Blobs below this size are (de)compressed synchronously when zstd-napi is available. */
export const SYNC_ZSTD_MAX = 64 * 1024;

interface SyncCompressor {
  setParameters(p: { compressionLevel: number }): void;
  compress(data: Uint8Array): Buffer;
}
interface SyncDecompressor {
  decompress(data: Uint8Array): Buffer;
}
interface SyncZstd {
  Compressor: new () => SyncCompressor;
  Decompressor: new () => SyncDecompressor;
}

// @mongodb-js/zstd's binding, not its index.js: that wrapper drops the level argument, so every
// large blob was compressed at level 3 whatever the mode asked for. Loaded on first use: its loader
// calls process.report.getReport() to tell musl from glibc, ~5 ms at every start of every thread
// that imports this module (the seal workers never use it).
interface PoolZstd {
  compress(data: Buffer, level: number): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
}
let poolZstd: PoolZstd | undefined;
function pool(): PoolZstd {
  return (poolZstd ??= loadPoolZstd());
}

/**
 * On Linux the prebuilt glibc binding is required directly when /usr/bin/ldd is glibc's: the same
 * test the package's loader falls back to, without the whole process report it asks for first
 * (1.6 ms instead of 6-9 ms, on the main thread of a restore, check or prune, whose large trees and
 * indexes decompress on the thread pool). Anything else (musl, no ldd in a distroless image, the
 * binding installed elsewhere) goes through the package's own loader.
 */
function loadPoolZstd(): PoolZstd {
  const require = createRequire(import.meta.url);
  if (process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')) {
    try {
      if (!readFileSync('/usr/bin/ldd', 'latin1').includes('musl')) return require(`@mongodb-js/zstd-linux-${process.arch}-gnu`) as PoolZstd;
    } catch {
      // the loader below decides
    }
  }
  return require('@mongodb-js/zstd/bindings') as PoolZstd;
}

let sync: SyncZstd | null | undefined;
const compressors = new Map<number, SyncCompressor>();
let decompressor: SyncDecompressor | undefined;

function syncZstd(): SyncZstd | null {
  if (sync === undefined) {
    try {
      sync = createRequire(import.meta.url)('zstd-napi') as SyncZstd;
    } catch {
      sync = null;
    }
  }
  return sync;
}

/** Which binding handles small blobs (the tests check that the install built zstd-napi). */
export function smallBlobZstd(): 'zstd-napi' | '@mongodb-js/zstd' {
  return syncZstd() ? 'zstd-napi' : '@mongodb-js/zstd';
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
}

export async function compress(data: Uint8Array, level = ZSTD_LEVEL): Promise<Buffer> {
  const buf = asBuffer(data);
  if (buf.length < SYNC_ZSTD_MAX) {
    const z = syncZstd();
    if (z) {
      let c = compressors.get(level);
      if (!c) {
        c = new z.Compressor();
        c.setParameters({ compressionLevel: level });
        compressors.set(level, c);
      }
      return c.compress(buf);
    }
  }
  return pool().compress(buf, level);
}

export async function decompress(data: Uint8Array, what = 'data'): Promise<Buffer> {
  const buf = asBuffer(data);
  if (buf.length < SYNC_ZSTD_MAX) {
    const z = syncZstd();
    if (z) {
      try {
        return (decompressor ??= new z.Decompressor()).decompress(buf);
      } catch {
        // reported below by the other binding, with its message
      }
    }
  }
  try {
    return await pool().decompress(buf);
  } catch (err) {
    throw new IntegrityError(`${what}: zstd decompression failed (${(err as Error).message})`);
  }
}

interface ZstdBinding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  getFrameContentSize(frame: Uint8Array): number | null;
}

/** Largest plaintext decompressed into the scratch buffer (larger ones get a buffer of their own). */
const SCRATCH_MAX = 64 * 1024 * 1024;

/**
 * Synchronous decompression into one reused buffer: each result is a view that the next call
 * overwrites. For verification in worker threads, which hash a plaintext and drop it: a fresh
 * buffer per blob was most of their garbage (two packs' worth of plaintext per worker before V8
 * collected it). Frames without a content size, larger ones and damaged ones go through
 * decompress (a buffer of their own; damage reported there).
 */
export class ScratchDecompressor {
  private readonly binding: ZstdBinding | undefined;
  private readonly dctx: { decompress(dst: Uint8Array, src: Uint8Array): number } | undefined;
  private scratch = Buffer.alloc(0);

  constructor() {
    try {
      this.binding = createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
      this.dctx = new this.binding.DCtx();
    } catch {
      this.binding = undefined;
    }
  }

  decompress(data: Uint8Array, what = 'data'): Buffer | Promise<Buffer> {
    if (this.binding && this.dctx) {
      try {
        const size = this.binding.getFrameContentSize(data);
        if (size !== null && size <= SCRATCH_MAX) {
          if (this.scratch.length < size) this.scratch = Buffer.allocUnsafeSlow(Math.max(size, 1024 * 1024));
          const n = this.dctx.decompress(this.scratch, data);
          return this.scratch.subarray(0, n);
        }
      } catch {
        // below, with the error reported there
      }
    }
    return decompress(data, what);
  }

  /**
   * Decompresses a frame of exactly `dst.length` plaintext bytes into `dst` (a dump's output ring):
   * no buffer of its own. A frame of another size is damage, named with `what`.
   */
  async decompressInto(dst: Buffer, data: Uint8Array, what = 'data'): Promise<void> {
    if (this.binding && this.dctx) {
      let n = -1;
      try {
        const size = this.binding.getFrameContentSize(data);
        if (size === dst.length) n = this.dctx.decompress(dst, data);
      } catch {
        // below, with the error reported there
      }
      if (n === dst.length) return;
    }
    const plain = await decompress(data, what);
    if (plain.length !== dst.length) throw new IntegrityError(`${what}: decompressed size ${plain.length} != ${dst.length}`);
    dst.set(plain);
  }
}
