import { Args, Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { backupFiles } from '../../kube/datamover.js';
import { datamoverFlags, datamoverSettings, printResult } from '../../kube/cli.js';
import { backupOutputValue } from '../../ui/summary.js';

export default class DatamoverBackupFiles extends DmctlCommand {
  static override summary = 'Datamover client contract: back up the files under PATH to the server named by SERVER_URL.';
  static override description = 'The entrypoint of the datamover pod (`dmctl backup --kube --pvc` creates it). Reads PROTOCOLS, SERVER_URL, SERVER_DATA and the client credential folder; prints `dmctl-result: JSON` as its last stdout line.';
  static override examples = ['PROTOCOLS=restic-rest:8000 SERVER_URL=https://dm.ns.svc:8000/ SERVER_DATA=\'{"fingerprint":"…"}\' <%= config.bin %> <%= command.id %> /data nightly'];
  static override args = {
    path: Args.string({ description: 'Directory to back up.', required: true }),
    tag: Args.string({ description: 'Tag of the snapshot.', required: false }),
  };
  static override flags = { ...datamoverFlags, host: Flags.string({ summary: 'Host name recorded in the snapshot.', helpValue: 'NAME' }) };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(DatamoverBackupFiles);
    const { settings, connectWaitMs } = await datamoverSettings(flags);
    const s = await backupFiles({ settings, connectWaitMs, path: args.path, tag: args.tag, host: flags.host, progress: this.progress('backup'), signal: this.abortSignal });
    printResult(JSON.parse(backupOutputValue(s)));
    return s;
  }
}
