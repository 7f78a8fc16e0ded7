import { Flags } from '@oclif/core';
import { fstatSync } from 'node:fs';
import { isatty } from 'node:tty';
import { fdRead, stdinRead, type ByteSource } from '../archiver/file-saver.js';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { backupStream } from '../archiver/stream.js';
import type { BackupSummary } from '../archiver/archiver.js';
import { UsageError } from '../core/errors.js';
import { backupOutputValue, backupSummaryLines } from '../ui/summary.js';
import { backupFlags, splitTags } from './backup.js';
import { kubeRequested, runInCluster, podFlags, refuseKubeOnlyFlags } from '../kube/cli.js';

export default class BackupStream extends DmctlCommand {
  static override summary = 'Back up a stream (stdin, or the output of a command) as one file.';
  static override description = `Stores stdin as the file NAME in a new snapshot, the same layout as \`restic backup --stdin --stdin-filename NAME\` (restic can dump and restore it). With \`-- CMD ARGS...\` dmctl runs the command and stores its stdout; if the command exits non-zero, no snapshot is written and dmctl exits with code 6, naming the command's status. Prefer that form to a shell pipe: in \`cmd | dmctl\`, a failing cmd goes unnoticed unless the shell uses pipefail.

Memory stays flat however large the stream.`;
  static override examples = [
    { description: 'Store a database dump from a pipe:', command: 'mysqldump --all-databases | <%= config.bin %> <%= command.id %> --name db.sql' },
    { description: 'Run the dump command, so its failure is caught:', command: '<%= config.bin %> <%= command.id %> --name db.sql -- pg_dump -Fc mydb' },
    { description: 'In a Kanister phase:', command: '<%= config.bin %> <%= command.id %> --name dump.gz --output-name backupInfo -- sh -c "mongodump --archive | gzip"' },
  ];
  static override strict = false;
  static override flags = {
    ...podFlags,
    ...repoFlags,
    ...backupFlags,
    name: Flags.string({ summary: 'File name of the stream inside the snapshot (may contain /).', required: true, helpValue: 'NAME' }),
  };

  async run(): Promise<BackupSummary> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'backup-stream') as Promise<never>;
    const { argv, flags } = await this.parse(BackupStream);
    refuseKubeOnlyFlags(BackupStream.flags, flags);
    const sep = this.argv.indexOf('--');
    const command = sep >= 0 ? this.argv.slice(sep + 1) : (argv as string[]);
    if (sep < 0 && command.length) throw new UsageError(`unexpected argument ${command[0]}`, 'put the command after `--`: dmctl backup-stream --name NAME -- CMD ARGS...');
    if (!command.length && isatty(0)) throw new UsageError('stdin is a terminal', 'pipe data in, or give a command after `--`');
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    try {
      const summary = await backupStream(repo, {
        name: flags.name,
        input: command.length ? undefined : stdinInput(),
        command: command.length ? command : undefined,
        host: flags.host,
        tags: splitTags(flags.tag),
        compression: flags.compression as 'auto' | 'off' | 'max',
        progress: this.progress('backup'),
        retryLockMs: settings.retryLockMs,
      });
      if (!this.jsonEnabled()) for (const l of backupSummaryLines(summary)) this.log(l);
      if (flags['output-name']) this.phaseOutput(flags['output-name'], backupOutputValue(summary));
      return summary;
    } finally {
      await repo.backend.close();
    }
  }
}

/** stdin is read directly in large buffers: a regular file, a pipe or a socket; anything else as a stream. */
function stdinInput(): ByteSource {
  try {
    const st = fstatSync(0);
    if (st.isFile()) return fdRead(0);
    if (st.isFIFO() || st.isSocket()) return stdinRead();
  } catch {
    // fall back to the stream
  }
  return process.stdin;
}
