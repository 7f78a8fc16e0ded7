import { Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { DmctlError, EXIT_CODES } from '../../core/errors.js';
import { clientOptions } from '../../server/cli-support.js';
import { serverStatus, type ServerStatus } from '../../server/client.js';
import { kubeRequested, runInCluster, serverKubeFlags } from '../../kube/cli.js';

export default class ServerStatusCommand extends DmctlCommand {
  static override summary = 'Show whether a dmctl server is up: version, uptime, repository id, users, request counters.';
  static override description = 'Exits non-zero when the server is down, not ready, or its certificate does not match --server-cert-fingerprint. Without credentials only health and readiness are checked; with a full user the admin status is shown too.';
  static override examples = [
    {
      description: 'Check health and readiness, pinned to the certificate the server printed at start:',
      command: '<%= config.bin %> server status --server https://dm.example:8000/ --server-cert-fingerprint 3f2a...',
    },
    {
      description: 'Full status (version, uptime, repository id, users, counters) as JSON, with an admin user:',
      command: 'DM_SERVER_USER=admin <%= config.bin %> server status --server https://127.0.0.1:8000/ --password-file admin.pw --cacert cert.pem --json',
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

  async run(): Promise<ServerStatus> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'server-status') as Promise<never>;
    const { flags } = await this.parse(ServerStatusCommand);
    const o = await clientOptions({ server: flags.server, fingerprint: flags['server-cert-fingerprint'], cacert: flags.cacert, user: flags.user, passwordFile: flags['password-file'] });
    const st = await serverStatus(o);
    const up = st.healthy && st.ready;
    if (this.jsonEnabled()) {
      if (up) return st;
      // One JSON document either way: the status itself, with a non-zero exit code.
      this.logJson(st);
      this.exit(EXIT_CODES.FAILURE);
    }
    this.log(`server:       ${st.url}`);
    this.log(`healthy:      ${st.healthy ? 'yes' : 'no'}   ready: ${st.ready ? 'yes' : 'no'}`);
    if (st.fingerprint) this.log(`fingerprint:  ${st.fingerprint}`);
    if (st.version) this.log(`version:      ${st.version}   uptime: ${st.uptimeSeconds}s`);
    if (st.repositoryId) this.log(`repository:   ${st.repositoryId}`);
    if (st.users) this.log(`users:        ${st.users.map((u) => `${u.name} (${u.role})`).join(', ') || '(none)'}`);
    if (st.counters) this.log(`requests:     ${JSON.stringify(st.counters)}`);
    if (!up) {
      throw new DmctlError('server-not-ready', `${st.url} answers but is ${st.healthy ? 'not ready' : 'not healthy'}`, {
        hint: 'the server may still be starting (it is ready once its data file is written), or stopping; see its log',
      });
    }
    return st;
  }
}
