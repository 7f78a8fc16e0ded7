// Verification of one pack's bytes (check --read-data): its SHA-256 against its name, its header
// against the index, every blob's MAC, plaintext size and SHA-256. A pure function of the key, the
// bytes and the index entries, so it runs on the main thread or, whole, in a worker thread
// (verify-worker.ts): the operations it uses come in as `ops`.
import { MasterKey, open, openAsync, sha256hex, sha256hexAsync } from '../repository/crypto.js';
import { decompress } from '../repository/compression.js';
import { decodeHeader, PackedBlob } from '../repository/pack.js';
import { mapLimit } from '../core/limit.js';
import type { CheckProblem } from './check.js';

/** A blob index entry as one comparable string. */
export const entrySig = (b: PackedBlob) => `${b.type}:${b.id}:${b.offset}:${b.length}:${b.uncompressedLength ?? 0}`;

/** Differences between what the index says about a pack and what its header says. */
export function compareHeader(packId: string, index: readonly PackedBlob[], header: readonly PackedBlob[]): CheckProblem[] {
  // The common case (they agree) is decided on the entries sorted by offset, without building keys.
  if (index.length === header.length) {
    const byOffset = (a: PackedBlob, b: PackedBlob) => a.offset - b.offset;
    const a = [...index].sort(byOffset);
    const b = [...header].sort(byOffset);
    let same = true;
    for (let k = 0; k < a.length && same; k++) {
      const x = a[k];
      const y = b[k];
      same = x.offset === y.offset && x.length === y.length && x.id === y.id && x.type === y.type && (x.uncompressedLength ?? 0) === (y.uncompressedLength ?? 0);
    }
    if (same) return [];
  }
  const out: CheckProblem[] = [];
  const h = new Map(header.map((b) => [entrySig(b), b]));
  const i = new Set(index.map(entrySig));
  for (const b of index) {
    if (!h.has(entrySig(b))) {
      out.push({ kind: 'pack-header', id: packId, message: `pack ${packId}: ${b.type} blob ${b.id} (offset ${b.offset}, length ${b.length}) is in the index but not in the pack header` });
    }
  }
  for (const b of header) {
    if (!i.has(entrySig(b))) {
      out.push({ kind: 'pack-header', id: packId, message: `pack ${packId}: ${b.type} blob ${b.id} (offset ${b.offset}, length ${b.length}) is in the pack header but not in the index` });
    }
  }
  return out;
}

/** An error as the one-line text a problem report carries. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The operations verification needs, sync or async. */
export interface VerifyOps {
  open(key: MasterKey, data: Uint8Array, what: string): Buffer | Promise<Buffer>;
  /**
   * Optional: `open` that decrypts in place (the pack's bytes are the caller's to overwrite: a
   * worker's own copy). Used only for blobs no other listed blob overlaps, after the pack is hashed.
   */
  openInPlace?(key: MasterKey, data: Buffer, what: string): Buffer;
  decompress(data: Buffer, what: string): Buffer | Promise<Buffer>;
  sha256hex(data: Uint8Array): string | Promise<string>;
  /** Blobs verified at once (1 when every operation is synchronous). */
  blobConcurrency: number;
}

/** On the main thread: large blobs are decrypted, decompressed and hashed on libuv's thread pool. */
export const threadPoolOps: VerifyOps = { open: openAsync, decompress, sha256hex: sha256hexAsync, blobConcurrency: 8 };

/**
 * A pack's bytes against its name, its header against the index, every blob's MAC and hash.
 * With asynchronous ops, blobs are verified several at a time and the plaintext held at once stays
 * under a budget.
 */
export async function verifyPackBytes(key: MasterKey, id: string, data: Buffer, indexBlobs: readonly PackedBlob[], ops: VerifyOps = threadPoolOps): Promise<CheckProblem[]> {
  const out: CheckProblem[] = [];
  // Hashed in place, not through WebCrypto: its copy of the input would hold a second copy of
  // every pack being verified (16 MiB each); SHA-256 runs at ~1.7 GB/s, ~10 ms per pack.
  const hash = sha256hex(data);
  let header: PackedBlob[];
  try {
    if (data.length < 4 + 32) throw new Error(`pack too small (${data.length} bytes)`);
    const hlen = data.readUInt32LE(data.length - 4);
    if (hlen < 32 || hlen > data.length - 4) throw new Error(`invalid header length ${hlen}`);
    header = decodeHeader(open(key, data.subarray(data.length - 4 - hlen, data.length - 4), `pack ${id} header`), `pack ${id}`);
    out.push(...compareHeader(id, indexBlobs, header));
  } catch (err) {
    out.push({ kind: 'pack-header', id, message: `pack ${id}: header cannot be read: ${describe(err)}` });
    header = [...indexBlobs];
  }
  // Every blob the header (or, if it is unreadable, the index) lists.
  const alone = ops.openInPlace ? nonOverlapping(header) : undefined;
  const budget = new ByteBudget(PLAINTEXT_BUDGET);
  await mapLimit(header, ops.blobConcurrency, async (b) => {
    const what = `${b.type} blob ${b.id} in pack ${id}`;
    if (b.offset + b.length > data.length) {
      out.push({ kind: 'blob', id: b.id, message: `${what}: extends beyond the end of the pack` });
      return;
    }
    const cost = b.length + (b.uncompressedLength || 0);
    await budget.take(cost);
    try {
      const sealed = data.subarray(b.offset, b.offset + b.length);
      let plain = alone?.has(b) ? ops.openInPlace!(key, sealed, what) : await ops.open(key, sealed, what);
      if (b.uncompressedLength) {
        plain = await ops.decompress(plain, what);
        if (plain.length !== b.uncompressedLength) throw new Error(`decompressed size ${plain.length} != ${b.uncompressedLength}`);
      }
      if ((await ops.sha256hex(plain)) !== b.id) throw new Error('content does not match its ID');
    } catch (err) {
      out.push({ kind: 'blob', id: b.id, message: `${what}: ${describe(err)}` });
    } finally {
      budget.give(cost);
    }
  });
  if (hash !== id) out.push({ kind: 'pack-hash', id, message: `pack ${id}: content hash is ${hash}, not its name (the pack is damaged)` });
  return out;
}

/** The entries whose byte ranges no other entry touches (all of them in an undamaged pack). */
function nonOverlapping(blobs: readonly PackedBlob[]): Set<PackedBlob> {
  const sorted = [...blobs].sort((a, b) => a.offset - b.offset);
  const out = new Set<PackedBlob>();
  let prevEnd = 0; // the furthest any earlier entry reaches
  for (let i = 0; i < sorted.length; i++) {
    const b = sorted[i];
    const nextStart = i + 1 < sorted.length ? sorted[i + 1].offset : Infinity;
    if (b.offset >= prevEnd && b.offset + b.length <= nextStart) out.add(b);
    prevEnd = Math.max(prevEnd, b.offset + b.length);
  }
  return out;
}

/** Plaintext bytes one pack's verification holds at once (a single larger blob still passes alone). */
const PLAINTEXT_BUDGET = 8 * 1024 * 1024;

class ByteBudget {
  private used = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly size: number) {}

  async take(n: number): Promise<void> {
    while (this.used > 0 && this.used + n > this.size) await new Promise<void>((r) => this.waiting.push(r));
    this.used += n;
  }

  give(n: number): void {
    this.used -= n;
    const w = this.waiting.splice(0);
    for (const r of w) r();
  }
}
