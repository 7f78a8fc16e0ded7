import { Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../../base-command.js';
import { initRepositoryFromSettings } from '../../config/open-repo.js';
import { UsageError } from '../../core/errors.js';

export default class RepoInit extends DmctlCommand {
  static override summary = 'Create a new repository (restic format, version 2).';
  static override description = `Creates an encrypted, deduplicated repository at the location given by --repo (a local path by default, or s3:, azure:, gs:, rest: URLs). The password protects the master key: losing it means losing the data. The repository is readable by the restic 0.14+ client as well.`;
  static override examples = [
    { description: 'A local repository, password from a file:', command: '<%= config.bin %> <%= command.id %> -r /srv/backups --password-file ~/.dmctl-pass' },
    { description: 'Password from the environment:', command: 'DM_PASSWORD=secret <%= config.bin %> <%= command.id %> -r /srv/backups' },
    { description: 'A repository restic 0.13 and older can read:', command: '<%= config.bin %> <%= command.id %> -r /srv/old --repository-version 1' },
  ];
  static override flags = {
    ...repoFlags,
    'repository-version': Flags.string({ summary: 'Repository format version: 2 (compression) or 1.', options: ['1', '2', 'latest', 'stable'], default: '2' }),
  };

  async run(): Promise<{ id: string; version: number; location: string; keyId: string }> {
    const { flags } = await this.parse(RepoInit);
    const v = flags['repository-version'] === '1' ? 1 : 2;
    const settings = await this.settings();
    if (!settings.repository && !settings.profile) throw new UsageError('no repository location given', 'pass -r/--repo PATH|URL or set DM_REPOSITORY');
    const repo = await initRepositoryFromSettings(settings, { version: v });
    const res = { id: repo.config.id, version: repo.version, location: repo.backend.location, keyId: repo.keyId };
    await repo.backend.close();
    if (!this.jsonEnabled()) {
      this.log(`created repository ${res.id.slice(0, 10)} (version ${res.version}) at ${res.location}`);
      this.log('');
      this.log('Keep the password safe: without it the data cannot be read.');
    }
    return res;
  }
}
