// Content-defined chunking, boundary-for-boundary identical to restic 0.14 (github.com/restic/chunker v0.4.0).
//
// A 64-byte Rabin fingerprint modulo a degree-53 irreducible polynomial P rolls over the data; a chunk ends
// after a byte when the chunk holds at least MIN_SIZE bytes and the low 20 bits of the fingerprint are zero,
// or when it reaches MAX_SIZE. The first MIN_SIZE − 64 bytes of every chunk are never hashed (they cannot
// influence a boundary), and the state is reset at every boundary and at the start of each file.
//
// Hot-path notes: the 53-bit digest is kept as two int32 halves (hi = bits 32…52, lo = bits 0…31), the
// per-polynomial tables as Int32Array hi/lo pairs (Int32, not Uint32, so every load stays a small integer and
// never becomes a heap double). Inside one buffer the byte that leaves the window is read straight from the
// input (buf[i − 64]); a 64-byte ring only carries the window across buffer boundaries.

import { DmctlError, EXIT_CODES } from '../core/errors.js';
import { degree, polyMod, POLYNOMIAL_DEGREE } from './polynomial.js';

export const MIN_SIZE = 512 * 1024;
export const MAX_SIZE = 8 * 1024 * 1024;

const WINDOW = 64;
/** Bytes of each chunk copied without hashing. */
const SKIP = MIN_SIZE - WINDOW;
/** 2^20 − 1: about one boundary per MiB. */
const SPLIT_MASK = 0xfffff;
/** The digest's top byte is bits 45…52, i.e. bits 13…20 of the high half. */
const TOP_SHIFT = POLYNOMIAL_DEGREE - 8 - 32;

interface Tables {
  outHi: Int32Array;
  outLo: Int32Array;
  modHi: Int32Array;
  modLo: Int32Array;
}

const tableCache = new Map<bigint, Tables>();

// The tables the hot loop reads. Module-level constants of fixed length 256 let V8 fold their addresses and drop
// the bounds checks on byte indexes (measured ~1.6x faster than reading per-instance arrays); the active
// polynomial's tables are copied in (4 KiB) whenever a Chunker with a different polynomial runs.
const OUT_HI = new Int32Array(256);
const OUT_LO = new Int32Array(256);
const MOD_HI = new Int32Array(256);
const MOD_LO = new Int32Array(256);
let activeTables: Tables | undefined;

function activate(t: Tables): void {
  OUT_HI.set(t.outHi);
  OUT_LO.set(t.outLo);
  MOD_HI.set(t.modHi);
  MOD_LO.set(t.modLo);
  activeTables = t;
}

function checkPolynomial(p: bigint): void {
  if (typeof p !== 'bigint' || degree(p) !== POLYNOMIAL_DEGREE) {
    throw new DmctlError('chunker-polynomial', `chunker polynomial must have degree ${POLYNOMIAL_DEGREE}`, {
      hint: 'pass the polynomial from the repository config (parsePolynomial)',
      exitCode: EXIT_CODES.FAILURE,
    });
  }
}

/** out[b] = b·x^(8·63) mod P (removes byte b leaving the window); mod[b] = ((b·x^53) mod P) | b·x^53. */
function tablesFor(p: bigint): Tables {
  let t = tableCache.get(p);
  if (t) return t;
  checkPolynomial(p);
  const outHi = new Int32Array(256);
  const outLo = new Int32Array(256);
  const modHi = new Int32Array(256);
  const modLo = new Int32Array(256);
  const k = BigInt(POLYNOMIAL_DEGREE);
  // Both tables are linear in b over GF(2): an entry is the XOR of the entries of b's set bits. So
  // only the eight single-bit entries take BigInt arithmetic (building all 256 that way cost ~25 ms
  // at the start of every backup, and again in each seal worker).
  for (let bit = 0; bit < 8; bit++) {
    const b = 1 << bit;
    let h = BigInt(b);
    for (let j = 0; j < WINDOW - 1; j++) h = polyMod(h << 8n, p);
    outHi[b] = Number(h >> 32n);
    outLo[b] = Number(BigInt.asIntN(32, h));
    const shifted = BigInt(b) << k;
    const m = polyMod(shifted, p) | shifted;
    modHi[b] = Number(m >> 32n);
    modLo[b] = Number(BigInt.asIntN(32, m));
  }
  for (let b = 3; b < 256; b++) {
    const low = b & -b;
    if (low === b) continue;
    for (const a of [outHi, outLo, modHi, modLo]) a[b] = a[low]! ^ a[b ^ low]!;
  }
  t = { outHi, outLo, modHi, modLo };
  tableCache.set(p, t);
  return t;
}

export class Chunker {
  readonly polynomial: bigint;
  private readonly tables: Tables;
  /** The last (up to) 64 hashed bytes of the current chunk, oldest at `wpos`; zeros before any were hashed. */
  private readonly ring = new Uint8Array(WINDOW);
  private wpos = 0;
  private hi = 0;
  private lo = 0;
  /** Bytes in the current chunk so far. */
  private count = 0;

  constructor(polynomial: bigint) {
    this.tables = tablesFor(polynomial);
    this.polynomial = polynomial;
  }

  /**
   * Starts a new file/stream: resets all state (window, digest, bytes in current chunk).
   *
   * restic seeds each chunk's window by sliding in one byte `1`; here the state starts at digest 0 with a zero
   * window instead. Both are equivalent: the fingerprint is linear, the seed's term b·x^(8·63) is XORed out
   * again (out[1]) exactly when the 64th hashed byte arrives, and the first permitted cut (L = MinSize) comes
   * after exactly 64 hashed bytes. From then on both digests are the fingerprint of the last 64 bytes.
   */
  reset(): void {
    this.ring.fill(0);
    this.wpos = 0;
    this.hi = 0;
    this.lo = 0;
    this.count = 0;
  }

  /** Bytes fed into the current (unfinished) chunk so far. */
  get pending(): number {
    return this.count;
  }

  /**
   * Feeds buf[start..end). Returns the index in buf just past the end of the current chunk if a boundary falls
   * inside this range (the caller then emits the chunk and calls next() again from that index — state is reset
   * for the next chunk automatically), or -1 if the whole range was consumed into the current chunk.
   */
  next(buf: Uint8Array, start = 0, end: number = buf.length): number {
    if (!(start >= 0 && start <= end && end <= buf.length) || start !== Math.floor(start) || end !== Math.floor(end)) {
      throw new RangeError(`Chunker.next: invalid range [${start}, ${end}) for a buffer of ${buf.length} bytes`);
    }
    let count = this.count;
    let i = start;

    // 1. Bytes that cannot influence a boundary: skip without hashing.
    if (count < SKIP) {
      const n = Math.min(end - i, SKIP - count);
      count += n;
      i += n;
      if (i === end) {
        this.count = count;
        return -1;
      }
    }

    if (activeTables !== this.tables) activate(this.tables);
    let hi = this.hi, lo = this.lo;

    // 2. The first 64 bytes of this call: the leaving byte comes from the ring (earlier calls / zeros).
    const ring = this.ring;
    let wpos = this.wpos;
    const aEnd = Math.min(end, i + WINDOW);
    for (; i < aEnd; ) {
      const c = buf[i++];
      const o = ring[wpos];
      ring[wpos] = c;
      wpos = (wpos + 1) & (WINDOW - 1);
      hi ^= OUT_HI[o];
      lo ^= OUT_LO[o];
      const top = hi >>> TOP_SHIFT;
      hi = ((hi << 8) | (lo >>> 24)) ^ MOD_HI[top];
      lo = ((lo << 8) | c) ^ MOD_LO[top];
      count++;
      if (count >= MIN_SIZE && ((lo & SPLIT_MASK) === 0 || count >= MAX_SIZE)) {
        this.reset();
        return i;
      }
    }
    if (i === end) {
      this.hi = hi;
      this.lo = lo;
      this.wpos = wpos;
      this.count = count;
      return -1;
    }

    // 3. The hot loop: the leaving byte is buf[i − 64]. Here count ≥ MIN_SIZE, so every byte may cut.
    const from = i;
    const limit = Math.min(end, i + (MAX_SIZE - count));
    let cut = false;
    for (; i < limit; ) {
      const o = buf[i - WINDOW];
      const c = buf[i++];
      hi ^= OUT_HI[o];
      lo ^= OUT_LO[o];
      const top = hi >>> TOP_SHIFT;
      hi = ((hi << 8) | (lo >>> 24)) ^ MOD_HI[top];
      lo = ((lo << 8) | c) ^ MOD_LO[top];
      if ((lo & SPLIT_MASK) === 0) {
        cut = true;
        break;
      }
    }
    count += i - from;
    if (cut || count >= MAX_SIZE) {
      this.reset();
      return i;
    }
    // Consumed the whole range: carry the window (the last 64 bytes, all hashed in this call) to the next call.
    ring.set(buf.subarray(end - WINDOW, end));
    this.wpos = 0;
    this.hi = hi;
    this.lo = lo;
    this.count = count;
    return -1;
  }
}

/**
 * Splits an async iterable of buffers (e.g. a fs.ReadStream or process.stdin) into chunk Buffers (each a fresh
 * Buffer of exactly the chunk's bytes, last one may be short; no chunks for empty input).
 * Memory bounded by MAX_SIZE + one input buffer.
 *
 * Every yielded Buffer owns its whole ArrayBuffer (byteOffset 0, never a slice of Node's shared pool), so a
 * consumer may transfer it to a worker thread.
 */
export async function* chunkStream(input: AsyncIterable<Uint8Array>, polynomial: bigint): AsyncGenerator<Buffer> {
  const chunker = new Chunker(polynomial);
  // Bytes of the current chunk that came from earlier input buffers (allocated only when a chunk spans buffers).
  let acc: Buffer | undefined;
  let accLen = 0;

  for await (const item of input) {
    if (!(item instanceof Uint8Array)) {
      throw new DmctlError('chunker-input', `chunkStream: expected binary data, got ${typeof item}`, {
        hint: 'read the source without a text encoding',
        exitCode: EXIT_CODES.FAILURE,
      });
    }
    const buf = item;
    let pos = 0;
    while (pos < buf.length) {
      const cut = chunker.next(buf, pos, buf.length);
      if (cut < 0) {
        const n = buf.length - pos;
        if (!acc) acc = Buffer.allocUnsafeSlow(MAX_SIZE);
        acc.set(buf.subarray(pos), accLen);
        accLen += n;
        break;
      }
      const out = Buffer.allocUnsafeSlow(accLen + (cut - pos));
      if (accLen > 0) out.set(acc!.subarray(0, accLen), 0);
      out.set(buf.subarray(pos, cut), accLen);
      accLen = 0;
      pos = cut;
      yield out;
    }
  }
  if (accLen > 0) {
    const out = Buffer.allocUnsafeSlow(accLen);
    out.set(acc!.subarray(0, accLen), 0);
    yield out;
  }
}

/** Chunk boundaries of one in-memory buffer (lengths), for tests and small files. */
export function chunkLengths(data: Uint8Array, polynomial: bigint): number[] {
  const chunker = new Chunker(polynomial);
  const lengths: number[] = [];
  let pos = 0;
  while (pos < data.length) {
    const cut = chunker.next(data, pos, data.length);
    if (cut < 0) {
      lengths.push(data.length - pos);
      break;
    }
    lengths.push(cut - pos);
    pos = cut;
  }
  return lengths;
}
