// stats (restic 0.14 semantics): restore-size = every node of every selected snapshot counted as a
// file, sizes of hard-linked files once per snapshot; raw-data = the stored size of every distinct
// blob the snapshots reference; files-by-contents = files with distinct content lists;
// blobs-per-file = distinct data blobs per file path.

import crypto from 'node:crypto';
import { IntegrityError, UsageError } from '../core/errors.js';
import { ProgressFn, noProgress } from '../core/progress.js';
import { Repository } from '../repository/repository.js';
import { decodeTree, Node } from '../repository/tree.js';
import { findUsedBlobs, newBlobSets } from './prune.js';

export const STATS_MODES = ['restore-size', 'files-by-contents', 'blobs-per-file', 'raw-data'] as const;
export type StatsMode = (typeof STATS_MODES)[number];

export interface StatsResult {
  /** restic's JSON fields. */
  total_size: number;
  total_file_count: number;
  total_blob_count?: number;
  snapshots_count: number;
}

export function checkStatsMode(mode: string): StatsMode {
  if (!(STATS_MODES as readonly string[]).includes(mode)) throw new UsageError(`unknown counting mode: ${mode}`, `use one of ${STATS_MODES.join(', ')}`);
  return mode as StatsMode;
}

/** Calls `visit(path, node)` for every node below `tree`, depth first in name order (restic's walker). */
async function walk(repo: Repository, tree: string, dir: string, visit: (path: string, node: Node) => void): Promise<void> {
  const nodes = decodeTree(await repo.loadBlob('tree', tree));
  for (const n of nodes) {
    const p = `${dir}/${n.name.toString('latin1')}`;
    visit(p, n);
    if (n.type === 'dir') {
      if (!n.subtree) throw new IntegrityError(`tree ${tree}: dir ${JSON.stringify(n.name.toString('utf8'))} has no subtree`);
      await walk(repo, n.subtree, p, visit);
    }
  }
}

/** Statistics over the given snapshots (root trees). The index must be loaded. */
export async function snapshotStats(repo: Repository, roots: readonly string[], mode: StatsMode, progress: ProgressFn = noProgress): Promise<StatsResult> {
  const r: StatsResult = { total_size: 0, total_file_count: 0, snapshots_count: 0 };
  const blobLen = (id: string): number => {
    const loc = repo.index.lookup('data', id);
    if (!loc) throw new IntegrityError(`data blob ${id} is not in the index`, { hint: 'run `dmctl check`' });
    return loc.uncompressedLength || loc.length - 32;
  };
  if (mode === 'raw-data') {
    const used = await findUsedBlobs(repo, roots, newBlobSets(), progress);
    r.snapshots_count = roots.length;
    let blobs = 0;
    for (const type of ['tree', 'data'] as const) {
      for (const id of used[type]) {
        const loc = repo.index.lookup(type, id);
        if (!loc) throw new IntegrityError(`${type} blob ${id} is not in the index`, { hint: 'run `dmctl check`' });
        r.total_size += loc.length;
        blobs++;
      }
    }
    r.total_blob_count = blobs;
    return r;
  }
  const uniqueFiles = new Set<string>();
  const fileBlobs = new Map<string, Set<string>>();
  let blobCount = 0;
  for (const root of roots) {
    r.snapshots_count++;
    const inodes = new Set<bigint>();
    await walk(repo, root, '', (path, n) => {
      if (mode === 'restore-size') {
        r.total_file_count++;
        const ino = n.inode ?? 0n;
        if (ino === 0n || !inodes.has(ino)) {
          inodes.add(ino);
          r.total_size += Number(n.size ?? 0n);
        }
        return;
      }
      const fid = crypto.createHash('sha256').update((n.content ?? []).join('')).digest('hex');
      if (uniqueFiles.has(fid)) return;
      uniqueFiles.add(fid);
      if (mode === 'files-by-contents') {
        r.total_size += Number(n.size ?? 0n);
        r.total_file_count++;
        return;
      }
      for (const c of n.content ?? []) {
        let set = fileBlobs.get(path);
        if (!set) {
          fileBlobs.set(path, (set = new Set()));
          r.total_file_count++;
        }
        if (!set.has(c)) {
          r.total_size += blobLen(c);
          set.add(c);
          blobCount++;
        }
      }
    });
    progress({ phase: 'stats', counters: { snapshots: r.snapshots_count } });
  }
  if (blobCount) r.total_blob_count = blobCount;
  return r;
}

