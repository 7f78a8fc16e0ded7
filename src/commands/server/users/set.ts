import { Args, Flags } from '@oclif/core';
import { DmctlCommand } from '../../../base-command.js';
import { runUsersCommand } from '../../../server/users-cli.js';
import type { UserInfo } from '../../../server/users.js';
import { kubeRequested, runInCluster, serverKubeFlags } from '../../../kube/cli.js';

export default class ServerUsersSet extends DmctlCommand {
  static override summary = "Change a server user's role or password (and its key file).";
  static override description = "A new password replaces the user's login hash and its repository key file (a new key file is written before the old one is removed).";
  static override examples = [
    { description: 'Give alice the full role in a users file:', command: '<%= config.bin %> server users set alice --role full --users-file users.json' },
    {
      description: "Change alice's password through a running server (login hash and key file):",
      command: '<%= config.bin %> server users set alice --password-file new.pw --server https://127.0.0.1:8000/ --server-cert-fingerprint 3f2a... --admin-user admin --admin-password-file admin.pw',
    },
  ];
  static override args = {
    user: Args.string({ description: 'User name.', required: true }),
  };
  static override flags = {
    ...serverKubeFlags,
    role: Flags.string({ summary: 'New role.', options: ['read', 'append', 'full'] }),
    'password-file': Flags.string({ summary: 'File holding the new password.', helpValue: 'FILE' }),
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
    if (kubeRequested(this.argv)) return runInCluster(this, 'users-set') as Promise<never>;
    const { args, flags } = await this.parse(ServerUsersSet);
    const out = await runUsersCommand({
      action: 'set',
      name: args.user,
      role: flags.role,
      passwordFile: flags['password-file'],
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
      this.log(`changed user ${u.name} (${u.role})${u.keyId ? `, key ${u.keyId.slice(0, 10)}` : ''}`);
    }
    return out;
  }
}
