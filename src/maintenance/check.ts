// check: is every byte a snapshot needs there and intact? Structure (index files decode, every
// indexed pack exists with the size its index entries imply and a header that agrees with them,
// every snapshot's trees decode and reference only indexed blobs), and optionally the data itself
// (--read-data / --read-data-subset: every pack's SHA-256 equals its name, every blob's MAC and
// SHA-256 are right). Problems are collected, each naming the object, never thrown: a damaged
// repository is an answer, not a failure of check.

import crypto from 'node:crypto';
import os from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { DmctlError, UsageError } from '../core/errors.js';
import { mapLimit } from '../core/limit.js';
import { ProgressFn, noProgress, throttleProgress } from '../core/progress.js';
import { listAll } from '../storage/backend.js';
import { MasterKey, open } from '../repository/crypto.js';
import { decompress } from '../repository/compression.js';
import { decodeIndex, IndexFile } from '../repository/index-file.js';
import { decodeHeader, expectedPackSize, PackedBlob, readPackHeader } from '../repository/pack.js';
import { Repository } from '../repository/repository.js';
import { decodeSnapshot } from '../repository/snapshot.js';
import { decodeTree } from '../repository/tree.js';

export interface CheckOptions {
  /** Read every pack (--read-data). */
  readData?: boolean;
  /** `n/t` (packs whose ID's first byte mod t = n−1), `x%` or a size (random packs), like restic. */
  readDataSubset?: string;
  progress?: ProgressFn;
  signal?: AbortSignal;
}

export type ProblemKind =
  | 'index' | 'index-duplicate-pack' | 'pack-missing' | 'pack-size' | 'pack-header' | 'pack-hash' | 'blob'
  | 'index-conflict' | 'snapshot' | 'tree' | 'tree-missing' | 'blob-missing' | 'pack-unreferenced';

export interface CheckProblem {
  kind: ProblemKind;
  /** The damaged (or suspicious) object: a pack, index, snapshot, tree or blob ID. */
  id: string;
  message: string;
}

export interface CheckResult {
  snapshots: number;
  indexFiles: number;
  packs: number;
  trees: number;
  /** Packs whose data was read (read-data). */
  packsRead: number;
  bytesRead: number;
  /** Problems that make the repository damaged. */
  errors: CheckProblem[];
  /** Harmless findings (unreferenced packs, duplicates): prune tidies them. */
  hints: CheckProblem[];
  damaged: boolean;
}

/** Validates --read-data-subset and returns a selector over pack IDs with sizes. */
export function parseReadDataSubset(spec: string): (packs: Map<string, number>) => Map<string, number> {
  const s = spec.trim();
  const nt = /^(\d+)\/(\d+)$/.exec(s);
  if (nt) {
    const n = Number(nt[1]);
    const t = Number(nt[2]);
    if (n === 0 || t === 0 || n > t) throw new UsageError('--read-data-subset n/t: n and t must be positive and n <= t, e.g. 1/5');
    if (t > 256) throw new UsageError('--read-data-subset n/t: t must be at most 256');
    return (packs) => new Map([...packs].filter(([id]) => parseInt(id.slice(0, 2), 16) % t === n - 1));
  }
  const random = (packs: Map<string, number>, pct: number) => {
    const ids = [...packs.keys()];
    let count = Math.floor(ids.length * (pct / 100));
    if (ids.length > 0 && count < 1) count = 1;
    for (let i = ids.length - 1; i > 0; i--) {
      const j = crypto.randomInt(i + 1);
      [ids[i], ids[j]] = [ids[j], ids[i]];
    }
    return new Map(ids.slice(0, count).map((id) => [id, packs.get(id)!]));
  };
  if (s.endsWith('%')) {
    const p = Number(s.slice(0, -1));
    if (s.length === 1 || !Number.isFinite(p) || p <= 0 || p > 100) throw new UsageError('--read-data-subset x%: x must be above 0% and at most 100%');
    return (packs) => random(packs, p);
  }
  const m = /^(\d+)([kKmMgGtT]?)$/.exec(s);
  if (!m) throw new UsageError(`invalid --read-data-subset ${JSON.stringify(spec)}`, 'use n/t (e.g. 2/5), a percentage (10%) or a size (500m)');
  const size = Number(m[1]) * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k'])!;
  if (size <= 0) throw new UsageError('--read-data-subset size must be above 0');
  return (packs) => {
    let total = 0;
    for (const v of packs.values()) total += v;
    if (total === 0) return new Map();
    return random(packs, (Math.min(size, total) / total) * 100);
  };
}

const entrySig = (b: PackedBlob) => `${b.type}:${b.id}:${b.offset}:${b.length}:${b.uncompressedLength}`;

/** Differences between what the index says about a pack and what its header says. */
function compareHeader(packId: string, index: readonly PackedBlob[], header: readonly PackedBlob[]): CheckProblem[] {
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

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export async function check(repo: Repository, opts: CheckOptions = {}): Promise<CheckResult> {
  const progress = throttleProgress(opts.progress ?? noProgress);
  const conc = Math.max(4, repo.backend.connections);
  const errors: CheckProblem[] = [];
  const hints: CheckProblem[] = [];
  const abortIfAsked = () => {
    if (opts.signal?.aborted) throw opts.signal.reason;
  };
  const selectSubset = opts.readDataSubset !== undefined ? parseReadDataSubset(opts.readDataSubset) : undefined;
  if (opts.readData && selectSubset) throw new UsageError('--read-data and --read-data-subset cannot be used together');

  // Snapshots are listed before the index is loaded (§17).
  const snapIds = await repo.listSnapshotFiles();
  const roots: { snap: string; tree: string }[] = [];
  await mapLimit(snapIds, conc, async (id) => {
    try {
      roots.push({ snap: id, tree: decodeSnapshot(await repo.loadSnapshotJson(id)).tree });
    } catch (err) {
      if (err instanceof DmctlError && err.code.startsWith('storage-') && err.code !== 'storage-not-found' && err.code !== 'storage-other') throw err;
      errors.push({ kind: 'snapshot', id, message: `snapshot ${id}: ${describe(err)}` });
    }
  });

  // Index files: each must decode; a pack listed twice must be listed the same way.
  const indexIds = await repo.list('index');
  const packIndex = new Map<string, { indexId: string; blobs: PackedBlob[]; sig: string }>();
  let indexDone = 0;
  await mapLimit(indexIds, conc, async (id) => {
    let f: IndexFile;
    try {
      f = decodeIndex(await repo.loadUnpacked('index', id), `index ${id}`);
    } catch (err) {
      if (err instanceof DmctlError && err.code.startsWith('storage-') && err.code !== 'storage-not-found' && err.code !== 'storage-other') throw err;
      errors.push({ kind: 'index', id, message: `index ${id}: ${describe(err)}` });
      return;
    }
    for (const p of f.packs) {
      const sig = p.blobs.map(entrySig).sort().join(',');
      const seen = packIndex.get(p.id);
      if (!seen) packIndex.set(p.id, { indexId: id, blobs: p.blobs, sig });
      else if (seen.sig !== sig) {
        errors.push({ kind: 'index-conflict', id: p.id, message: `pack ${p.id}: index files ${seen.indexId} and ${id} list different contents for it` });
      } else {
        hints.push({ kind: 'index-duplicate-pack', id: p.id, message: `pack ${p.id}: listed in index files ${seen.indexId} and ${id} (harmless; prune rewrites the index)` });
      }
    }
    repo.index.addFile(id, f);
    progress({ phase: 'index', filesDone: ++indexDone, filesTotal: indexIds.length });
  });

  // Packs: present, of the right size, with a header matching the index.
  abortIfAsked();
  const listed = new Map((await listAll(repo.backend, 'data')).map((f) => [f.name, f.size]));
  const goodPacks = new Map<string, number>();
  for (const [id, { blobs }] of packIndex) {
    const size = listed.get(id);
    if (size === undefined) {
      errors.push({ kind: 'pack-missing', id, message: `pack ${id}: does not exist (${blobs.length} blob(s) of the index are in it)` });
      continue;
    }
    const want = expectedPackSize(blobs);
    if (size !== want) {
      errors.push({ kind: 'pack-size', id, message: `pack ${id}: size ${size} does not match the size ${want} its index entries imply (truncated or damaged)` });
      continue;
    }
    goodPacks.set(id, size);
  }
  for (const [id, size] of listed) {
    if (!packIndex.has(id)) hints.push({ kind: 'pack-unreferenced', id, message: `pack ${id}: not referenced in any index (${size} bytes; harmless, prune deletes it)` });
  }
  const toRead = opts.readData ? new Map(goodPacks) : selectSubset ? selectSubset(goodPacks) : new Map<string, number>();
  let headersDone = 0;
  const headerPacks = [...goodPacks].filter(([id]) => !toRead.has(id));
  await mapLimit(headerPacks, conc, async ([id, size]) => {
    abortIfAsked();
    try {
      const header = await readPackHeader(repo.backend, repo.key, id, size);
      errors.push(...compareHeader(id, packIndex.get(id)!.blobs, header));
    } catch (err) {
      if (err instanceof DmctlError && err.code.startsWith('storage-') && err.code !== 'storage-not-found' && err.code !== 'storage-other') throw err;
      errors.push({ kind: 'pack-header', id, message: `pack ${id}: ${describe(err)}` });
    }
    progress({ phase: 'pack headers', filesDone: ++headersDone, filesTotal: headerPacks.length });
  });

  // Snapshots → trees → blobs.
  abortIfAsked();
  const trees = await checkTrees(repo, roots, errors, progress, opts.signal);

  // Data.
  let packsRead = 0;
  let bytesRead = 0;
  const readList = [...toRead];
  const threads = Math.max(1, Math.min(os.availableParallelism(), 8));
  const pool = readList.length > 1 ? VerifyPool.create(repo.key, threads) : undefined;
  try {
    // As many packs in flight as there are verifiers (reading is fast next to verifying).
    await mapLimit(readList, pool ? threads : 2, async ([id, size]) => {
      abortIfAsked();
      errors.push(...(await readPack(repo, id, size, packIndex.get(id)!.blobs, pool)));
      packsRead++;
      bytesRead += size;
      progress({ phase: 'read data', filesDone: packsRead, filesTotal: readList.length, bytesDone: bytesRead });
    });
  } finally {
    await pool?.close();
  }

  return {
    snapshots: snapIds.length,
    indexFiles: indexIds.length,
    packs: packIndex.size,
    trees,
    packsRead,
    bytesRead,
    errors,
    hints,
    damaged: errors.length > 0,
  };
}

/** Walks every snapshot's trees once each, recording structural problems. Returns trees checked. */
async function checkTrees(
  repo: Repository,
  roots: { snap: string; tree: string }[],
  errors: CheckProblem[],
  progress: ProgressFn,
  signal?: AbortSignal,
): Promise<number> {
  const seen = new Set<string>();
  const queue: { id: string; from: string }[] = [];
  for (const r of roots) {
    if (!seen.has(r.tree)) {
      seen.add(r.tree);
      queue.push({ id: r.tree, from: `snapshot ${r.snap}` });
    }
  }
  let done = 0;
  let active = 0;
  let fatal: unknown;
  const limit = Math.max(4, repo.backend.connections);
  const visit = async ({ id, from }: { id: string; from: string }): Promise<void> => {
    if (!repo.index.has('tree', id)) {
      errors.push({ kind: 'tree-missing', id, message: `tree ${id} (referenced by ${from}): not in the index` });
      return;
    }
    let nodes;
    try {
      nodes = decodeTree(await repo.loadBlob('tree', id));
    } catch (err) {
      if (err instanceof DmctlError && err.code.startsWith('storage-') && err.code !== 'storage-not-found' && err.code !== 'storage-other') throw err;
      errors.push({ kind: 'tree', id, message: `tree ${id}: cannot be loaded: ${describe(err)}` });
      return;
    }
    for (const n of nodes) {
      const name = JSON.stringify(n.name.toString('utf8'));
      switch (n.type) {
        case 'file':
          if (!n.content) {
            errors.push({ kind: 'tree', id, message: `tree ${id}: file ${name} has no content list` });
            break;
          }
          for (const c of n.content) {
            if (!repo.index.has('data', c)) errors.push({ kind: 'blob-missing', id: c, message: `data blob ${c} (file ${name} in tree ${id}): not in the index` });
          }
          break;
        case 'dir':
          if (!n.subtree) {
            errors.push({ kind: 'tree', id, message: `tree ${id}: dir ${name} has no subtree` });
            break;
          }
          if (!seen.has(n.subtree)) {
            seen.add(n.subtree);
            queue.push({ id: n.subtree, from: `dir ${name} in tree ${id}` });
          }
          break;
        case 'symlink': case 'dev': case 'chardev': case 'fifo': case 'socket':
          break;
        default:
          errors.push({ kind: 'tree', id, message: `tree ${id}: node ${name} has unknown type ${JSON.stringify(n.type)}` });
      }
    }
  };
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      if (fatal || signal?.aborted) {
        fatal ??= signal?.reason;
        if (active === 0) resolve();
        return;
      }
      while (active < limit && queue.length) {
        const item = queue.pop()!;
        active++;
        visit(item)
          .then(() => progress({ phase: 'trees', counters: { trees: ++done } }))
          .catch((err) => (fatal ??= err))
          .finally(() => {
            active--;
            pump();
          });
      }
      if (active === 0) resolve();
    };
    pump();
  });
  if (fatal) throw fatal;
  return seen.size;
}

/** Reads one whole pack and verifies it (on a worker thread when one is available). */
async function readPack(repo: Repository, id: string, size: number, indexBlobs: readonly PackedBlob[], pool: VerifyPool | undefined): Promise<CheckProblem[]> {
  let data: Buffer;
  try {
    data = await repo.backend.load('data', id, 0, size);
  } catch (err) {
    if (err instanceof DmctlError && err.code.startsWith('storage-') && err.code !== 'storage-not-found' && err.code !== 'storage-other') throw err;
    return [{ kind: 'pack-missing', id, message: `pack ${id}: cannot be read: ${describe(err)}` }];
  }
  if (pool) return pool.verify(id, data, indexBlobs);
  return verifyPackBytes(repo.key, id, data, indexBlobs);
}

/** A pack's bytes against its name, its header against the index, every blob's MAC and hash. */
export async function verifyPackBytes(key: MasterKey, id: string, data: Buffer, indexBlobs: readonly PackedBlob[], blobConcurrency = 4): Promise<CheckProblem[]> {
  const out: CheckProblem[] = [];
  const hash = crypto.createHash('sha256').update(data).digest('hex');
  if (hash !== id) out.push({ kind: 'pack-hash', id, message: `pack ${id}: content hash is ${hash}, not its name (the pack is damaged)` });
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
  await mapLimit(header, blobConcurrency, async (b) => {
    const what = `${b.type} blob ${b.id} in pack ${id}`;
    if (b.offset + b.length > data.length) {
      out.push({ kind: 'blob', id: b.id, message: `${what}: extends beyond the end of the pack` });
      return;
    }
    try {
      let plain = open(key, data.subarray(b.offset, b.offset + b.length), what);
      if (b.uncompressedLength) {
        plain = await decompress(plain, what);
        if (plain.length !== b.uncompressedLength) throw new Error(`decompressed size ${plain.length} != ${b.uncompressedLength}`);
      }
      if (crypto.createHash('sha256').update(plain).digest('hex') !== b.id) throw new Error('content does not match its ID');
    } catch (err) {
      out.push({ kind: 'blob', id: b.id, message: `${what}: ${describe(err)}` });
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Worker threads for --read-data: decryption, decompression and hashing of whole packs run on as
// many threads as there are cores, while the main thread only reads packs. This file is also the
// worker's entry point (see the bottom).

const WORKER_TAG = 'dmctl-check-verify';

interface VerifyRequest { seq: number; id: string; data: Uint8Array; blobs: PackedBlob[] }
interface VerifyReply { seq: number; problems: CheckProblem[] }

class VerifyPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly waiting: (() => void)[] = [];
  private readonly pending = new Map<number, (p: CheckProblem[]) => void>();
  private seq = 0;
  readonly owner = new Map<number, Worker>();

  private constructor() {}

  static create(key: MasterKey, size: number): VerifyPool | undefined {
    const pool = new VerifyPool();
    try {
      for (let i = 0; i < size; i++) {
        const w = new Worker(new URL(import.meta.url), { workerData: { tag: WORKER_TAG, key: { encrypt: key.encrypt, macK: key.macK, macR: key.macR } } });
        w.on('error', (err) => {
          // A worker that dies fails every request it holds.
          for (const [seq, done] of pool.pending) if (pool.owner.get(seq) === w) done([{ kind: 'pack-header', id: '', message: `verifier thread failed: ${describe(err)}` }]);
        });
        w.on('message', (m: VerifyReply) => {
          const done = pool.pending.get(m.seq);
          pool.pending.delete(m.seq);
          pool.owner.delete(m.seq);
          pool.release(w);
          done?.(m.problems);
        });
        pool.workers.push(w);
        pool.idle.push(w);
      }
    } catch {
      void pool.close();
      return undefined;
    }
    return pool;
  }

  private release(w: Worker): void {
    const next = this.waiting.shift();
    this.idle.push(w);
    next?.();
  }

  async verify(id: string, data: Buffer, blobs: readonly PackedBlob[]): Promise<CheckProblem[]> {
    while (!this.idle.length) await new Promise<void>((r) => this.waiting.push(r));
    const w = this.idle.pop()!;
    const seq = ++this.seq;
    // Hand the bytes over without a copy when the buffer owns its memory.
    const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
    const bytes = own ? data : Uint8Array.prototype.slice.call(data);
    return new Promise<CheckProblem[]>((resolve) => {
      this.pending.set(seq, resolve);
      this.owner.set(seq, w);
      w.postMessage({ seq, id, data: bytes, blobs: [...blobs] } satisfies VerifyRequest, [bytes.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

if (!isMainThread && (workerData as { tag?: string } | null)?.tag === WORKER_TAG) {
  const k = (workerData as { key: { encrypt: Uint8Array; macK: Uint8Array; macR: Uint8Array } }).key;
  const key: MasterKey = { encrypt: Buffer.from(k.encrypt), macK: Buffer.from(k.macK), macR: Buffer.from(k.macR) };
  parentPort!.on('message', (req: VerifyRequest) => {
    const data = Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength);
    // One blob at a time: the threads already run in parallel, and memory stays at about one pack.
    verifyPackBytes(key, req.id, data, req.blobs, 1).then(
      (problems) => parentPort!.postMessage({ seq: req.seq, problems } satisfies VerifyReply),
      (err) => parentPort!.postMessage({ seq: req.seq, problems: [{ kind: 'pack-header', id: req.id, message: `pack ${req.id}: ${describe(err)}` }] } satisfies VerifyReply),
    );
  });
}
