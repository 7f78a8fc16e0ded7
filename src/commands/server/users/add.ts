import { Args, Flags } from '@oclif/core';
import { DmctlCommand } from '../../../base-command.js';
import { runUsersCommand } from '../../../server/users-cli.js';
import type { UserInfo } from '../../../server/users.js';
import { kubeRequested, runInCluster, serverKubeFlags } from '../../../kube/cli.js';

export default class ServerUsersAdd extends DmctlCommand {
  static override summary = 'Add a server user (a login and a repository key file with the same password).';
  static override description = "The password is stored only as a salted scrypt hash. With --server the running server edits its users file and key files; otherwise the users file is edited directly, and with --repo/--repo-password-file a key file is written too, so the user's password also opens the repository.";
  static override examples = [
    {
      description: 'Offline: add an append user to the users file and give it a key file in the repository:',
      command: '<%= config.bin %> server users add alice --role append --password-file alice.pw --users-file users.json --repo /srv/repo --repo-password-file repo.pw',
    },
    {
      description: 'Through a running server (it edits its own users file and key files; no restart):',
      command: '<%= config.bin %> server users add bob --role read --password-file bob.pw --server https://127.0.0.1:8000/ --server-cert-fingerprint 3f2a... --admin-user admin --admin-password-file admin.pw',
    },
  ];
  static override args = {
    user: Args.string({ description: 'User name.', required: true }),
  };
  static override flags = {
    ...serverKubeFlags,
    role: Flags.string({ summary: 'Role: read (list, load), append (read + create + remove own locks), full.', options: ['read', 'append', 'full'], default: 'append' }),
    'password-file': Flags.string({ summary: 'File holding the new user\'s password.', helpValue: 'FILE', required: true }),
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
    if (kubeRequested(this.argv)) return runInCluster(this, 'users-add') as Promise<never>;
    const { args, flags } = await this.parse(ServerUsersAdd);
    const out = await runUsersCommand({
      action: 'add',
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
      this.log(`added user ${u.name} (${u.role})${u.keyId ? `, key ${u.keyId.slice(0, 10)}` : ''}`);
    }
    return out;
  }
}
