import { Args, Flags } from '@oclif/core';
import { promises as fsp } from 'node:fs';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { backup, BackupSummary } from '../archiver/archiver.js';
import { EXIT_CODES, UsageError } from '../core/errors.js';
import { backupOutputValue, backupSummaryLines } from '../ui/summary.js';
import { kubeRequested, runInCluster, podFlags, refuseKubeOnlyFlags } from '../kube/cli.js';

export const backupFlags = {
  tag: Flags.string({ summary: 'Tag the snapshot (repeatable; "a,b" adds both).', multiple: true, helpValue: 'TAG' }),
  host: Flags.string({ summary: 'Host name recorded in the snapshot (default: this machine).', helpValue: 'NAME' }),
  compression: Flags.string({ summary: 'Compression of data blobs: auto, off or max.', options: ['auto', 'off', 'max'], default: 'auto' }),
  'output-name': Flags.string({ summary: 'Print a Kanister phase output with this key: snapshot id and sizes as JSON.', helpValue: 'KEY' }),
};

export function splitTags(tags: string[] | undefined): string[] {
  return (tags ?? []).flatMap((t) => t.split(',')).map((t) => t.trim()).filter(Boolean);
}

export default class Backup extends DmctlCommand {
  static override summary = 'Back up files and directories into a new snapshot.';
  static override description = `Stores the given paths as restic does: contents deduplicated, compressed and encrypted, with modes, owners, times, extended attributes, symlinks, hardlinks, fifos and devices. Files unchanged since the parent snapshot (same host and paths, or --parent) are not read again.

Exit code 3 means the snapshot was written but some files could not be read (they are listed as warnings).`;
  static override examples = [
    { description: 'Back up a directory:', command: '<%= config.bin %> <%= command.id %> /var/lib/data' },
    { description: 'Tag it and skip caches:', command: "<%= config.bin %> <%= command.id %> /home --tag nightly --exclude '*.cache' --exclude /home/*/Downloads" },
    { description: 'See what a backup would add, writing nothing:', command: '<%= config.bin %> <%= command.id %> /var/lib/data --dry-run' },
    { description: 'In a Kanister phase, print the snapshot id as a phase output:', command: '<%= config.bin %> <%= command.id %> /mnt/vol_data --output-name backupInfo' },
  ];
  static override strict = false;
  static override args = { path: Args.string({ description: 'Files or directories to back up.', required: true }) };
  static override flags = {
    ...podFlags,
    ...repoFlags,
    ...backupFlags,
    exclude: Flags.string({ char: 'e', summary: 'Exclude paths matching this glob (repeatable).', multiple: true, helpValue: 'PATTERN' }),
    'exclude-file': Flags.string({ summary: 'Read exclude patterns from a file (one per line, # comments).', multiple: true, helpValue: 'FILE' }),
    parent: Flags.string({ summary: 'Snapshot to compare against for unchanged files (default: latest of this host and paths).', helpValue: 'ID' }),
    force: Flags.boolean({ summary: 'Read every file again, ignoring the parent snapshot.' }),
    'with-atime': Flags.boolean({ summary: 'Store access times (by default atime = mtime, as restic).' }),
    'ignore-inode': Flags.boolean({ summary: 'Ignore inode and ctime changes when detecting unchanged files.' }),
    'dry-run': Flags.boolean({ summary: 'Read, deduplicate and count everything, write nothing: what would be added (with --kube: print the objects instead of creating them).' }),
  };

  async run(): Promise<BackupSummary> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'backup') as Promise<never>;
    const { argv, flags } = await this.parse(Backup);
    refuseKubeOnlyFlags(Backup.flags, flags);
    const paths = argv as string[];
    const excludes = [...(flags.exclude ?? [])];
    for (const f of flags['exclude-file'] ?? []) {
      let text: string;
      try {
        text = await fsp.readFile(f, 'utf8');
      } catch {
        throw new UsageError(`cannot read exclude file ${f}`);
      }
      for (const line of text.split('\n')) {
        const l = line.trim();
        if (l && !l.startsWith('#')) excludes.push(l);
      }
    }
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    try {
      const summary = await backup(repo, {
        paths,
        tags: splitTags(flags.tag),
        host: flags.host,
        excludes,
        parent: flags.force ? null : flags.parent,
        withAtime: flags['with-atime'],
        ignoreInode: flags['ignore-inode'],
        compression: flags.compression as 'auto' | 'off' | 'max',
        progress: this.progress('backup'),
        retryLockMs: settings.retryLockMs,
        signal: this.abortSignal,
        dryRun: flags['dry-run'],
      });
      this.finish(summary, flags['output-name']);
      return summary;
    } finally {
      await repo.backend.close();
    }
  }

  private finish(summary: BackupSummary, outputName: string | undefined): void {
    // (each unreadable file was reported as a warning when it was met)
    if (!this.jsonEnabled()) for (const l of backupSummaryLines(summary)) this.log(l);
    if (outputName) this.phaseOutput(outputName, backupOutputValue(summary));
    if (summary.errors.length) {
      if (this.jsonEnabled()) process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
      this.warn(`${summary.errors.length} file(s) could not be read; the snapshot was saved without them`);
      this.exit(EXIT_CODES.PARTIAL);
    }
  }
}
