import { DmctlCommand, repoFlags } from '../../base-command.js';
import { openRepositoryFromSettings } from '../../config/open-repo.js';
import { changeRepoPassword } from '../../maintenance/keys.js';
import { withRepoLock } from '../prune.js';
import { newPasswordFlags, readNewPassword } from './add.js';

export default class KeyPasswd extends DmctlCommand {
  static override summary = 'Change the password in use (add a new key, remove the current one).';
  static override description = 'Other keys stay valid. Takes an exclusive lock.';
  static override examples = [{ description: 'Change the password:', command: '<%= config.bin %> <%= command.id %> --new-password-file /run/secrets/new-pw' }];
  static override flags = { ...repoFlags, ...newPasswordFlags };

  async run(): Promise<{ added: string; removed: string }> {
    const { flags } = await this.parse(KeyPasswd);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    try {
      const pw = await readNewPassword(flags['new-password-file']);
      const r = await withRepoLock((h) => this.onInterrupt(h), repo, { exclusive: true, retryMs: settings.retryLockMs }, () =>
        changeRepoPassword(repo, pw, { locked: true, username: flags.user, hostname: flags.host }),
      ).finally(() => pw.fill(0));
      if (!this.jsonEnabled()) this.log(`saved new key as ${r.added.slice(0, 8)}, removed key ${r.removed.slice(0, 8)}`);
      return r;
    } finally {
      await repo.backend.close();
    }
  }
}
