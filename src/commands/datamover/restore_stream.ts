import { Args, Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { restoreStreamFile } from '../../kube/datamover.js';
import { datamoverFlags, datamoverSettings, printResult } from '../../kube/cli.js';

export default class DatamoverRestoreStream extends DmctlCommand {
  static override summary = 'Datamover client contract: write one file of a snapshot into FILE (a pipe the reader consumes).';
  static override examples = [{ description: 'Feed the latest dump into a fifo a restore container reads:', command: 'PROTOCOLS=restic-rest:8000 SERVER_URL=https://dm.ns.svc:8000/ SERVER_DATA=/etc/server/data <%= config.bin %> <%= command.id %> /shared/restore.fifo --name db.sql' }];
  static override args = { file: Args.string({ description: 'The pipe (or file) to write.', required: true }) };
  static override flags = {
    ...datamoverFlags,
    snapshot: Flags.string({ summary: 'Snapshot id, or latest.', default: 'latest', helpValue: 'ID' }),
    name: Flags.string({ summary: 'Path of the file in the snapshot (default: its only file).', helpValue: 'NAME' }),
  };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(DatamoverRestoreStream);
    const { settings, connectWaitMs } = await datamoverSettings(flags);
    const s = await restoreStreamFile({ settings, connectWaitMs, file: args.file, selector: flags.snapshot, name: flags.name, progress: this.progress('restore') });
    printResult({ id: s.snapshotId, bytes: s.bytes });
    return s;
  }
}
