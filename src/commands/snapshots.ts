import { Args, Flags } from '@oclif/core';
import { DmctlCommand, noLockFlag, repoFlags } from '../base-command.js';
import { RepoLock } from '../repository/lock.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { listSnapshots, SnapshotEntry } from '../repository/snapshots.js';
import { formatGoTime, toDate } from '../repository/gotime.js';
import { table } from '../ui/format.js';
import { filterFrom, snapshotFilterFlags } from './restore.js';

/** A snapshot in the JSON shape `restic snapshots --json` prints (plus nothing restic lacks). */
export function snapshotJson(e: SnapshotEntry): Record<string, unknown> {
  const s = e.snapshot;
  const o: Record<string, unknown> = { time: formatGoTime(s.time) };
  if (s.parent) o.parent = s.parent;
  o.tree = s.tree;
  o.paths = s.paths;
  if (s.hostname) o.hostname = s.hostname;
  if (s.username) o.username = s.username;
  if (s.uid) o.uid = s.uid;
  if (s.gid) o.gid = s.gid;
  if (s.excludes?.length) o.excludes = s.excludes;
  if (s.tags?.length) o.tags = s.tags;
  if (s.original) o.original = s.original;
  o.id = e.id;
  o.short_id = e.id.slice(0, 8);
  return o;
}

function localTime(e: SnapshotEntry): string {
  const d = toDate(e.snapshot.time);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export default class Snapshots extends DmctlCommand {
  static override summary = 'List snapshots.';
  static override description = 'Lists snapshots oldest first, filtered by --host, --tag and --path. --json prints the same fields as `restic snapshots --json` (including short_id, which Kanister reads).';
  static override examples = [
    { description: 'All snapshots:', command: '<%= config.bin %> <%= command.id %>' },
    { description: 'The newest snapshot of a host, as JSON:', command: '<%= config.bin %> <%= command.id %> --host db-0 --latest 1 --json' },
    { description: 'Snapshots tagged both nightly and db:', command: '<%= config.bin %> <%= command.id %> --tag nightly,db' },
  ];
  static override args = { id: Args.string({ description: 'Show only these snapshots (ID prefixes).', required: false }) };
  static override strict = false;
  static override flags = {
    ...repoFlags,
    'no-lock': noLockFlag,
    ...snapshotFilterFlags,
    latest: Flags.integer({ summary: 'Only the newest N snapshots of each host and path set.', helpValue: 'N' }),
  };

  async run(): Promise<Record<string, unknown>[]> {
    const { argv, flags } = await this.parse(Snapshots);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    let list: SnapshotEntry[];
    // A shared lock, as restic's snapshots takes (--no-lock for read-only storage).
    const lock = flags['no-lock'] ? undefined : await RepoLock.acquire(repo, { exclusive: false, retryMs: settings.retryLockMs });
    try {
      list = await listSnapshots(repo, filterFrom(flags), this.progress('snapshots'));
    } finally {
      await lock?.release();
      await repo.backend.close();
    }
    const ids = argv as string[];
    if (ids.length) list = list.filter((e) => ids.some((p) => e.id.startsWith(p)));
    if (flags.latest) {
      const groups = new Map<string, SnapshotEntry[]>();
      for (const e of list) {
        const k = `${e.snapshot.hostname}\0${[...e.snapshot.paths].sort().join('\0')}`;
        groups.set(k, [...(groups.get(k) ?? []), e]);
      }
      list = [...groups.values()].flatMap((g) => g.slice(-flags.latest!));
      list.sort((a, b) => (a.snapshot.time.unixSec - b.snapshot.time.unixSec) || (a.snapshot.time.nsec - b.snapshot.time.nsec));
    }
    if (!this.jsonEnabled()) {
      const rows = list.map((e) => [e.id.slice(0, 8), localTime(e), e.snapshot.hostname ?? '', (e.snapshot.tags ?? []).join(','), e.snapshot.paths.join(', ')]);
      const cols = ['ID', 'Time', 'Host', 'Tags', 'Paths'].map((header) => ({ header }));
      for (const l of table(cols, rows)) this.log(l);
      this.log(`${list.length} snapshot${list.length === 1 ? '' : 's'}`);
    }
    return list.map(snapshotJson);
  }
}
