import { Flags } from '@oclif/core';
import { DmctlCommand, repoFlags } from '../../base-command.js';
import { openBackendFromSettings } from '../../config/open-repo.js';
import { saveConnection } from '../../config/connection.js';
import { requireRepository } from '../../config/settings.js';
import { Repository } from '../../repository/repository.js';
import { UsageError } from '../../core/errors.js';

export default class RepoConnect extends DmctlCommand {
  static override summary = 'Remember a repository (and its password) for later commands.';
  static override description = `Opens the repository once to check location and password, then writes the connection file (--config-file, default ~/.config/dmctl/connection.json, mode 0600). The password goes into a separate 0600 file next to it unless --no-persist-password is given (then every command asks, or reads DM_PASSWORD / DM_PASSWORD_FILE). With --server, the repository is reached through a dmctl repository server: the connection stores the URL, user and certificate fingerprint, never cloud credentials.`;
  static override examples = [
    { description: 'Connect to a local repository:', command: '<%= config.bin %> <%= command.id %> -r /srv/backups --password-file ~/.dmctl-pass' },
    { description: 'Connect through a repository server, pinning its certificate:', command: '<%= config.bin %> <%= command.id %> --server https://backup.example:8443 --user app1 --password-file /etc/dmctl/pw --server-cert-fingerprint 3f9a…' },
    { description: 'Do not store the password:', command: '<%= config.bin %> <%= command.id %> -r s3:s3.amazonaws.com/bucket/repo --no-persist-password' },
  ];
  static override flags = {
    ...repoFlags,
    server: Flags.string({ summary: 'URL of a dmctl repository server (https://HOST:PORT[/PATH]).', helpValue: 'URL' }),
    user: Flags.string({ summary: 'User name on the repository server.', dependsOn: ['server'] }),
    'no-persist-password': Flags.boolean({ summary: 'Do not write the password to disk.' }),
  };

  async run(): Promise<{ repository: string; configFile: string; id: string; passwordPersisted: boolean }> {
    const { flags } = await this.parse(RepoConnect);
    const settings = await this.settings();
    let repository: string;
    if (flags.server) {
      let u: URL;
      try {
        u = new URL(flags.server);
      } catch {
        throw new UsageError(`invalid --server URL ${flags.server}`, 'use https://HOST:PORT[/PATH]');
      }
      if (!flags.user) throw new UsageError('--server needs --user');
      if (u.protocol === 'https:' && !settings.serverCertFingerprint && !settings.cacert) {
        throw new UsageError('connecting to a server over https needs --server-cert-fingerprint or --cacert', 'get the fingerprint from `dmctl server status` or the server log');
      }
      const password = await settings.password();
      u.username = encodeURIComponent(flags.user);
      u.password = encodeURIComponent(password.toString('utf8'));
      password.fill(0);
      repository = `rest:${u.toString().replace(/\/?$/, '/')}`;
      settings.repository = repository;
    } else {
      repository = requireRepository(settings);
    }
    const be = await openBackendFromSettings(settings);
    const password = await settings.password();
    const repo = await Repository.open(be, password);
    await be.close();
    const persist = !flags['no-persist-password'];
    await saveConnection(settings.configFile, {
      repository,
      password: persist ? password : undefined,
      persistPassword: persist,
      options: {
        cacert: settings.cacert,
        insecureTls: settings.insecureTls || undefined,
        serverCertFingerprint: settings.serverCertFingerprint,
        connections: settings.connections,
        profile: settings.profile,
      },
    });
    password.fill(0);
    if (!this.jsonEnabled()) this.log(`connected to repository ${repo.config.id.slice(0, 10)} at ${be.location}; settings saved in ${settings.configFile}`);
    return { repository: be.location, configFile: settings.configFile, id: repo.config.id, passwordPersisted: persist };
  }
}
