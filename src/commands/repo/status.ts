import { DmctlCommand, repoFlags } from '../../base-command.js';
import { openRepositoryFromSettings } from '../../config/open-repo.js';
import { formatBytes } from '../../ui/format.js';
import { listAll } from '../../storage/backend.js';

export default class RepoStatus extends DmctlCommand {
  static override summary = 'Show the repository: id, version, storage, snapshots and sizes.';
  static override examples = [{ description: 'A local repository:', command: '<%= config.bin %> <%= command.id %> -r /srv/backups' }, { description: 'The connected repository, as JSON:', command: '<%= config.bin %> <%= command.id %> --json' }];
  static override flags = { ...repoFlags };

  async run(): Promise<Record<string, unknown>> {
    await this.parse(RepoStatus);
    const repo = await openRepositoryFromSettings(await this.settings());
    const [snapshots, packs, index, keys, locks] = await Promise.all(
      (['snapshots', 'data', 'index', 'keys', 'locks'] as const).map((t) => listAll(repo.backend, t)),
    );
    const packBytes = packs.reduce((s, f) => s + f.size, 0);
    const res = {
      id: repo.config.id,
      version: repo.version,
      storage: repo.backend.location,
      chunkerPolynomial: repo.config.chunkerPolynomial.toString(16),
      keyId: repo.keyId,
      snapshots: snapshots.length,
      packs: packs.length,
      packBytes,
      indexFiles: index.length,
      keys: keys.length,
      locks: locks.length,
    };
    await repo.backend.close();
    if (!this.jsonEnabled()) {
      const rows: [string, string][] = [
        ['Repository', res.id],
        ['Version', String(res.version)],
        ['Storage', res.storage],
        ['Snapshots', String(res.snapshots)],
        ['Data', `${res.packs} packs, ${formatBytes(res.packBytes)}`],
        ['Index files', String(res.indexFiles)],
        ['Keys', String(res.keys)],
        ['Locks', String(res.locks)],
      ];
      for (const [k, v] of rows) this.log(`${(k + ':').padEnd(13)} ${v}`);
    }
    return res;
  }
}
