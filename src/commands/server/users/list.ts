import { Flags } from '@oclif/core';
import { DmctlCommand } from '../../../base-command.js';
import { runUsersCommand } from '../../../server/users-cli.js';
import type { UserInfo } from '../../../server/users.js';
import { kubeRequested, runInCluster, serverKubeFlags } from '../../../kube/cli.js';

export default class ServerUsersList extends DmctlCommand {
  static override summary = 'List server users and their roles.';
  static override description = 'From the users file, or from a running server (which also shows users from the credentials folder and secrets).';
  static override examples = [
    { description: 'Users of a users file:', command: '<%= config.bin %> server users list --users-file users.json' },
    {
      description: 'Users a running server knows (file, credentials folder and secrets), as JSON:',
      command: '<%= config.bin %> server users list --server https://127.0.0.1:8000/ --server-cert-fingerprint 3f2a... --admin-user admin --admin-password-file admin.pw --json',
    },
  ];
  static override flags = {
    ...serverKubeFlags,
    'users-file': Flags.string({ summary: 'Users file to edit directly (default DM_SERVER_USERS_FILE).', helpValue: 'FILE', exclusive: ['server'] }),
    server: Flags.string({ summary: 'Edit a running server through its admin API instead (default DM_SERVER_URL).', helpValue: 'URL' }),
    'server-cert-fingerprint': Flags.string({ summary: 'Pin: hex SHA-256 of the server certificate.', helpValue: 'HEX' }),
    cacert: Flags.string({ summary: 'PEM CA file to verify the server certificate.', helpValue: 'FILE' }),
    'admin-user': Flags.string({ summary: 'Admin (full) user for --server (default DM_SERVER_USER).', helpValue: 'USER' }),
    'admin-password-file': Flags.string({ summary: 'File holding the admin password (default DM_SERVER_PASSWORD_FILE).', helpValue: 'FILE' }),
  };

  async run(): Promise<UserInfo | UserInfo[]> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'users-list') as Promise<never>;
    const { flags } = await this.parse(ServerUsersList);
    const out = await runUsersCommand({
      action: 'list',
      name: undefined,
      role: undefined,
      passwordFile: undefined,
      usersFile: flags['users-file'],
      server: flags.server,
      fingerprint: flags['server-cert-fingerprint'],
      cacert: flags.cacert,
      adminUser: flags['admin-user'],
      adminPasswordFile: flags['admin-password-file'],
      repo: undefined,
      repoPasswordFile: undefined,
    });
    if (!this.jsonEnabled()) {
      const list = out as UserInfo[];
      if (!list.length) this.log('no users');
      for (const u of list) this.log(`${u.name.padEnd(24)} ${u.role.padEnd(7)} ${u.source.padEnd(12)} ${u.keyId ? u.keyId.slice(0, 10) : '-'}`);
    }
    return out;
  }
}
