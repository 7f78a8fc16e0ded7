import { Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { clientOptions } from '../../server/cli-support.js';
import { adminCall } from '../../server/client.js';
import { kubeRequested, runInCluster, serverKubeFlags } from '../../kube/cli.js';

export default class ServerRefresh extends DmctlCommand {
  static override summary = 'Make a running server reload its users, client credentials and TLS certificate.';
  static override description = 'Open connections stay up; new connections get the new certificate. Same as sending SIGHUP to the server process.';
  static override examples = [
    {
      description: 'Reload through the admin API, with a full user and the pinned certificate:',
      command: '<%= config.bin %> server refresh --server https://127.0.0.1:8000/ --server-cert-fingerprint 3f2a... --user admin --password-file admin.pw',
    },
  ];
  static override flags = {
    ...serverKubeFlags,
    server: Flags.string({ summary: 'Server URL (default DM_SERVER_URL).', helpValue: 'URL' }),
    'server-cert-fingerprint': Flags.string({ summary: 'Pin: hex SHA-256 of the server certificate.', helpValue: 'HEX' }),
    cacert: Flags.string({ summary: 'PEM CA file to verify the server certificate.', helpValue: 'FILE' }),
    user: Flags.string({ summary: 'User with the full role (default DM_SERVER_USER).', helpValue: 'USER' }),
    'password-file': Flags.string({ summary: 'File holding that user\'s password (default DM_SERVER_PASSWORD_FILE).', helpValue: 'FILE' }),
  };

  async run(): Promise<unknown> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'server-refresh') as Promise<never>;
    const { flags } = await this.parse(ServerRefresh);
    const o = await clientOptions({ server: flags.server, fingerprint: flags['server-cert-fingerprint'], cacert: flags.cacert, user: flags.user, passwordFile: flags['password-file'] });
    const r = await adminCall<{ users: number; fingerprint?: string }>(o, 'POST', '/_admin/refresh');
    if (!this.jsonEnabled()) this.log(`refreshed: ${r.users} users${r.fingerprint ? `, certificate ${r.fingerprint}` : ''}`);
    return r;
  }
}
