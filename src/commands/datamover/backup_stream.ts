import { Args, Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { backupStreamFile } from '../../kube/datamover.js';
import { datamoverFlags, datamoverSettings, printResult } from '../../kube/cli.js';
import { backupOutputValue } from '../../ui/summary.js';

export default class DatamoverBackupStream extends DmctlCommand {
  static override summary = 'Datamover client contract: store what is written into FILE (a pipe) as one file of a snapshot.';
  static override examples = [{ description: 'In the dump pod, store what the dump container writes into the shared fifo:', command: 'PROTOCOLS=restic-rest:8000 SERVER_URL=https://dm.ns.svc:8000/ SERVER_DATA=/etc/server/data <%= config.bin %> <%= command.id %> /shared/dump.fifo --name db.sql' }];
  static override description = 'FILE is created as a fifo when missing. With --status-file, the writer\'s exit status (written there after it closes the pipe) decides: anything but 0 means no snapshot.';
  static override args = { file: Args.string({ description: 'The pipe (or file) to read.', required: true }) };
  static override flags = {
    ...datamoverFlags,
    name: Flags.string({ summary: 'File name inside the snapshot (default: the base name of FILE).', helpValue: 'NAME' }),
    'status-file': Flags.string({ summary: 'File holding the writer\'s exit status once it is done.', helpValue: 'FILE' }),
    tag: Flags.string({ summary: 'Tag of the snapshot.', helpValue: 'TAG' }),
    host: Flags.string({ summary: 'Host name recorded in the snapshot.', helpValue: 'NAME' }),
  };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(DatamoverBackupStream);
    const { settings, connectWaitMs } = await datamoverSettings(flags);
    const s = await backupStreamFile({ settings, connectWaitMs, file: args.file, name: flags.name ?? args.file.split('/').pop()!, statusFile: flags['status-file'], tag: flags.tag, host: flags.host, progress: this.progress('backup') });
    printResult(JSON.parse(backupOutputValue(s)));
    return s;
  }
}
