import { DmctlCommand, repoFlags } from '../../base-command.js';
import { openRepositoryFromSettings } from '../../config/open-repo.js';
import { KeyListEntry, listRepoKeys } from '../../maintenance/keys.js';
import { table } from '../../ui/format.js';
import { withRepoLock } from '../prune.js';

export default class KeyList extends DmctlCommand {
  static override summary = 'List the keys (passwords) of the repository.';
  static override description = 'The key that opened the repository is marked with *.';
  static override examples = [{ description: 'List keys:', command: '<%= config.bin %> <%= command.id %>' }];
  static override flags = { ...repoFlags };

  async run(): Promise<KeyListEntry[]> {
    await this.parse(KeyList);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    let keys: KeyListEntry[];
    try {
      keys = await withRepoLock((h) => this.onInterrupt(h), repo, { exclusive: false, retryMs: settings.retryLockMs }, () => listRepoKeys(repo));
    } finally {
      await repo.backend.close();
    }
    if (!this.jsonEnabled()) {
      const rows = keys.map((k) => [`${k.current ? '*' : ' '}${k.id.slice(0, 8)}`, k.username, k.hostname, k.created.replace('T', ' ').slice(0, 19)]);
      for (const l of table(['ID', 'User', 'Host', 'Created'].map((header) => ({ header })), rows)) this.log(l);
    }
    return keys;
  }
}
