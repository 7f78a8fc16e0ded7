import { Args, Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { checkStatsMode, snapshotStats, STATS_MODES, StatsResult } from '../maintenance/stats.js';
import { findSnapshot, listSnapshots } from '../repository/snapshots.js';
import { formatBytes } from '../ui/format.js';
import { filterFrom, snapshotFilterFlags } from './restore.js';
import { withRepoLock } from './prune.js';

export type StatsCommandResult = StatsResult & { mode: string; fileCount: number; size: string };

export default class Stats extends DmctlCommand {
  static override summary = 'Show sizes and file counts of snapshots.';
  static override description = `Modes as restic 0.14: restore-size (default: what a restore writes, every entry counted), raw-data (stored bytes of the distinct blobs the snapshots use), files-by-contents, blobs-per-file. Without SNAPSHOT all snapshots matching --host/--tag/--path count.

--json prints restic's fields (total_size, total_file_count, snapshots_count) plus mode, fileCount and size (human), which Kanister's BackupDataStats reports.`;
  static override examples = [
    { description: 'Restore size of the latest snapshot:', command: '<%= config.bin %> <%= command.id %> latest' },
    { description: 'Stored size of everything:', command: '<%= config.bin %> <%= command.id %> --mode raw-data' },
  ];
  static override strict = false;
  static override args = { snapshot: Args.string({ description: 'Snapshot IDs, prefixes or latest (default: all).', required: false }) };
  static override flags = {
    ...repoFlags,
    ...snapshotFilterFlags,
    mode: Flags.string({ summary: 'Counting mode.', options: [...STATS_MODES], default: 'restore-size' }),
    'output-name': Flags.string({ summary: 'Print the result as a Kanister phase output (JSON) with this key.', helpValue: 'KEY' }),
  };

  async run(): Promise<StatsCommandResult> {
    const { argv, flags } = await this.parse(Stats);
    const mode = checkStatsMode(flags.mode);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    let r: StatsResult;
    try {
      r = await withRepoLock((h) => this.onInterrupt(h), repo, { exclusive: false, retryMs: settings.retryLockMs }, async () => {
        const filter = filterFrom(flags);
        const specs = argv as string[];
        const roots = specs.length
          ? await Promise.all(specs.map(async (s) => (await findSnapshot(repo, s, filter)).snapshot.tree))
          : (await listSnapshots(repo, filter)).map((e) => e.snapshot.tree);
        await repo.loadIndex();
        return snapshotStats(repo, roots, mode, this.progress('stats'));
      });
    } finally {
      await repo.backend.close();
    }
    const out: StatsCommandResult = { ...r, mode, fileCount: r.total_file_count, size: formatBytes(r.total_size) };
    if (!this.jsonEnabled()) {
      this.log(`Stats in ${mode} mode:`);
      this.log(`Snapshots processed:   ${r.snapshots_count}`);
      if (r.total_blob_count) this.log(`   Total Blob Count:   ${r.total_blob_count}`);
      if (r.total_file_count) this.log(`   Total File Count:   ${r.total_file_count}`);
      this.log(`         Total Size:   ${formatBytes(r.total_size)}`);
    }
    if (flags['output-name']) this.phaseOutput(flags['output-name'], JSON.stringify({ mode, fileCount: String(r.total_file_count), size: out.size }));
    return out;
  }
}
