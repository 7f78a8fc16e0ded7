// Finding snapshots: listing, ID prefixes, `latest`, host/tag/path filters, the parent of a backup.
import { DmctlError, UsageError, EXIT_CODES } from '../core/errors.js';
import { mapLimit } from '../core/limit.js';
import { ProgressFn, noProgress } from '../core/progress.js';
import { Repository } from './repository.js';
import { Snapshot, decodeSnapshot } from './snapshot.js';
import { GoTime } from './gotime.js';

export interface SnapshotEntry {
  id: string;
  snapshot: Snapshot;
}

export interface SnapshotFilter {
  hosts?: string[];
  /** Each entry is a tag list; a snapshot matches when it has all tags of at least one list. */
  tags?: string[][];
  /** A snapshot matches when it has all of these paths. */
  paths?: string[];
}

export function compareTime(a: GoTime, b: GoTime): number {
  return a.unixSec !== b.unixSec ? a.unixSec - b.unixSec : a.nsec - b.nsec;
}

export function matchesFilter(s: Snapshot, f: SnapshotFilter = {}): boolean {
  if (f.hosts?.length && !f.hosts.includes(s.hostname ?? '')) return false;
  if (f.tags?.length) {
    const have = new Set(s.tags ?? []);
    if (!f.tags.some((list) => list.every((t) => t === '' ? have.size === 0 : have.has(t)))) return false;
  }
  if (f.paths?.length) {
    const have = new Set(s.paths);
    if (!f.paths.every((p) => have.has(p))) return false;
  }
  return true;
}

/** Parses repeatable --tag values ("a,b" means both). */
export function parseTagLists(values: string[] | undefined): string[][] | undefined {
  if (!values?.length) return undefined;
  return values.map((v) => v.split(',').map((t) => t.trim()));
}

/** Loads every snapshot, newest last. Damaged snapshot files are reported and skipped. */
export async function listSnapshots(repo: Repository, filter: SnapshotFilter = {}, progress: ProgressFn = noProgress): Promise<SnapshotEntry[]> {
  const ids = await repo.listSnapshotFiles();
  const out: SnapshotEntry[] = [];
  await mapLimit(ids, Math.max(4, repo.backend.connections), async (id) => {
    try {
      const snapshot = decodeSnapshot(await repo.loadSnapshotJson(id));
      if (matchesFilter(snapshot, filter)) out.push({ id, snapshot });
    } catch (err) {
      progress({ phase: 'snapshots', warning: `snapshot ${id.slice(0, 8)}: ${(err as Error).message}` });
    }
  });
  out.sort((a, b) => compareTime(a.snapshot.time, b.snapshot.time) || (a.id < b.id ? -1 : 1));
  return out;
}

export class SnapshotNotFoundError extends DmctlError {
  constructor(spec: string) {
    super('snapshot-not-found', `no snapshot matches ${spec}`, { hint: 'list them with `dmctl snapshots`', exitCode: EXIT_CODES.FAILURE });
  }
}

/** Resolves an ID or unique ID prefix to a full snapshot ID. */
export async function resolveSnapshotId(repo: Repository, prefix: string): Promise<string> {
  if (!/^[0-9a-f]{1,64}$/.test(prefix)) throw new UsageError(`invalid snapshot ID ${JSON.stringify(prefix)}`, 'use an ID, a unique ID prefix or "latest"');
  const ids = (await repo.listSnapshotFiles()).filter((i) => i.startsWith(prefix));
  if (ids.length === 0) throw new SnapshotNotFoundError(prefix);
  if (ids.length > 1) throw new UsageError(`snapshot ID prefix ${prefix} is ambiguous (${ids.length} snapshots)`, 'give more characters of the ID');
  return ids[0];
}

export async function loadSnapshot(repo: Repository, idOrPrefix: string): Promise<SnapshotEntry> {
  const id = await resolveSnapshotId(repo, idOrPrefix);
  return { id, snapshot: decodeSnapshot(await repo.loadSnapshotJson(id)) };
}

/** `latest` (newest matching the filter) or an ID/prefix (which must also match the filter if one is given). */
export async function findSnapshot(repo: Repository, spec: string, filter: SnapshotFilter = {}): Promise<SnapshotEntry> {
  if (spec === 'latest') {
    const all = await listSnapshots(repo, filter);
    if (!all.length) throw new SnapshotNotFoundError(describeFilter('latest', filter));
    return all[all.length - 1];
  }
  return loadSnapshot(repo, spec);
}

function describeFilter(spec: string, f: SnapshotFilter): string {
  const parts = [spec];
  if (f.hosts?.length) parts.push(`host ${f.hosts.join(',')}`);
  if (f.tags?.length) parts.push(`tags ${f.tags.map((t) => t.join(',')).join(' or ')}`);
  if (f.paths?.length) parts.push(`paths ${f.paths.join(',')}`);
  return parts.join(', ');
}

/** restic's parent choice: newest snapshot of the same host, not newer than `time`, holding all `paths`. */
export async function findParentSnapshot(repo: Repository, host: string, paths: string[], time: GoTime): Promise<SnapshotEntry | undefined> {
  const all = await listSnapshots(repo, { hosts: [host], paths });
  for (let i = all.length - 1; i >= 0; i--) if (compareTime(all[i].snapshot.time, time) <= 0) return all[i];
  return undefined;
}
