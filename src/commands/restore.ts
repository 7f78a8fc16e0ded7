import { Args, Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { restore, RestoreSummary } from '../restorer/restorer.js';
import { parseTagLists } from '../repository/snapshots.js';
import { DmctlError, EXIT_CODES } from '../core/errors.js';
import { formatBytes, formatClock } from '../ui/format.js';
import { kubeRequested, runInCluster, podFlags, refuseKubeOnlyFlags } from '../kube/cli.js';

export const snapshotFilterFlags = {
  host: Flags.string({ char: 'H', summary: 'Only snapshots of this host (repeatable).', multiple: true, helpValue: 'NAME' }),
  tag: Flags.string({ summary: 'Only snapshots with these tags ("a,b" = both; repeatable = either).', multiple: true, helpValue: 'TAGS' }),
  path: Flags.string({ summary: 'Only snapshots that include this path (repeatable = all).', multiple: true, helpValue: 'PATH' }),
};

export function filterFrom(flags: { host?: string[]; tag?: string[]; path?: string[] }) {
  return { hosts: flags.host, tags: parseTagLists(flags.tag), paths: flags.path };
}

export default class Restore extends DmctlCommand {
  static override summary = 'Restore a snapshot (or part of it) into a directory.';
  static override description = `SNAPSHOT is an ID, a unique ID prefix or "latest" (the newest matching --host/--tag/--path), optionally followed by :SUBPATH to restore only that directory or file. Every blob is verified (MAC and SHA-256) before it is written; a file whose data is damaged is removed and named, never written with wrong bytes, and dmctl exits with code 5. --verify re-reads every restored file afterwards.`;
  static override examples = [
    { description: 'Restore the latest snapshot:', command: '<%= config.bin %> <%= command.id %> latest --target /tmp/restore' },
    { description: 'Restore one directory of a snapshot, checking the result:', command: '<%= config.bin %> <%= command.id %> 4f2a9c1e:/var/lib/data --target /restore --verify' },
    { description: 'Only some files:', command: "<%= config.bin %> <%= command.id %> latest --target /restore --include '*.conf' --exclude '/etc/ssl/**'" },
  ];
  static override args = { snapshot: Args.string({ description: 'ID, ID prefix or latest, optionally :SUBPATH.', required: true }) };
  static override flags = {
    ...podFlags,
    ...repoFlags,
    ...snapshotFilterFlags,
    target: Flags.string({ char: 't', summary: 'Directory to restore into (created if missing).', required: true, helpValue: 'DIR' }),
    include: Flags.string({ char: 'i', summary: 'Restore only paths matching this glob (repeatable).', multiple: true, helpValue: 'PATTERN' }),
    exclude: Flags.string({ char: 'e', summary: 'Skip paths matching this glob (repeatable).', multiple: true, helpValue: 'PATTERN' }),
    verify: Flags.boolean({ summary: 'Re-read restored files and check them against the snapshot.' }),
  };

  async run(): Promise<RestoreSummary> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'restore') as Promise<never>;
    const { args, flags } = await this.parse(Restore);
    refuseKubeOnlyFlags(Restore.flags, flags);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    let summary: RestoreSummary;
    try {
      summary = await restore(repo, {
        snapshot: args.snapshot,
        filter: filterFrom(flags),
        target: flags.target,
        include: flags.include,
        exclude: flags.exclude,
        verify: flags.verify,
        progress: this.progress('restore'),
        retryLockMs: settings.retryLockMs,
      });
    } finally {
      await repo.backend.close();
    }
    if (!this.jsonEnabled()) {
      this.log(`restored snapshot ${summary.snapshotId.slice(0, 8)} to ${summary.target}: ${summary.files} files, ${summary.dirs} dirs, ${summary.others} other, ${formatBytes(summary.bytes)} in ${formatClock(summary.durationMs)}`);
      if (summary.verified !== undefined) this.log(`verified ${summary.verified} files`);
    }
    if (summary.errors.length) {
      // (each item was reported as a warning when it failed)
      throw new DmctlError('restore-incomplete', `${summary.errors.length} item(s) could not be restored`, {
        hint: 'the items above are missing from the target; run `dmctl check --read-data` if data is damaged',
        exitCode: EXIT_CODES.DAMAGED,
      });
    }
    return summary;
  }
}
