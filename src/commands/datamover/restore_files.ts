import { Args } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { restoreFiles } from '../../kube/datamover.js';
import { datamoverFlags, datamoverSettings, printResult } from '../../kube/cli.js';

export default class DatamoverRestoreFiles extends DmctlCommand {
  static override summary = 'Datamover client contract: restore a snapshot from the server into PATH.';
  static override examples = [{ description: 'In a restore pod, restore the latest snapshot tagged nightly into the mounted claim:', command: 'PROTOCOLS=restic-rest:8000 SERVER_URL=https://dm.ns.svc:8000/ SERVER_DATA=/etc/server/data <%= config.bin %> <%= command.id %> /data nightly' }];
  static override description = 'SNAPSHOT is an id (prefix), "latest", or a tag (the latest snapshot with that tag). The directory the snapshot stored is restored into PATH, whatever its path was in the backup pod.';
  static override args = {
    path: Args.string({ description: 'Directory to restore into.', required: true }),
    snapshot: Args.string({ description: 'Snapshot id, latest, or a tag.', default: 'latest' }),
  };
  static override flags = { ...datamoverFlags };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(DatamoverRestoreFiles);
    const { settings, connectWaitMs } = await datamoverSettings(flags);
    const s = await restoreFiles({ settings, connectWaitMs, path: args.path, selector: args.snapshot, progress: this.progress('restore'), signal: this.abortSignal });
    printResult({ id: s.snapshotId, files: s.files, dirs: s.dirs, bytes: s.bytes });
    return s;
  }
}
