import { Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../../base-command.js';
import { openRepositoryFromSettings } from '../../config/open-repo.js';
import { readPasswordFile } from '../../config/settings.js';
import { UsageError } from '../../core/errors.js';
import { addRepoKey } from '../../maintenance/keys.js';
import { withRepoLock } from '../prune.js';

export const newPasswordFlags = {
  'new-password-file': Flags.string({ summary: 'File holding the new password (read like --password-file).', helpValue: 'FILE' }),
  user: Flags.string({ summary: 'User name recorded in the new key (default: the current user).', helpValue: 'NAME' }),
  host: Flags.string({ summary: 'Host name recorded in the new key (default: this machine).', helpValue: 'NAME' }),
};

/** The new password: --new-password-file, else asked twice on a terminal. */
export async function readNewPassword(file: string | undefined): Promise<Buffer> {
  if (file) {
    const pw = await readPasswordFile(file, '--new-password-file');
    if (pw.length === 0) throw new UsageError(`--new-password-file ${file} is empty`, 'an empty password is not allowed');
    return pw;
  }
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new UsageError('no new password given', 'pass --new-password-file FILE (or run on a terminal to be asked)');
  }
  const { password } = await import('@inquirer/prompts');
  const opts = { output: process.stderr } as never;
  const first = await password({ message: 'enter new password:', mask: false }, opts);
  const again = await password({ message: 'enter password again:', mask: false }, opts);
  if (first !== again) throw new UsageError('the passwords do not match');
  if (first === '') throw new UsageError('an empty password is not allowed');
  return Buffer.from(first, 'utf8');
}

export default class KeyAdd extends DmctlCommand {
  static override summary = 'Add a key (a new password) to the repository.';
  static override description = 'The new key opens the same repository as the existing ones; restic accepts it too.';
  static override examples = [
    { description: 'Add a password read from a file:', command: '<%= config.bin %> <%= command.id %> --new-password-file /run/secrets/new-pw' },
  ];
  static override flags = { ...repoFlags, ...newPasswordFlags };

  async run(): Promise<{ id: string }> {
    const { flags } = await this.parse(KeyAdd);
    const settings = await this.settings();
    const repo = await openRepositoryFromSettings(settings);
    try {
      const pw = await readNewPassword(flags['new-password-file']);
      const id = await withRepoLock((h) => this.onInterrupt(h), repo, { exclusive: false, retryMs: settings.retryLockMs }, () =>
        addRepoKey(repo, pw, { username: flags.user, hostname: flags.host }),
      ).finally(() => pw.fill(0));
      if (!this.jsonEnabled()) this.log(`saved new key as ${id.slice(0, 8)}`);
      return { id };
    } finally {
      await repo.backend.close();
    }
  }
}
