// Worker thread that turns large chunks into sealed blobs: SHA-256 first (the blob ID, which the
// writer checks against the index), then, only for new blobs, zstd straight into the output ring
// and restic's encryption in place there. Between the two steps the chunk stays where it was read, so
// a duplicate costs one hash and two messages, and no blob's bytes are copied between threads.
//
// Protocol (see seal-pool.ts): {op:'hash', seq, buf, off, len} → {op:'id', seq, id}, where buf is
// the shared memory the chunk is read from in place;
// {op:'seal', seq, level, outOff, room} → {op:'sealed', seq, len, ulen}, the sealed blob written
// into the output ring (workerData.out) at [outOff, outOff + room); {op:'drop', seq} → nothing.
// Errors answer {op:'error', seq, message}. The master key comes as workerData.
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { IV_SIZE, MasterKey, MasterKeyData, OVERHEAD, masterKeyFromData, sealInPlace, sha256hex } from './crypto.js';
import { zstdParams } from './compression.js';
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
  | { op: 'drop'; seq: number };

export type SealReply =
  | { op: 'id'; seq: number; id: string }
  | { op: 'sealed'; seq: number; len: number; ulen: number }
  | { op: 'error'; seq: number; message: string };

const port = parentPort;
if (!port) throw new Error('seal-worker runs as a worker thread');
const binding = createRequire(import.meta.url)('zstd-napi/binding') as Binding;
const data = workerData as { key: MasterKeyData; out: SharedArrayBuffer };
const key: MasterKey = masterKeyFromData(data.key);
const out = Buffer.from(data.out);
/** Chunks hashed and not yet sealed or dropped (views of shared memory). */
const chunks = new Map<number, Buffer>();
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
function sealChunk(chunk: Buffer, level: number, at: number, room: number): { len: number; ulen: number } {
  const dst = out.subarray(at, at + room);
  if (level === 0 || chunk.length === 0) {
    dst.set(chunk, IV_SIZE);
    return { len: sealInPlace(key, dst, chunk.length), ulen: 0 };
  }
  const n = context(level).compress2(dst.subarray(IV_SIZE, room - OVERHEAD + IV_SIZE), chunk);
  return { len: sealInPlace(key, dst, n), ulen: chunk.length };
}

function reply(m: SealReply): void {
  port!.postMessage(m);
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
      case 'drop':
        chunks.delete(m.seq);
        break;
    }
  } catch (err) {
    if (m.op !== 'drop') chunks.delete(m.seq);
    reply({ op: 'error', seq: m.seq, message: err instanceof Error ? err.message : String(err) });
  }
});
