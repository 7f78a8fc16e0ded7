import { Args, Flags } from '@oclif/core';
import { DmctlCommand } from '../../../base-command.js';
import { runUsersCommand } from '../../../server/users-cli.js';
import type { UserInfo } from '../../../server/users.js';
import { kubeRequested, runInCluster, serverKubeFlags } from '../../../kube/cli.js';

export default class ServerUsersRemove extends DmctlCommand {
  static override summary = 'Remove a server user and its repository key file.';
  static override description = 'The login goes first, then the key file. A running server refuses the user at once when edited through --server.';
  static override examples = [
    {
      description: 'Offline: remove the login and the key file:',
      command: '<%= config.bin %> server users remove alice --users-file users.json --repo /srv/repo --repo-password-file repo.pw',
    },
    {
      description: 'Through a running server (refused at once, no restart):',
      command: '<%= config.bin %> server users remove alice --server https://127.0.0.1:8000/ --server-cert-fingerprint 3f2a... --admin-user admin --admin-password-file admin.pw',
    },
  ];
  static override args = {
    user: Args.string({ description: 'User name.', required: true }),
  };
  static override flags = {
    ...serverKubeFlags,
    repo: Flags.string({ char: 'r', summary: 'Repository whose key files follow the users (offline mode).', helpValue: 'LOCATION' }),
    'repo-password-file': Flags.string({ summary: 'Repository password, to write key files (offline mode).', helpValue: 'FILE' }),
    'users-file': Flags.string({ summary: 'Users file to edit directly (default DM_SERVER_USERS_FILE).', helpValue: 'FILE', exclusive: ['server'] }),
    server: Flags.string({ summary: 'Edit a running server through its admin API instead (default DM_SERVER_URL).', helpValue: 'URL' }),
    'server-cert-fingerprint': Flags.string({ summary: 'Pin: hex SHA-256 of the server certificate.', helpValue: 'HEX' }),
    cacert: Flags.string({ summary: 'PEM CA file to verify the server certificate.', helpValue: 'FILE' }),
    'admin-user': Flags.string({ summary: 'Admin (full) user for --server (default DM_SERVER_USER).', helpValue: 'USER' }),
    'admin-password-file': Flags.string({ summary: 'File holding the admin password (default DM_SERVER_PASSWORD_FILE).', helpValue: 'FILE' }),
  };

  async run(): Promise<UserInfo | UserInfo[]> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'users-remove') as Promise<never>;
    const { args, flags } = await this.parse(ServerUsersRemove);
    const out = await runUsersCommand({
      action: 'remove',
      name: args.user,
      role: undefined,
      passwordFile: undefined,
      usersFile: flags['users-file'],
      server: flags.server,
      fingerprint: flags['server-cert-fingerprint'],
      cacert: flags.cacert,
      adminUser: flags['admin-user'],
      adminPasswordFile: flags['admin-password-file'],
      repo: flags.repo,
      repoPasswordFile: flags['repo-password-file'],
    });
    if (!this.jsonEnabled()) {
      const u = out as UserInfo;
      this.log(`removed user ${u.name} (${u.role})${u.keyId ? `, key ${u.keyId.slice(0, 10)}` : ''}`);
    }
    return out;
  }
}
