import { Command, Flags } from '@oclif/core';
import { DmctlError } from '../../core/errors.js';
import { clientOptions } from '../../server/cli-support.js';
import { serverStatus, type ServerStatus } from '../../server/client.js';
import { kubeRequested, runInCluster, serverKubeFlags } from '../../kube/cli.js';

export default class ServerStatusCommand extends Command {
  static override enableJsonFlag = true;
  static override summary = 'Show whether a dmctl server is up: version, uptime, repository id, users, request counters.';
  static override description = 'Exits non-zero when the server is down, not ready, or its certificate does not match --server-cert-fingerprint. Without credentials only health and readiness are checked; with a full user the admin status is shown too.';
  static override examples = [
    '<%= config.bin %> server status --server https://dm.example:8000/ --server-cert-fingerprint 3f2a...',
    'DM_SERVER_USER=admin <%= config.bin %> server status --server https://127.0.0.1:8000/ --password-file admin.pw --cacert cert.pem --json',
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
    try {
      const o = await clientOptions({ server: flags.server, fingerprint: flags['server-cert-fingerprint'], cacert: flags.cacert, user: flags.user, passwordFile: flags['password-file'] });
      const st = await serverStatus(o);
      if (!this.jsonEnabled()) {
        this.log(`server:       ${st.url}`);
        this.log(`healthy:      ${st.healthy ? 'yes' : 'no'}   ready: ${st.ready ? 'yes' : 'no'}`);
        if (st.fingerprint) this.log(`fingerprint:  ${st.fingerprint}`);
        if (st.version) this.log(`version:      ${st.version}   uptime: ${st.uptimeSeconds}s`);
        if (st.repositoryId) this.log(`repository:   ${st.repositoryId}`);
        if (st.users) this.log(`users:        ${st.users.map((u) => `${u.name} (${u.role})`).join(', ') || '(none)'}`);
        if (st.counters) this.log(`requests:     ${JSON.stringify(st.counters)}`);
      }
      if (!st.healthy || !st.ready) this.exit(1);
      return st;
    } catch (err) {
      if (err instanceof DmctlError) this.error(err.message + (err.hint ? `\nhint: ${err.hint}` : ''), { exit: err.exitCode });
      throw err;
    }
  }
}
