// A stream is read into a ring of shared memory, chunked in place, and handed to the seal workers
// by offset: no buffer is allocated or copied per chunk on the main thread.
//
// A chunk's bytes stay where they were read until the worker has sealed or dropped them (the
// region is held); reading waits for held regions ahead of it. A chunk is always contiguous: when
// reading reaches the end of the ring, the unfinished chunk is moved to the start.
import { MAX_SIZE } from '../chunker/chunker.js';
import { SharedRing } from '../core/shared-ring.js';

/**
 * Ring size: room for the largest chunk, one read, and the chunks the workers are busy with. 10 MiB
 * instead of 16: with the 10 MiB output ring, a stream's peak went from 137-143 MB to 125-129 MB
 * (365 MiB SQL dump, alternating runs) in the same time; a tree backup's time did not change.
 */
export const RING_SIZE = MAX_SIZE + 2 * 1024 * 1024;
/** Bytes asked of the source per read. */
export const RING_READ = 1024 * 1024;
/** Rings kept for reuse (one per concurrent big file or stream; more wait). */
const MAX_RINGS = 2;

/** The ring a stream is read into (see SharedRing). */
export type ChunkRing = SharedRing;

const spare: ChunkRing[] = [];
let rings = 0;
const queue: ((r: ChunkRing) => void)[] = [];

/** A ring for one stream; give it back with releaseRing once its chunks are all released. */
export async function acquireRing(): Promise<ChunkRing> {
  const r = spare.pop();
  if (r) return r;
  if (rings < MAX_RINGS) {
    rings++;
    return new SharedRing(RING_SIZE);
  }
  return new Promise<ChunkRing>((resolve) => queue.push(resolve));
}

export function releaseRing(r: ChunkRing): void {
  const next = queue.shift();
  if (next) next(r);
  else spare.push(r);
}

/** Reads into buf[off, off+len); resolves with the count, 0 at the end. */
export type ReadFn = (buf: Buffer, off: number, len: number) => Promise<number>;

/** Receives each chunk as a region of the ring; must hold it (ring.hold) until done with it. */
export type RegionFn = (ring: ChunkRing, start: number, end: number) => Promise<void>;

interface Splitter {
  next(buf: Uint8Array, start: number, end: number): number;
}

/**
 * Finds the chunk boundaries in ring bytes [start, end), continuing the chunk begun by earlier
 * calls: a seal worker's chunker (SealPool.cutter), which takes that work off the main thread.
 */
export interface RingCutter {
  cuts(start: number, end: number): Promise<number[]>;
}

/**
 * Reads everything from `read` into `ring` (at least MAX_SIZE + RING_READ bytes), splits it with
 * `chunker` (here, or in a worker) and passes each chunk to `emit` as a region [start, end) of the ring.
 */
export async function chunkIntoRing(ring: ChunkRing, chunker: Splitter | RingCutter, read: ReadFn, emit: RegionFn): Promise<void> {
  if (ring.size < MAX_SIZE + RING_READ) throw new RangeError(`chunkIntoRing: a ring of ${ring.size} bytes is too small`);
  const buf = ring.bytes;
  let start = 0; // start of the unfinished chunk
  let end = 0; // end of the bytes read
  for (;;) {
    if (end === ring.size) {
      // Move the unfinished chunk (always shorter than MAX_SIZE) to the start of the ring.
      const n = end - start;
      await ring.free(0, n + RING_READ);
      buf.copyWithin(0, start, end);
      start = 0;
      end = n;
    }
    const want = Math.min(RING_READ, ring.size - end);
    await ring.free(end, end + want);
    const got = await read(buf, end, want);
    if (got === 0) break;
    let pos = end;
    end += got;
    if ('cuts' in chunker) {
      for (const cut of await chunker.cuts(pos, end)) {
        await emit(ring, start, cut);
        start = cut;
      }
      continue;
    }
    while (pos < end) {
      const cut = chunker.next(buf, pos, end);
      if (cut < 0) break;
      await emit(ring, start, cut);
      start = pos = cut;
    }
  }
  if (end > start) await emit(ring, start, end);
}
