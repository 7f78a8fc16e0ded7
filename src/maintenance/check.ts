// check: is every byte a snapshot needs there and intact? Structure (index files decode, every
// indexed pack exists with the size its index entries imply and a header that agrees with them,
// every snapshot's trees decode and reference only indexed blobs), and optionally the data itself
// (--read-data / --read-data-subset: every pack's SHA-256 equals its name, every blob's MAC and
// SHA-256 are right). Problems are collected, each naming the object, never thrown: a damaged
// repository is an answer, not a failure of check.

import crypto from 'node:crypto';
import { UsageError, isStorageOutage } from '../core/errors.js';
import { mapLimit } from '../core/limit.js';
import { ProgressFn, noProgress, throttleProgress } from '../core/progress.js';
import { listAll } from '../storage/backend.js';
import { decodeIndex, IndexFile } from '../repository/index-file.js';
import { expectedPackSize, PackedBlob, readPackHeader } from '../repository/pack.js';
import { Repository } from '../repository/repository.js';
import { decodeSnapshot } from '../repository/snapshot.js';
import { compareHeader, describe, entrySig, verifyPackBytes } from './verify-pack.js';
import type { VerifyJob } from './verify-worker.js';
import { WorkerPool, workerCount } from '../core/worker-pool.js';
import { masterKeyData, type MasterKey } from '../repository/crypto.js';

export interface CheckOptions {
  /** Read every pack (--read-data). */
  readData?: boolean;
  /** `n/t` (packs whose ID's first byte mod t = n−1), `x%` or a size (random packs), like restic. */
  readDataSubset?: string;
  progress?: ProgressFn;
  signal?: AbortSignal;
  /** Snapshot and index files read ahead (while the lock was being taken); see MetadataPrefetch. */
  prefetched?: MetadataPrefetch;
}

/**
 * Snapshot and index files read ahead of check, e.g. while the lock waits out its 200 ms recheck.
 * Safe without the lock: a file's name is the hash of its content, so a file read early is the file
 * read late; check still lists the repository under the lock and uses only what that listing names
 * (anything not read ahead, or that failed, is read then, and its errors reported then). Read ahead
 * up to a budget of bytes, so a huge index is not held twice.
 */
export class MetadataPrefetch {
  private readonly files = new Map<string, Promise<Buffer | undefined>>();
  private bytes = 0;
  private stopped = false;
  readonly done: Promise<void>;

  constructor(
    private readonly repo: Repository,
    private readonly budget = 64 * 1024 * 1024,
  ) {
    this.done = this.run().catch(() => {});
  }

  private async run(): Promise<void> {
    for (const type of ['snapshots', 'index'] as const) {
      const ids = await this.repo.list(type);
      await mapLimit(ids, Math.max(4, this.repo.backend.connections), async (id) => {
        if (this.stopped || this.bytes >= this.budget) return;
        const p = this.repo.loadUnpacked(type, id).then(
          (b) => {
            this.bytes += b.length;
            return b;
          },
          () => undefined,
        );
        this.files.set(`${type}/${id}`, p);
        await p;
      });
    }
  }

  /** The file if it was read ahead (handed out once), else undefined. */
  take(type: 'snapshots' | 'index', id: string): Promise<Buffer | undefined> | undefined {
    const p = this.files.get(`${type}/${id}`);
    this.files.delete(`${type}/${id}`);
    return p;
  }

  stop(): void {
    this.stopped = true;
    this.files.clear();
  }
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

/** A pack's entries as one comparable string (only for packs listed by more than one index file). */
const packSig = (blobs: readonly PackedBlob[]) => blobs.map(entrySig).sort().join(',');


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

  const load = async (type: 'snapshots' | 'index', id: string): Promise<Buffer> => (await opts.prefetched?.take(type, id)) ?? repo.loadUnpacked(type, id);

  // Snapshots are listed before the index is loaded (§17).
  const snapIds = await repo.listSnapshotFiles();
  const roots: { snap: string; tree: string }[] = [];
  await mapLimit(snapIds, conc, async (id) => {
    try {
      roots.push({ snap: id, tree: decodeSnapshot(await load('snapshots', id)).tree });
    } catch (err) {
      if (isStorageOutage(err)) throw err;
      errors.push({ kind: 'snapshot', id, message: `snapshot ${id}: ${describe(err)}` });
    }
  });

  // Index files: each must decode; a pack listed twice must be listed the same way.
  const indexIds = await repo.list('index');
  const packIndex = new Map<string, { indexId: string; blobs: PackedBlob[] }>();
  let indexDone = 0;
  await mapLimit(indexIds, conc, async (id) => {
    let f: IndexFile;
    try {
      f = decodeIndex(await load('index', id), `index ${id}`);
    } catch (err) {
      if (isStorageOutage(err)) throw err;
      errors.push({ kind: 'index', id, message: `index ${id}: ${describe(err)}` });
      return;
    }
    for (const p of f.packs) {
      const seen = packIndex.get(p.id);
      if (!seen) packIndex.set(p.id, { indexId: id, blobs: p.blobs });
      else if (packSig(seen.blobs) !== packSig(p.blobs)) {
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
      if (isStorageOutage(err)) throw err;
      errors.push({ kind: 'pack-header', id, message: `pack ${id}: ${describe(err)}` });
    }
    progress({ phase: 'pack headers', filesDone: ++headersDone, filesTotal: headerPacks.length });
  });

  // Snapshots → trees → blobs, on this thread, while the packs' data is verified in the workers:
  // the walk uses about one core, verification the others.
  abortIfAsked();
  const treeErrors: CheckProblem[] = [];
  const walking = checkTrees(repo, roots, treeErrors, progress, opts.signal);
  let walkFailed = false;
  walking.catch(() => (walkFailed = true)); // awaited below (its error is the one reported); stops the reading

  // Data: whole packs verified in worker threads, one per core (verify-worker.ts); where workers
  // cannot start, on this thread with large blobs' work on libuv's pool (verifyPackBytes).
  const dataErrors: CheckProblem[] = [];
  let packsRead = 0;
  let bytesRead = 0;
  const readList = [...toRead];
  const verifier = readList.length ? startVerifier(repo.key) : undefined;
  // One more pack in flight than there are workers: the next one is read while they verify.
  const inFlight = (verifier?.size ?? 1) + 1;
  const slots = new PackSlots(readList.reduce((m, [, size]) => Math.max(m, size), 0), inFlight);
  try {
    await mapLimit(readList, inFlight, async ([id, size]) => {
      abortIfAsked();
      if (walkFailed) return;
      dataErrors.push(...(await readPack(repo, id, size, packIndex.get(id)!.blobs, slots, verifier?.pool)));
      packsRead++;
      bytesRead += size;
      progress({ phase: 'read data', filesDone: packsRead, filesTotal: readList.length, bytesDone: bytesRead });
    });
  } finally {
    await verifier?.pool.close();
  }
  const trees = await walking;
  errors.push(...treeErrors, ...dataErrors);

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

/** The fields of a tree node that check looks at. */
interface CheckedNode { name: string; type: string; content: string[] | null; subtree: string | undefined }

const HEX_ID = /^[0-9a-f]{64}$/;

/**
 * Decodes a tree for the structural check with the engine's JSON parser: check needs only each
 * node's type, name (for messages), content and subtree, not the byte-exact node the restorer needs
 * (names of any bytes, 64-bit numbers), and a tree walk of a large repository is dominated by
 * decoding. Anything that is not a well-formed tree is an error.
 */
function scanTree(buf: Buffer): CheckedNode[] {
  let doc: unknown;
  try {
    doc = JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw new Error(`tree is not valid JSON (${describe(err)})`);
  }
  const nodes = (doc as { nodes?: unknown } | null)?.nodes;
  if (!Array.isArray(nodes)) throw new Error('tree has no "nodes" list');
  const out: CheckedNode[] = new Array(nodes.length);
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i] as Record<string, unknown> | null;
    if (n === null || typeof n !== 'object') throw new Error(`node ${i} is not an object`);
    const { name, type, content, subtree } = n;
    if (typeof name !== 'string') throw new Error(`node ${i} has no name`);
    if (typeof type !== 'string') throw new Error(`node ${JSON.stringify(name)} has no type`);
    if (content !== undefined && content !== null && !(Array.isArray(content) && content.every((c) => typeof c === 'string' && HEX_ID.test(c)))) {
      throw new Error(`node ${JSON.stringify(name)}: "content" is not a list of blob IDs`);
    }
    if (subtree !== undefined && subtree !== null && !(typeof subtree === 'string' && HEX_ID.test(subtree))) {
      throw new Error(`node ${JSON.stringify(name)}: "subtree" is not a tree ID`);
    }
    out[i] = { name, type, content: (content as string[] | null | undefined) ?? null, subtree: (subtree as string | null | undefined) ?? undefined };
  }
  return out;
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
  // Tree loads are small and latency-bound (a read, then decompression on the thread pool): keep many in flight.
  const limit = Math.max(16, repo.backend.connections * 2);
  const visit = async ({ id, from }: { id: string; from: string }): Promise<void> => {
    if (!repo.index.has('tree', id)) {
      errors.push({ kind: 'tree-missing', id, message: `tree ${id} (referenced by ${from}): not in the index` });
      return;
    }
    let nodes: CheckedNode[];
    try {
      nodes = scanTree(await repo.loadBlob('tree', id));
    } catch (err) {
      if (isStorageOutage(err)) throw err;
      errors.push({ kind: 'tree', id, message: `tree ${id}: cannot be loaded: ${describe(err)}` });
      return;
    }
    for (const n of nodes) {
      const name = JSON.stringify(n.name);
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

/** Worker threads that verify packs (verify-worker.ts); undefined where they cannot start. */
function startVerifier(key: MasterKey): { pool: WorkerPool; size: number } | undefined {
  const size = workerCount();
  try {
    // A small young generation, as the restore and seal workers have: with V8's default each worker
    // reserved and touched ~37 MB of new space for objects that live one blob.
    return { pool: new WorkerPool(new URL('./verify-worker.js', import.meta.url), size, masterKeyData(key), { maxYoungGenerationSizeMb: 4 }), size };
  } catch {
    return undefined;
  }
}

/** Largest pack read into a reused buffer; a larger one (restic's --pack-size goes to 128 MiB) gets its own. */
const SLOT_MAX = 64 * 1024 * 1024;

/**
 * The buffers packs are read into for verification: shared memory, so a worker verifies the pack
 * where it was read, and reused, so reading 600 MB of packs allocates the same few buffers (each
 * the size of the largest pack) instead of a new 16 MiB one per pack left for the GC to find.
 */
class PackSlots {
  private readonly free: SharedArrayBuffer[] = [];
  private made = 0;
  constructor(
    private readonly slotSize: number,
    private readonly count: number,
  ) {}

  take(size: number): SharedArrayBuffer {
    if (size > this.slotSize || this.slotSize > SLOT_MAX) return new SharedArrayBuffer(size);
    const s = this.free.pop();
    if (s) return s;
    if (this.made >= this.count) throw new Error('internal error: more packs in flight than buffers');
    this.made++;
    return new SharedArrayBuffer(this.slotSize);
  }

  give(s: SharedArrayBuffer): void {
    if (s.byteLength === this.slotSize && this.slotSize <= SLOT_MAX) this.free.push(s);
  }
}

/** Reads one whole pack into `data` (its exact size); a problem instead when it cannot be read. */
async function loadPackInto(repo: Repository, id: string, data: Buffer): Promise<CheckProblem[] | undefined> {
  try {
    if (repo.backend.loadInto) await repo.backend.loadInto('data', id, 0, data);
    else data.set(await repo.backend.load('data', id, 0, data.length));
    return undefined;
  } catch (err) {
    if (isStorageOutage(err)) throw err;
    return [{ kind: 'pack-missing', id, message: `pack ${id}: cannot be read: ${describe(err)}` }];
  }
}

/** Reads one whole pack and verifies it, in a worker thread when there are some. */
async function readPack(repo: Repository, id: string, size: number, indexBlobs: readonly PackedBlob[], slots: PackSlots, pool?: WorkerPool): Promise<CheckProblem[]> {
  if (pool) {
    const slot = slots.take(size);
    try {
      const unreadable = await loadPackInto(repo, id, Buffer.from(slot, 0, size));
      if (unreadable) return unreadable;
      return await pool.run<CheckProblem[]>({ id, buf: slot, size, blobs: indexBlobs } satisfies VerifyJob);
    } catch (err) {
      if (isStorageOutage(err)) throw err;
      // The worker failed (not the pack: problems are answers, not errors), maybe halfway through
      // decrypting it in place: verify here instead, below.
    } finally {
      slots.give(slot);
    }
  }
  // On this thread, from a buffer of its own: WebCrypto (large blobs) refuses shared memory.
  let data: Buffer;
  try {
    data = await repo.backend.load('data', id, 0, size);
  } catch (err) {
    if (isStorageOutage(err)) throw err;
    return [{ kind: 'pack-missing', id, message: `pack ${id}: cannot be read: ${describe(err)}` }];
  }
  return verifyPackBytes(repo.key, id, data, indexBlobs);
}
