// Worker thread that turns large chunks into sealed blobs: SHA-256 first (the blob ID, which the
// writer checks against the index), then, only for new blobs, zstd straight into the output ring
// and restic's encryption in place there. Between the two steps the chunk stays where it was read, so
// a duplicate costs one hash and two messages, and no blob's bytes are copied between threads.
//
// Protocol (see seal-pool.ts): {op:'hash', seq, buf, off, len} → {op:'id', seq, id}, where buf is
// the shared memory the chunk is read from in place;
// {op:'seal', seq, level, outOff, room} → {op:'sealed', seq, len, ulen}, the sealed blob written
// into the output ring (workerData.out) at [outOff, outOff + room); {op:'drop', seq} → nothing.
// Small and mid-sized files come in batches (archiver/small-files.ts): {op:'read', seq, paths, sizes,
// poly} → {op:'read', seq, ids, clens, counts, lens, errors}: the worker opens and reads each file,
// chunks it with restic's chunker when it holds MIN_SIZE bytes or more, hashes each chunk and keeps
// the chunks. Per file: counts[i] chunks (their IDs and lengths next in ids and clens) and lens[i]
// bytes, or a length of -1: not read, because of errors[i], or, without an error, because the file
// has grown past what its batch allows (MIN_SIZE for a file listed under it, MID_FILE otherwise) and
// is read another way;
// {op:'hashfile', seq, path, size} → {op:'hashedfile', seq, id}: the SHA-256 of the file's first
// `size` bytes (a finished pack, whose ID this is; it is an error if the file is shorter).
// {op:'cut', seq, sid, buf, start, end, poly} → {op:'cuts', seq, cuts}: the chunk boundaries in
// shared memory [start, end), found by the chunker of stream `sid`, which continues where the
// stream's previous 'cut' stopped (a stream's cuts all go to one worker, in order); {op:'endcut',
// seq, sid} forgets that chunker.
// {op:'sealmany', seq, keep, level, asIs, outOff, room} → {op:'sealedmany', seq, lens, ulens}: the
// kept chunks (keep is per chunk) compressed and encrypted, back to back into the output ring at
// outOff; {op:'drop', seq} forgets a batch too.
// Errors answer {op:'error', seq, message}. The master key comes as workerData.
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { IV_SIZE, MasterKey, MasterKeyData, OVERHEAD, masterKeyFromData, sealInPlace, sha256hex } from './crypto.js';
import { ZSTD_LEVEL, looksCompressed, sealBound, zstdParams } from './compression.js';
import { MID_FILE, readWholeSync } from '../archiver/read-source.js';
import { Chunker, MIN_SIZE, chunkLengths } from '../chunker/chunker.js';
import { hashFileSync } from './pack.js';
import { collectYoung } from '../core/gc.js';

interface CCtx {
  setParameter(param: number, value: number): void;
  compress2(dst: Uint8Array, src: Uint8Array): number;
}
interface Binding {
  CCtx: new () => CCtx;
  CParameter: Record<string, number>;
}

export type SealRequest =
  | { op: 'hash'; seq: number; buf: SharedArrayBuffer; off: number; len: number }
  | { op: 'seal'; seq: number; level: number; outOff: number; room: number }
  | { op: 'read'; seq: number; paths: Uint8Array; sizes: number[]; poly: bigint }
  | { op: 'sealmany'; seq: number; keep: Uint8Array; level: number; asIs: boolean; outOff: number; room: number }
  | { op: 'hashfile'; seq: number; path: string; size: number }
  | { op: 'cut'; seq: number; sid: number; buf: SharedArrayBuffer; start: number; end: number; poly: bigint }
  | { op: 'endcut'; seq: number; sid: number }
  | { op: 'drop'; seq: number };

/** A file of a batch that could not be read: what the archiver reports (Node's error code and text). */
export interface ReadFailure {
  code?: string;
  message: string;
}

export type SealReply =
  | { op: 'id'; seq: number; id: string }
  | { op: 'sealed'; seq: number; len: number; ulen: number }
  | { op: 'read'; seq: number; ids: string[]; clens: number[]; counts: number[]; lens: number[]; errors: (ReadFailure | null)[] }
  | { op: 'sealedmany'; seq: number; lens: number[]; ulens: number[] }
  | { op: 'cuts'; seq: number; cuts: number[] }
  | { op: 'hashedfile'; seq: number; id: string }
  | { op: 'error'; seq: number; message: string };

const port = parentPort;
if (!port) throw new Error('seal-worker runs as a worker thread');
const binding = createRequire(import.meta.url)('zstd-napi/binding') as Binding;
const data = workerData as { key: MasterKeyData; out: SharedArrayBuffer };
const key: MasterKey = masterKeyFromData(data.key);
const out = Buffer.from(data.out);
/** Chunks hashed and not yet sealed or dropped (views of shared memory). */
const chunks = new Map<number, Buffer>();
/** Batches of files read, chunked and hashed, not yet sealed or dropped: their chunks, in file order. */
const batches = new Map<number, Buffer[]>();
const contexts = new Map<number, CCtx>();
/** The chunkers of the streams this worker cuts (see 'cut'). */
const cutters = new Map<number, Chunker>();

/** Read buffer for hashfile (reused). */
let hashBuf: Buffer | undefined;
function cut(sid: number, sab: SharedArrayBuffer, start: number, end: number, poly: bigint): number[] {
  let c = cutters.get(sid);
  if (!c) cutters.set(sid, (c = new Chunker(poly)));
  // (each message brings its own SharedArrayBuffer object, so a view is made per call)
  const bytes = Buffer.from(sab);
  const cuts: number[] = [];
  for (let pos = start; pos < end; ) {
    const at = c.next(bytes, pos, end);
    if (at < 0) break;
    cuts.push(at);
    pos = at;
  }
  return cuts;
}

function context(level: number): CCtx {
  let c = contexts.get(level);
  if (!c) {
    c = new binding.CCtx();
    for (const [name, value] of Object.entries(zstdParams(level))) c.setParameter(binding.CParameter[name], value);
    contexts.set(level, c);
  }
  return c;
}

/**
 * Seals `chunk` into the output ring at `at`: compressed straight into place and encrypted there.
 * Returns the sealed and the plaintext length (0: not compressed).
 */
function sealChunk(chunk: Buffer, level: number, at: number, room: number, asIs = false): { len: number; ulen: number } {
  const dst = out.subarray(at, at + room);
  // (a backup in "auto" mode stores data that is compressed already as it is; "max" tries anyway)
  if (level === 0 || chunk.length === 0 || (asIs && level === ZSTD_LEVEL && looksCompressed(chunk))) {
    dst.set(chunk, IV_SIZE);
    return { len: sealInPlace(key, dst, chunk.length), ulen: 0 };
  }
  const n = context(level).compress2(dst.subarray(IV_SIZE, room - OVERHEAD + IV_SIZE), chunk);
  return { len: sealInPlace(key, dst, n), ulen: chunk.length };
}

function reply(m: SealReply): void {
  port!.postMessage(m);
}

/**
 * Room for a batch's contents, in two sizes: batches of small files stay under 1 MiB plus one file
 * under MIN_SIZE; one with a mid-sized file adds one file under MID_FILE.
 */
const SPACE = 2 * 1024 * 1024;
const MID_SPACE = MID_FILE + SPACE;
/** Spaces of batches sealed or dropped, for the next ones, per size (allocating one per batch made
 * the thread's heap grow by tens of MB of freed-but-uncollected megabyte buffers). */
const spaces = new Map<number, Buffer[]>([
  [SPACE, []],
  [MID_SPACE, []],
]);
/** The space each held batch uses, to give back once it is sealed or dropped. */
const batchSpace = new Map<number, Buffer>();

function takeSpace(total: number): Buffer {
  const size = total <= SPACE ? SPACE : total <= MID_SPACE ? MID_SPACE : total;
  return spaces.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
}

function forgetBatch(seq: number): void {
  batches.delete(seq);
  const sp = batchSpace.get(seq);
  if (sp) {
    batchSpace.delete(seq);
    const free = spaces.get(sp.length);
    // (two batches per worker are in flight: two spaces of each size cover them)
    if (free && free.length < 2) free.push(sp);
  }
}

/**
 * Reads, chunks and hashes a batch of files (paths NUL-separated: no path holds a NUL byte). A file
 * listed under MIN_SIZE may not reach it (it is one blob: no chunker), any other not MID_FILE.
 */
function readBatch(seq: number, paths: Uint8Array, sizes: number[], poly: bigint): void {
  let total = 0;
  for (const s of sizes) total += Math.min(s, MID_FILE) + 1;
  const space = takeSpace(total);
  batchSpace.set(seq, space);
  const kept: Buffer[] = [];
  const ids: string[] = [];
  const clens: number[] = [];
  const counts: number[] = [];
  const lens: number[] = [];
  const errors: (ReadFailure | null)[] = [];
  let start = 0;
  let at = 0;
  for (let i = 0; i < sizes.length; i++) {
    let end = paths.indexOf(0, start);
    if (end < 0) end = paths.length;
    const path = Buffer.from(paths.buffer, paths.byteOffset + start, end - start);
    start = end + 1;
    const limit = sizes[i] < MIN_SIZE ? MIN_SIZE : MID_FILE;
    const room = Math.min(sizes[i], limit) + 1;
    const slice = space.subarray(at, at + room);
    at += room;
    let content: Buffer | undefined;
    try {
      content = readWholeSync(path, slice, limit);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      counts.push(0);
      lens.push(-1);
      errors.push({ code: e.code, message: e.message });
      continue;
    }
    errors.push(null);
    if (!content) {
      counts.push(0);
      lens.push(-1);
      continue;
    }
    lens.push(content.length);
    let pos = 0;
    const pieces = content.length < MIN_SIZE ? (content.length ? [content.length] : []) : chunkLengths(content, poly);
    for (const n of pieces) {
      const chunk = content.subarray(pos, pos + n);
      pos += n;
      kept.push(chunk);
      ids.push(sha256hex(chunk));
      clens.push(n);
    }
    counts.push(pieces.length);
  }
  batches.set(seq, kept);
  reply({ op: 'read', seq, ids, clens, counts, lens, errors });
}

/**
 * Seals the batch's chunks marked in `keep`, back to back into the output ring at [outOff, outOff
 * + room) (room: the sum of their sealBound).
 */
function sealBatch(seq: number, keep: Uint8Array, level: number, asIs: boolean, outOff: number, room: number): void {
  const kept = batches.get(seq);
  if (!kept) throw new Error(`seal worker: no batch ${seq}`);
  const lens: number[] = [];
  const ulens: number[] = [];
  let at = outOff;
  const end = outOff + room;
  for (let i = 0; i < kept.length; i++) {
    if (!keep[i]) continue;
    const c = kept[i];
    const bound = sealBound(c.length);
    if (at + bound > end) throw new Error('seal worker: batch output room too small');
    const { len, ulen } = sealChunk(c, level, at, bound, asIs);
    lens.push(len);
    ulens.push(ulen);
    at += len;
  }
  forgetBatch(seq);
  reply({ op: 'sealedmany', seq, lens, ulens });
  collectYoung();
}

port.on('message', (m: SealRequest) => {
  try {
    switch (m.op) {
      case 'hash': {
        const chunk = Buffer.from(m.buf, m.off, m.len);
        chunks.set(m.seq, chunk);
        reply({ op: 'id', seq: m.seq, id: sha256hex(chunk) });
        break;
      }
      case 'seal': {
        const chunk = chunks.get(m.seq);
        if (!chunk) throw new Error(`seal worker: no chunk ${m.seq}`);
        chunks.delete(m.seq);
        const { len, ulen } = sealChunk(chunk, m.level, m.outOff, m.room);
        reply({ op: 'sealed', seq: m.seq, len, ulen });
        // The cipher's output pieces are garbage now; collected here, not when V8 gets round to it
        // (this thread allocates too little else for that to be soon), they are reused, not piled up.
        collectYoung();
        break;
      }
      case 'read':
        readBatch(m.seq, m.paths, m.sizes, m.poly);
        break;
      case 'sealmany':
        sealBatch(m.seq, m.keep, m.level, m.asIs, m.outOff, m.room);
        break;
      case 'hashfile':
        hashBuf ??= Buffer.allocUnsafeSlow(1024 * 1024);
        reply({ op: 'hashedfile', seq: m.seq, id: hashFileSync(m.path, m.size, hashBuf) });
        break;
      case 'cut':
        reply({ op: 'cuts', seq: m.seq, cuts: cut(m.sid, m.buf, m.start, m.end, m.poly) });
        break;
      case 'endcut':
        cutters.delete(m.sid);
        break;
      case 'drop':
        chunks.delete(m.seq);
        forgetBatch(m.seq);
        break;
    }
  } catch (err) {
    if (m.op === 'cut') cutters.delete(m.sid);
    if (m.op !== 'drop') {
      chunks.delete(m.seq);
      forgetBatch(m.seq);
    }
    reply({ op: 'error', seq: m.seq, message: err instanceof Error ? err.message : String(err) });
  }
});
