// Worker thread that turns large chunks into sealed blobs: SHA-256 first (the blob ID, which the
// writer checks against the index), then, only for new blobs, zstd straight into the output ring
// and restic's encryption in place there. Between the two steps the chunk stays where it was read, so
// a duplicate costs one hash and two messages, and no blob's bytes are copied between threads.
//
// Protocol (see seal-pool.ts): {op:'hash', seq, buf, off, len} → {op:'id', seq, id}, where buf is
// the shared memory the chunk is read from in place;
// {op:'seal', seq, level, outOff, room} → {op:'sealed', seq, len, ulen}, the sealed blob written
// into the output ring (workerData.out) at [outOff, outOff + room); {op:'drop', seq} → nothing.
// Small files come in batches (archiver/small-files.ts): {op:'read', seq, paths, sizes} → {op:'read',
// seq, ids, lens, errors}: the worker opens, reads and hashes each file and keeps the contents (a
// length of -1: not read, because of errors[i], or, without an error, because the file has grown to
// MIN_SIZE or more and needs the chunker);
// {op:'sealmany', seq, keep, level, asIs, outOff, room} → {op:'sealedmany', seq, lens, ulens}: the
// kept ones compressed and encrypted, back to back into the output ring at outOff; {op:'drop', seq}
// forgets a batch too.
// Errors answer {op:'error', seq, message}. The master key comes as workerData.
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { IV_SIZE, MasterKey, MasterKeyData, OVERHEAD, masterKeyFromData, sealInPlace, sha256hex } from './crypto.js';
import { ZSTD_LEVEL, looksCompressed, sealBound, zstdParams } from './compression.js';
import { readWholeSync } from '../archiver/read-source.js';
import { MIN_SIZE } from '../chunker/chunker.js';
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
  | { op: 'read'; seq: number; paths: Uint8Array; sizes: number[] }
  | { op: 'sealmany'; seq: number; keep: Uint8Array; level: number; asIs: boolean; outOff: number; room: number }
  | { op: 'drop'; seq: number };

/** A file of a batch that could not be read: what the archiver reports (Node's error code and text). */
export interface ReadFailure {
  code?: string;
  message: string;
}

export type SealReply =
  | { op: 'id'; seq: number; id: string }
  | { op: 'sealed'; seq: number; len: number; ulen: number }
  | { op: 'read'; seq: number; ids: string[]; lens: number[]; errors: (ReadFailure | null)[] }
  | { op: 'sealedmany'; seq: number; lens: number[]; ulens: number[] }
  | { op: 'error'; seq: number; message: string };

const port = parentPort;
if (!port) throw new Error('seal-worker runs as a worker thread');
const binding = createRequire(import.meta.url)('zstd-napi/binding') as Binding;
const data = workerData as { key: MasterKeyData; out: SharedArrayBuffer };
const key: MasterKey = masterKeyFromData(data.key);
const out = Buffer.from(data.out);
/** Chunks hashed and not yet sealed or dropped (views of shared memory). */
const chunks = new Map<number, Buffer>();
/** Batches of small files read and hashed, not yet sealed or dropped: each file's content or undefined. */
const batches = new Map<number, (Buffer | undefined)[]>();
const contexts = new Map<number, CCtx>();

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

/** Room for a batch's contents: batches stay under 1 MiB plus one file under MIN_SIZE. */
const SPACE = 2 * 1024 * 1024;
/** Spaces of batches sealed or dropped, for the next ones (allocating one per batch made the
 * thread's heap grow by tens of MB of freed-but-uncollected megabyte buffers). */
const spaces: Buffer[] = [];
/** The space each held batch uses, to give back once it is sealed or dropped. */
const batchSpace = new Map<number, Buffer>();

function forgetBatch(seq: number): void {
  batches.delete(seq);
  const sp = batchSpace.get(seq);
  if (sp) {
    batchSpace.delete(seq);
    if (sp.length === SPACE && spaces.length < 4) spaces.push(sp);
  }
}

/** Reads and hashes a batch of files (paths NUL-separated: no path holds a NUL byte). */
function readBatch(seq: number, paths: Uint8Array, sizes: number[]): void {
  let total = 0;
  for (const s of sizes) total += Math.min(s, MIN_SIZE) + 1;
  const space = total <= SPACE ? (spaces.pop() ?? Buffer.allocUnsafeSlow(SPACE)) : Buffer.allocUnsafeSlow(total);
  batchSpace.set(seq, space);
  const contents: (Buffer | undefined)[] = [];
  const ids: string[] = [];
  const lens: number[] = [];
  const errors: (ReadFailure | null)[] = [];
  let start = 0;
  let at = 0;
  for (let i = 0; i < sizes.length; i++) {
    let end = paths.indexOf(0, start);
    if (end < 0) end = paths.length;
    const path = Buffer.from(paths.buffer, paths.byteOffset + start, end - start);
    start = end + 1;
    const room = Math.min(sizes[i], MIN_SIZE) + 1;
    const slice = space.subarray(at, at + room);
    at += room;
    let content: Buffer | undefined;
    try {
      content = readWholeSync(path, slice, MIN_SIZE);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      contents.push(undefined);
      ids.push('');
      lens.push(-1);
      errors.push({ code: e.code, message: e.message });
      continue;
    }
    contents.push(content);
    errors.push(null);
    if (!content) {
      ids.push('');
      lens.push(-1);
    } else {
      ids.push(content.length ? sha256hex(content) : '');
      lens.push(content.length);
    }
  }
  batches.set(seq, contents);
  reply({ op: 'read', seq, ids, lens, errors });
}

/**
 * Seals the batch's files marked in `keep`, back to back into the output ring at [outOff, outOff
 * + room) (room: the sum of their sealBound).
 */
function sealBatch(seq: number, keep: Uint8Array, level: number, asIs: boolean, outOff: number, room: number): void {
  const contents = batches.get(seq);
  if (!contents) throw new Error(`seal worker: no batch ${seq}`);
  const lens: number[] = [];
  const ulens: number[] = [];
  let at = outOff;
  const end = outOff + room;
  for (let i = 0; i < contents.length; i++) {
    if (!keep[i]) continue;
    const c = contents[i]!;
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
        readBatch(m.seq, m.paths, m.sizes);
        break;
      case 'sealmany':
        sealBatch(m.seq, m.keep, m.level, m.asIs, m.outOff, m.room);
        break;
      case 'drop':
        chunks.delete(m.seq);
        forgetBatch(m.seq);
        break;
    }
  } catch (err) {
    if (m.op !== 'drop') {
      chunks.delete(m.seq);
      forgetBatch(m.seq);
    }
    reply({ op: 'error', seq: m.seq, message: err instanceof Error ? err.message : String(err) });
  }
});
