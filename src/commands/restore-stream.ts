import { Args, Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { dumpFile, DumpSummary } from '../restorer/dump.js';
import { UsageError } from '../core/errors.js';
import { filterFrom, snapshotFilterFlags } from './restore.js';
import { kubeRequested, runInCluster, podFlags, refuseKubeOnlyFlags } from '../kube/cli.js';

export default class RestoreStream extends DmctlCommand {
  static override summary = 'Write one file of a snapshot to stdout (the reverse of backup-stream).';
  static override description = 'Streams the file in order with bounded memory, verifying every blob. Without --name, the snapshot must hold a single file (as backup-stream and `restic backup --stdin` write). Works with snapshots of either tool, like `restic dump`.';
  static override examples = [
    { description: 'Restore a dump into the database:', command: '<%= config.bin %> <%= command.id %> latest --name db.sql | mysql' },
    { description: 'A file from a directory snapshot:', command: '<%= config.bin %> <%= command.id %> 4f2a9c1e --name /etc/hosts > hosts' },
  ];
  // stdout carries the data: no --json here.
  static override enableJsonFlag = false;
  static override args = { snapshot: Args.string({ description: 'ID, ID prefix or latest.', required: true }) };
  static override flags = {
    ...podFlags,
    ...repoFlags,
    ...snapshotFilterFlags,
    name: Flags.string({ summary: 'Path of the file in the snapshot.', helpValue: 'NAME' }),
  };

  async run(): Promise<DumpSummary> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'restore-stream') as Promise<never>;
    const { args, flags } = await this.parse(RestoreStream);
    refuseKubeOnlyFlags(RestoreStream.flags, flags);
    if (process.stdout.isTTY) throw new UsageError('stdout is a terminal', 'redirect the output: dmctl restore-stream latest > file');
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    // oclif's own stdout 'error' listener rethrows everything but EPIPE as an uncaught exception
    // (a stack trace and exit 1 when `> file` fills the disk). While the data goes to stdout,
    // dumpFile's listener alone handles such errors and reports them as a TargetError (exit 7).
    const oclifListeners = process.stdout.listeners('error') as ((err: Error) => void)[];
    process.stdout.removeAllListeners('error');
    try {
      const res = await dumpFile(repo, {
        snapshot: args.snapshot,
        name: flags.name,
        filter: filterFrom(flags),
        output: process.stdout,
        progress: this.progress('restore'),
        retryLockMs: settings.retryLockMs,
      });
      return res;
    } finally {
      for (const l of oclifListeners) process.stdout.on('error', l);
      await repo.backend.close();
    }
  }
}
