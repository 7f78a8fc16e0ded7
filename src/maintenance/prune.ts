// prune (reference §14, restic 0.14's planner): find the blobs every snapshot still needs, decide per
// pack whether to keep, repack or delete it, then change the repository in the one order that is
// safe to interrupt at any moment (§14.8, §17):
//   1. delete packs no index mentions (left by interrupted backups or prunes);
//   2. repack: copy still-needed blobs of partly used packs into new packs (+ an index for them);
//   3. write new index files for every kept pack, `supersedes` naming every old index file;
//   4. delete the old index files;
//   5. delete the packs that were emptied or repacked.
// Until step 3 is complete every old index file is still there; after it the new files already
// describe every pack that stays. Nothing a snapshot needs is unreachable at any point.

import { IntegrityError, UsageError } from '../core/errors.js';
import { mapLimit } from '../core/limit.js';
import { ProgressFn, noProgress, throttleProgress } from '../core/progress.js';
import { listAll } from '../storage/backend.js';
import { encodeIndex, IndexPack } from '../repository/index-file.js';
import { RepoLock } from '../repository/lock.js';
import { BlobType, PackedBlob, entrySize } from '../repository/pack.js';
import { DEFAULT_PACK_SIZE, Repository } from '../repository/repository.js';
import { decodeSnapshot } from '../repository/snapshot.js';
import { decodeTree, type Node } from '../repository/tree.js';
import { OVERHEAD } from '../repository/crypto.js';

/**
 * A set of blobs: one set of IDs per type. Keyed by the ID strings themselves (no `type + id` key
 * built per lookup): the index's strings keep their hash once computed, so a pass over every index
 * entry costs no allocation.
 */
export type BlobSets = Record<BlobType, Set<string>>;
export const newBlobSets = (): BlobSets => ({ data: new Set(), tree: new Set() });
const blobCount = (s: BlobSets): number => s.data.size + s.tree.size;

/** Blobs per index file, as restic cuts them (150 000 in compressed repositories). */
const INDEX_MAX_BLOBS = { 1: 50_000, 2: 150_000 } as const;

// ---------------------------------------------------------------------------------------------
// Sizes and options

/** restic's size syntax: plain bytes, or k/K, m/M, g/G, t/T = ×1024^n. */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+)\s*([kKmMgGtT]?)\s*$/.exec(text);
  if (!m) throw new UsageError(`invalid size ${JSON.stringify(text)} for ${what}`, 'use bytes or a number with k, m, g or t (powers of 1024), e.g. 500m');
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * mult;
}

/** --max-unused: `unlimited`, `P%` (0 ≤ P < 100) or an absolute size. Returns bytes allowed given used bytes. */
export function parseMaxUnused(text: string): (used: number) => number {
  const s = text.trim();
  if (s === '') throw new UsageError('invalid value for --max-unused: ""', 'use a percentage (5%), a size (100m) or unlimited');
  if (s === 'unlimited') return () => Infinity;
  if (s.endsWith('%')) {
    const p = Number(s.slice(0, -1));
    if (s.length === 1 || !Number.isFinite(p)) throw new UsageError(`invalid percentage ${JSON.stringify(text)} for --max-unused`, 'e.g. --max-unused 5%');
    if (p < 0) throw new UsageError('percentage for --max-unused must be positive');
    if (p >= 100) throw new UsageError('percentage for --max-unused must be below 100%', 'use --max-unused unlimited to keep all unused data');
    return (used) => Math.floor((p / (100 - p)) * used);
  }
  const size = parseSize(s, '--max-unused');
  return () => size;
}

export interface PruneOptions {
  /** Default "5%". */
  maxUnused?: string;
  /** Bytes; default unlimited. */
  maxRepackBytes?: number;
  repackCacheableOnly?: boolean;
  repackSmall?: boolean;
  repackUncompressed?: boolean;
  dryRun?: boolean;
  progress?: ProgressFn;
  signal?: AbortSignal;
  /** The caller already holds an exclusive lock (forget --prune). Otherwise prune takes one. */
  locked?: boolean;
  retryLockMs?: number;
  /** Target pack size of the repository (restic's --pack-size); default 16 MiB. */
  packSize?: number;
}

// ---------------------------------------------------------------------------------------------
// Used blobs

/** Loads every snapshot; any snapshot that cannot be read aborts (its blobs would look unused). */
export async function loadAllSnapshotTrees(repo: Repository, progress: ProgressFn = noProgress): Promise<{ id: string; tree: string }[]> {
  const ids = await repo.listSnapshotFiles();
  const out: { id: string; tree: string }[] = [];
  await mapLimit(ids, Math.max(4, repo.backend.connections), async (id) => {
    let tree: string;
    try {
      tree = decodeSnapshot(await repo.loadSnapshotJson(id)).tree;
    } catch (err) {
      throw new IntegrityError(`snapshot ${id}: cannot be loaded: ${(err as Error).message}`, {
        cause: err,
        hint: 'nothing was deleted; run `dmctl check`, then remove or repair the damaged snapshot',
      });
    }
    out.push({ id, tree });
    progress({ phase: 'snapshots', filesDone: out.length, filesTotal: ids.length });
  });
  return out;
}

const QUOTE = 0x22;
const CONTENT_KEY = Buffer.from('"content"');
const SUBTREE_KEY = Buffer.from('"subtree"');

const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
const isHex = (c: number): boolean => (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66);

/** The blob ID in quotes at `at` (64 lower-case hex digits), or undefined. */
function quotedId(buf: Buffer, at: number): string | undefined {
  if (buf[at] !== QUOTE || buf[at + 65] !== QUOTE) return undefined;
  for (let k = at + 1; k <= at + 64; k++) if (!isHex(buf[k])) return undefined;
  return buf.toString('latin1', at + 1, at + 65);
}

/**
 * The data blobs (`content`) and subtrees a tree's JSON references, found without parsing the rest
 * (a prune's walk spent most of its time building node objects it threw away). Only for JSON with
 * no backslash at all: without escapes every quote delimits a string, so `"content"` followed by a
 * colon can only be a key, and no key can be spelled another way (`"cont\u0065nt"`). Returns
 * undefined for anything else (escapes, an unexpected value): the caller then parses the tree.
 * A tree's bytes are verified against its ID before this runs, so they are what their writer wrote.
 */
export function scanTreeRefs(buf: Buffer): { content: string[]; subtrees: string[] } | undefined {
  if (buf.indexOf(0x5c) >= 0) return undefined;
  const content: string[] = [];
  const subtrees: string[] = [];
  const valueAt = (i: number): number => {
    while (isSpace(buf[i])) i++;
    if (buf[i] !== 0x3a) return -1; // not followed by a colon: a value, not a key
    i++;
    while (isSpace(buf[i])) i++;
    return i;
  };
  const isNull = (i: number): boolean => buf[i] === 0x6e && buf[i + 1] === 0x75 && buf[i + 2] === 0x6c && buf[i + 3] === 0x6c;
  for (let i = buf.indexOf(CONTENT_KEY); i >= 0; i = buf.indexOf(CONTENT_KEY, i)) {
    let v = valueAt(i + CONTENT_KEY.length);
    i += CONTENT_KEY.length;
    if (v < 0) continue;
    if (isNull(v)) continue;
    if (buf[v] !== 0x5b) return undefined;
    v++;
    while (isSpace(buf[v])) v++;
    if (buf[v] === 0x5d) continue;
    for (;;) {
      const id = quotedId(buf, v);
      if (!id) return undefined;
      content.push(id);
      v += 66;
      while (isSpace(buf[v])) v++;
      if (buf[v] === 0x5d) break;
      if (buf[v] !== 0x2c) return undefined;
      v++;
      while (isSpace(buf[v])) v++;
    }
    i = v;
  }
  for (let i = buf.indexOf(SUBTREE_KEY); i >= 0; i = buf.indexOf(SUBTREE_KEY, i)) {
    const v = valueAt(i + SUBTREE_KEY.length);
    i += SUBTREE_KEY.length;
    if (v < 0 || isNull(v)) continue;
    const id = quotedId(buf, v);
    if (!id) return undefined;
    subtrees.push(id);
  }
  return { content, subtrees };
}

/** content and subtree references of a tree: scanned when it is plain, else decoded as restic reads it. */
function treeRefs(buf: Buffer, id: string): { content: string[]; subtrees: string[] } {
  const scanned = scanTreeRefs(buf);
  if (scanned) return scanned;
  let nodes: Node[];
  try {
    nodes = decodeTree(buf);
  } catch (err) {
    throw new IntegrityError(`tree ${id}: ${(err as Error).message}`, { cause: err, hint: 'nothing was deleted; run `dmctl check`' });
  }
  const content: string[] = [];
  const subtrees: string[] = [];
  for (const n of nodes) {
    if (n.content) content.push(...n.content);
    if (n.subtree) subtrees.push(n.subtree);
  }
  return { content, subtrees };
}

/**
 * Every blob reachable from `roots` (tree blobs and the data blobs of files), by walking the trees.
 * `seen` may carry blobs from earlier calls (their subtrees are not walked again).
 */
export async function findUsedBlobs(
  repo: Repository,
  roots: readonly string[],
  seen: BlobSets = newBlobSets(),
  progress: ProgressFn = noProgress,
  signal?: AbortSignal,
): Promise<BlobSets> {
  const queue: string[] = [];
  for (const r of roots) {
    if (!seen.tree.has(r)) {
      seen.tree.add(r);
      queue.push(r);
    }
  }
  let done = 0;
  let active = 0;
  let failure: unknown;
  // Tree loads are small and latency-bound (a read, then decompression on the thread pool): keep many in flight.
  const limit = Math.max(16, repo.backend.connections * 2);
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      if (failure || signal?.aborted) {
        failure ??= signal?.reason;
        if (active === 0) resolve();
        return;
      }
      while (active < limit && queue.length) {
        const id = queue.pop()!;
        active++;
        repo
          .loadBlob('tree', id)
          .then((buf) => {
            const refs = treeRefs(buf, id);
            for (const c of refs.content) seen.data.add(c);
            for (const sub of refs.subtrees) {
              if (!seen.tree.has(sub)) {
                seen.tree.add(sub);
                queue.push(sub);
              }
            }
            done++;
            progress({ phase: 'trees', counters: { trees: done } });
          })
          .catch((err) => {
            failure ??= err;
          })
          .finally(() => {
            active--;
            pump();
          });
      }
      if (active === 0) resolve();
    };
    pump();
  });
  if (failure) throw failure;
  return seen;
}

// ---------------------------------------------------------------------------------------------
// The plan

interface PackInfo {
  usedBlobs: number;
  unusedBlobs: number;
  usedSize: number;
  unusedSize: number;
  /** 'data', 'tree' or 'mixed'; undefined until the first blob. */
  tpe?: BlobType | 'mixed';
  uncompressed: boolean;
  /** After classification: must be repacked to compress it. */
  mustCompress?: boolean;
}

export interface PruneStats {
  blobs: { used: number; duplicate: number; unused: number; remove: number; repack: number; repackrm: number };
  size: { used: number; duplicate: number; unused: number; remove: number; repack: number; repackrm: number; unref: number };
  packs: { used: number; unused: number; partlyUsed: number; unref: number; keep: number; repack: number; remove: number };
}

export interface PrunePlan {
  /** Packs no index mentions (deleted first), with their sizes. */
  removeFirst: Map<string, number>;
  /** Packs to repack. */
  repack: Set<string>;
  /** Packs without any used blob. */
  remove: Set<string>;
  /** Packs the index mentions that are missing and not needed (left out of the new index). */
  ignore: Set<string>;
  /** Blobs to copy out of the repacked packs. */
  keepBlobs: BlobSets;
  /** Real pack sizes from the listing. */
  packSizes: Map<string, number>;
  stats: PruneStats;
}

function newStats(): PruneStats {
  return {
    blobs: { used: 0, duplicate: 0, unused: 0, remove: 0, repack: 0, repackrm: 0 },
    size: { used: 0, duplicate: 0, unused: 0, remove: 0, repack: 0, repackrm: 0, unref: 0 },
    packs: { used: 0, unused: 0, partlyUsed: 0, unref: 0, keep: 0, repack: 0, remove: 0 },
  };
}

/** Plans a prune (restic 0.14's planPrune). The index must be loaded. Changes nothing. */
export async function planPrune(repo: Repository, used: BlobSets, opts: PruneOptions = {}): Promise<PrunePlan> {
  const stats = newStats();
  const index = repo.index;
  const progress = opts.progress ?? noProgress;
  const maxUnusedAfter = parseMaxUnused(opts.maxUnused ?? '5%');
  const maxRepack = opts.maxRepackBytes ?? Infinity;
  if (opts.repackUncompressed && repo.version < 2) {
    throw new UsageError('--repack-uncompressed needs repository format version 2');
  }

  // 1. used / duplicate / unused, over every index entry (a blob may sit in several packs).
  const keep = newBlobSets();
  const duplicates: Record<BlobType, Map<string, number>> = { data: new Map(), tree: new Map() };
  let duplicateCount = 0;
  for (const blobs of index.packs.values()) {
    for (const b of blobs) {
      if (!used[b.type].has(b.id)) {
        stats.size.unused += b.length;
        stats.blobs.unused++;
      } else if (!keep[b.type].has(b.id)) {
        keep[b.type].add(b.id);
        stats.size.used += b.length;
        stats.blobs.used++;
      } else {
        const d = duplicates[b.type];
        const before = d.get(b.id);
        if (before === undefined) duplicateCount++;
        d.set(b.id, Math.min((before ?? 1) + 1, 255));
        stats.size.duplicate += b.length;
        stats.blobs.duplicate++;
      }
    }
  }
  const missing = blobCount(used) - blobCount(keep);
  if (missing) {
    const list: string[] = [];
    for (const type of ['tree', 'data'] as const) {
      for (const id of used[type]) {
        if (list.length < 5 && !keep[type].has(id)) list.push(`${type} blob ${id}`);
      }
    }
    throw new IntegrityError(
      `index is not complete: ${missing} blob(s) used by snapshots are in no index file (${list.join(', ')}${missing > 5 ? ', …' : ''})`,
      { hint: 'nothing was deleted; run `dmctl check` to see what is damaged' },
    );
  }

  // 2. Per pack: used and unused bytes (header counted as used), type, compression.
  const info = new Map<string, PackInfo>();
  for (const [packId, blobs] of index.packs) {
    const p: PackInfo = { usedBlobs: 0, unusedBlobs: 0, usedSize: 4 + OVERHEAD, unusedSize: 0, uncompressed: false };
    for (const b of blobs) {
      p.usedSize += entrySize(b);
      if (p.tpe === undefined) p.tpe = b.type;
      else if (p.tpe !== b.type) p.tpe = 'mixed';
      if (duplicates[b.type].has(b.id)) {
        // decided below
      } else if (keep[b.type].has(b.id)) {
        p.usedSize += b.length;
        p.usedBlobs++;
      } else {
        p.unusedSize += b.length;
        p.unusedBlobs++;
      }
      if (!b.uncompressedLength) p.uncompressed = true;
    }
    info.set(packId, p);
  }
  if (duplicateCount) {
    // One copy of each duplicate counts as used: preferably in a pack that holds used blobs anyway.
    for (const [packId, blobs] of index.packs) {
      const p = info.get(packId)!;
      for (const b of blobs) {
        const dups = duplicates[b.type];
        const count = dups.get(b.id);
        if (count === undefined) continue;
        if (count === 0) {
          p.unusedSize += b.length;
          p.unusedBlobs++;
        } else if (p.usedBlobs > 0 || count === 1) {
          p.usedSize += b.length;
          p.usedBlobs++;
          dups.set(b.id, 0);
        } else {
          p.unusedSize += b.length;
          p.unusedBlobs++;
          dups.set(b.id, count - 1);
        }
      }
    }
  }

  // 3. Walk the real pack listing (sizes matter).
  const targetPackSize = opts.repackSmall ? Math.floor(((opts.packSize ?? DEFAULT_PACK_SIZE) / 5) * 4) : Math.floor((opts.packSize ?? DEFAULT_PACK_SIZE) / 25);
  const removeFirst = new Map<string, number>();
  const remove = new Set<string>();
  const repack = new Set<string>();
  const packSizes = new Map<string, number>();
  type Cand = { id: string; p: PackInfo };
  const candidates: Cand[] = [];
  const smallCandidates: Cand[] = [];
  const listing = await listAll(repo.backend, 'data');
  const unlisted = new Set(info.keys());
  let n = 0;
  for (const { name: id, size } of listing) {
    packSizes.set(id, size);
    const p = info.get(id);
    progress({ phase: 'plan', filesDone: ++n, filesTotal: listing.length });
    if (!p) {
      removeFirst.set(id, size);
      stats.size.unref += size;
      continue;
    }
    unlisted.delete(id);
    if (p.unusedSize + p.usedSize !== size && p.usedBlobs !== 0) {
      throw new IntegrityError(`pack ${id}: calculated size ${p.unusedSize + p.usedSize} does not match real size ${size}`, {
        hint: 'nothing was deleted; the pack is damaged or the index is wrong: run `dmctl check --read-data`',
      });
    }
    if (p.usedBlobs === 0) stats.packs.unused++;
    else if (p.unusedBlobs === 0) stats.packs.used++;
    else stats.packs.partlyUsed++;
    p.mustCompress = repo.version >= 2 && (p.tpe === 'tree' || Boolean(opts.repackUncompressed)) && p.uncompressed;
    if (p.usedBlobs === 0) {
      remove.add(id);
      stats.blobs.remove += p.unusedBlobs;
      stats.size.remove += p.unusedSize;
    } else if (opts.repackCacheableOnly && p.tpe === 'data') {
      stats.packs.keep++;
    } else if (p.unusedBlobs === 0 && p.tpe !== 'mixed' && !p.mustCompress) {
      if (size >= targetPackSize) stats.packs.keep++;
      else smallCandidates.push({ id, p });
    } else {
      candidates.push({ id, p });
    }
  }

  // Packs the index names but the storage lacks: harmless if unneeded, fatal otherwise.
  const ignore = new Set<string>();
  const missingNeeded: string[] = [];
  for (const id of unlisted) {
    const p = info.get(id)!;
    if (p.usedBlobs === 0) {
      ignore.add(id);
      stats.blobs.remove += p.unusedBlobs;
      stats.size.remove += p.unusedSize;
    } else missingNeeded.push(id);
  }
  if (missingNeeded.length) {
    throw new IntegrityError(
      `the index references ${missingNeeded.length} needed pack file(s) missing from the repository: ${missingNeeded.slice(0, 5).join(', ')}${missingNeeded.length > 5 ? ', …' : ''}`,
      { hint: 'nothing was deleted; run `dmctl check` to see which snapshots are affected' },
    );
  }

  if (smallCandidates.length < 10) stats.packs.keep += smallCandidates.length;
  else candidates.push(...smallCandidates);

  const total = (p: PackInfo) => p.unusedSize + p.usedSize;
  candidates.sort((a, b) => {
    const pi = a.p;
    const pj = b.p;
    if (pi.tpe !== 'data' && pj.tpe === 'data') return -1;
    if (pj.tpe !== 'data' && pi.tpe === 'data') return 1;
    if (total(pi) < targetPackSize && total(pj) >= targetPackSize) return -1;
    if (total(pj) < targetPackSize && total(pi) >= targetPackSize) return 1;
    const l = pi.unusedSize * pj.usedSize;
    const r = pj.unusedSize * pi.usedSize;
    return l > r ? -1 : l < r ? 1 : 0;
  });

  const maxUnused = maxUnusedAfter(stats.size.used);
  for (const { id, p } of candidates) {
    const reachedUnusedAfter = stats.size.unused - stats.size.remove - stats.size.repackrm < maxUnused;
    const reachedRepackSize = stats.size.repack + total(p) >= maxRepack;
    const largeEnough = total(p) >= targetPackSize;
    if (reachedRepackSize) stats.packs.keep++;
    else if (p.tpe !== 'data' || p.mustCompress || (!(reachedUnusedAfter && largeEnough))) {
      repack.add(id);
      stats.blobs.repack += p.unusedBlobs + p.usedBlobs;
      stats.size.repack += total(p);
      stats.blobs.repackrm += p.unusedBlobs;
      stats.size.repackrm += p.unusedSize;
    } else stats.packs.keep++;
  }
  stats.packs.unref = removeFirst.size;
  stats.packs.repack = repack.size;
  stats.packs.remove = remove.size;

  // Blobs to copy while repacking: needed ones not already present in a pack that stays.
  let keepBlobs = newBlobSets();
  if (repack.size) {
    keepBlobs = keep;
    for (const [packId, blobs] of index.packs) {
      if (remove.has(packId) || repack.has(packId) || ignore.has(packId)) continue;
      for (const b of blobs) keepBlobs[b.type].delete(b.id);
    }
  }
  return { removeFirst, repack, remove, ignore, keepBlobs, packSizes, stats };
}

// ---------------------------------------------------------------------------------------------
// Execution

export interface PruneResult {
  dryRun: boolean;
  stats: PruneStats;
  /** Bytes the prune frees (or would free): unreferenced + removed packs + unused parts of repacked packs. */
  spaceFreed: number;
  /** Packs deleted (or that would be): unreferenced, unused and repacked ones. */
  packsDeleted: number;
  packsRepacked: number;
  packsKept: number;
  /** Packs written by repacking. */
  packsWritten: number;
  indexFilesWritten: number;
  indexFilesDeleted: number;
  /** IDs, for --dry-run's plan and for -v. */
  plan: { unreferenced: string[]; repack: string[]; remove: string[]; missingUnused: string[] };
}

/** Removes files with bounded concurrency, reporting progress. */
async function removeFiles(repo: Repository, type: 'data' | 'index', ids: Iterable<string>, progress: ProgressFn, phase: string): Promise<number> {
  const list = [...ids];
  let done = 0;
  await mapLimit(list, Math.max(2, repo.backend.connections), async (id) => {
    await repo.backend.remove(type, id);
    progress({ phase, filesDone: ++done, filesTotal: list.length });
  });
  return list.length;
}

/** Copies the blobs in plan.keepBlobs out of the repacked packs into new packs (+ their index file). */
async function repackPacks(repo: Repository, plan: PrunePlan, progress: ProgressFn, signal?: AbortSignal): Promise<{ packs: number; indexFiles: string[] }> {
  const writer = repo.newWriter({ ignoreIndex: true });
  const keepBlobs = plan.keepBlobs;
  const ids = [...plan.repack];
  let done = 0;
  try {
    await mapLimit(ids, 2, async (packId) => {
      if (signal?.aborted) throw signal.reason;
      const blobs = (repo.index.packs.get(packId) ?? []).filter((b) => keepBlobs[b.type].has(b.id));
      if (blobs.length) {
        blobs.sort((a, b) => a.offset - b.offset);
        const start = blobs[0].offset;
        const end = blobs[blobs.length - 1].offset + blobs[blobs.length - 1].length;
        const raw = await repo.backend.load('data', packId, start, end - start);
        for (const b of blobs) {
          if (!keepBlobs[b.type].has(b.id)) continue; // copied from another pack already
          keepBlobs[b.type].delete(b.id);
          const plain = await repo.decodeBlob(b.id, b, raw.subarray(b.offset - start, b.offset - start + b.length));
          await writer.save(b.type, b.id, plain);
        }
      }
      progress({ phase: 'repack', filesDone: ++done, filesTotal: ids.length });
    });
    const st = await writer.flush();
    if (blobCount(keepBlobs)) {
      throw new IntegrityError(`internal error: ${blobCount(keepBlobs)} blob(s) were not repacked`, { hint: 'old packs were left in place; nothing was deleted' });
    }
    return { packs: st.packs, indexFiles: st.indexFiles };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Writes index files for every pack in `packs`, the first naming `supersedes`. Returns their IDs. */
async function writeFullIndex(repo: Repository, packs: IndexPack[], supersedes: string[]): Promise<string[]> {
  const max = INDEX_MAX_BLOBS[repo.version];
  const files: IndexPack[][] = [];
  let cur: IndexPack[] = [];
  let blobs = 0;
  for (const p of packs) {
    cur.push(p);
    blobs += p.blobs.length;
    if (blobs >= max) {
      files.push(cur);
      cur = [];
      blobs = 0;
    }
  }
  if (cur.length || files.length === 0) files.push(cur);
  const ids: string[] = [];
  for (let i = 0; i < files.length; i++) {
    ids.push(await repo.saveUnpacked('index', encodeIndex({ supersedes: i === 0 ? supersedes : undefined, packs: files[i] })));
  }
  return ids;
}

/**
 * Runs a whole prune: lock (unless opts.locked), load index and snapshots, plan, and (unless dryRun)
 * execute in the crash-safe order described at the top of this file.
 */
export async function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneResult> {
  const progress = throttleProgress(opts.progress ?? noProgress);
  // Validate options before touching anything.
  parseMaxUnused(opts.maxUnused ?? '5%');
  const lock = opts.locked ? undefined : await RepoLock.acquire(repo, { exclusive: true, retryMs: opts.retryLockMs, loadIndex: progress });
  try {
    // (without a lock of its own, the index is read now, under the caller's lock)
    if (opts.locked) await repo.loadIndex(progress);
    else await repo.ensureIndex(progress);
    // Exactly the index files loaded: the new index supersedes these (and the repack's own).
    const oldIndexFiles = [...repo.index.files];
    const snaps = await loadAllSnapshotTrees(repo, progress);
    const used = await findUsedBlobs(
      repo,
      snaps.map((s) => s.tree),
      newBlobSets(),
      progress,
      opts.signal,
    );
    const plan = await planPrune(repo, used, { ...opts, progress });
    const result: PruneResult = {
      dryRun: Boolean(opts.dryRun),
      stats: plan.stats,
      spaceFreed: plan.stats.size.remove + plan.stats.size.repackrm + plan.stats.size.unref,
      packsDeleted: plan.removeFirst.size + plan.remove.size + plan.repack.size,
      packsRepacked: plan.repack.size,
      packsKept: plan.stats.packs.keep,
      packsWritten: 0,
      indexFilesWritten: 0,
      indexFilesDeleted: 0,
      plan: { unreferenced: [...plan.removeFirst.keys()], repack: [...plan.repack], remove: [...plan.remove], missingUnused: [...plan.ignore] },
    };
    const nothingToDo = !plan.removeFirst.size && !plan.repack.size && !plan.remove.size && !plan.ignore.size;
    if (opts.dryRun || nothingToDo) return result;
    const check = (): void => {
      if (opts.signal?.aborted) throw opts.signal.reason;
    };

    // 1. Packs no index mentions: nothing can refer to them.
    check();
    await removeFiles(repo, 'data', plan.removeFirst.keys(), progress, 'delete unreferenced packs');

    // 2. Repack: new packs and an index file for them exist before anything else is deleted.
    let repackIndexFiles: string[] = [];
    if (plan.repack.size) {
      check();
      const r = await repackPacks(repo, plan, progress, opts.signal);
      result.packsWritten = r.packs;
      repackIndexFiles = r.indexFiles;
    }

    // 3. New index: every pack that stays (old kept ones and the repacked results).
    check();
    const drop = new Set([...plan.remove, ...plan.repack, ...plan.ignore]);
    const packs: IndexPack[] = [];
    for (const [id, blobs] of repo.index.packs) if (!drop.has(id) && !plan.removeFirst.has(id)) packs.push({ id, blobs: blobs as PackedBlob[] });
    const supersedes = [...new Set([...oldIndexFiles, ...repackIndexFiles])];
    const newIndex = await writeFullIndex(repo, packs, supersedes);
    result.indexFilesWritten = newIndex.length + repackIndexFiles.length;

    // 4. Old index files (the ones the new files supersede). From here on no interruption is checked:
    // finishing is as quick as stopping, and the next prune would do the rest anyway.
    const keepIndex = new Set(newIndex);
    result.indexFilesDeleted = await removeFiles(repo, 'index', supersedes.filter((id) => !keepIndex.has(id)), progress, 'delete old index files');

    // 5. Emptied and repacked packs: no index file names them any more.
    await removeFiles(repo, 'data', [...plan.remove, ...plan.repack], progress, 'delete packs');
    progress({ phase: 'prune', done: true });
    return result;
  } finally {
    await lock?.release();
  }
}
