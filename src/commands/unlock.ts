import { Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../base-command.js';
import { openRepositoryFromSettings } from '../config/open-repo.js';
import { unlock } from '../repository/lock.js';

export default class Unlock extends DmctlCommand {
  static override summary = 'Remove stale locks (or all locks).';
  static override description = `Removes locks whose process is gone (same host) or that were not refreshed for 30 minutes, as restic unlock does. --remove-all removes every lock, including those of running processes: only use it when you know nothing else uses the repository.`;
  static override examples = [
    { description: 'Remove stale locks:', command: '<%= config.bin %> <%= command.id %>' },
    { description: 'Remove every lock:', command: '<%= config.bin %> <%= command.id %> --remove-all' },
  ];
  static override flags = {
    ...repoFlags,
    'remove-all': Flags.boolean({ summary: 'Remove all locks, even those of running processes.' }),
  };

  async run(): Promise<{ removed: string[] }> {
    const { flags } = await this.parse(Unlock);
    const repo = await openRepositoryFromSettings(await this.settings());
    let removed: string[];
    try {
      removed = await unlock(repo, flags['remove-all']);
    } finally {
      await repo.backend.close();
    }
    if (!this.jsonEnabled()) this.log(removed.length ? `removed ${removed.length} lock(s)` : 'no locks to remove');
    return { removed };
  }
}
