import { Args } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../../base-command.js';
import { openRepositoryFromSettings } from '../../config/open-repo.js';
import { removeRepoKey } from '../../maintenance/keys.js';
import { withRepoLock } from '../prune.js';

export default class KeyRemove extends DmctlCommand {
  static override summary = 'Remove a key (password) from the repository.';
  static override description = 'The key that opened the repository (the password in use) cannot be removed: use `key passwd` to replace it. Takes an exclusive lock.';
  static override examples = [{ description: 'Remove a key by its ID prefix:', command: '<%= config.bin %> <%= command.id %> 4f2a9c1e' }];
  static override args = { id: Args.string({ description: 'Key ID or unique prefix.', required: true }) };
  static override flags = { ...repoFlags };

  async run(): Promise<{ removed: string }> {
    const { args } = await this.parse(KeyRemove);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    let removed: string;
    try {
      removed = await withRepoLock((h) => this.onInterrupt(h), repo, { exclusive: true, retryMs: settings.retryLockMs }, () =>
        removeRepoKey(repo, args.id, { locked: true }),
      );
    } finally {
      await repo.backend.close();
    }
    if (!this.jsonEnabled()) this.log(`removed key ${removed.slice(0, 8)}`);
    return { removed };
  }
}
