import { Command, Flags } from '@oclif/core';
import { DmctlError } from '../../core/errors.js';
import { resolveServerSettings } from '../../server/settings.js';
import { startServer } from '../../server/start.js';
import type { LogEntry } from '../../server/http.js';
import { kubeRequested, runInCluster, serverStartKubeFlags } from '../../kube/cli.js';

const LEVELS = ['error', 'warn', 'info', 'debug'] as const;

export default class ServerStart extends Command {
  static override enableJsonFlag = true;
  static override summary = 'Serve a repository over restic\'s REST protocol (HTTPS), with users and roles.';
  static override description = `Clients (the restic client or dmctl) then hold only a user, a password and the server's certificate fingerprint; the server holds the storage settings.

Settings come from flags, then from the config folder (one file per setting, named like the flag: repo, address, users-file, private-repos, client-credentials-dir, client-credentials-role, server-data-file, tls-generate-cert), then defaults. Secret folders under --secrets-dir: repo-access-secret/password (repository password, used only to manage users' key files), admin-secret/{username,password} (a full user), tls-secret/{tls.crt,tls.key}. The PROTOCOLS environment variable must name only restic-rest (its port is used when --address is not given).

Logs go to stdout as JSON lines (one per request at -v info). SIGHUP reloads users and the certificate without dropping connections; SIGTERM/SIGINT stop the server.`;
  static override examples = [
    '<%= config.bin %> server start --repo /srv/repo --tls-generate-cert --tls-out-dir /var/lib/dmctl --users-file /var/lib/dmctl/users.json --password-file /run/secrets/repo-pw',
    '<%= config.bin %> server start --repo /srv/repo --tls-cert-file cert.pem --tls-key-file key.pem --client-credentials-dir /etc/client_credentials --private-repos',
  ];
  static override flags = {
    ...serverStartKubeFlags,
    repo: Flags.string({ char: 'r', summary: 'Repository to serve (any repository location).', helpValue: 'LOCATION' }),
    address: Flags.string({ summary: 'Listen address (default 127.0.0.1:8000).', helpValue: 'HOST:PORT' }),
    'tls-cert-file': Flags.string({ summary: 'PEM certificate.', helpValue: 'FILE', dependsOn: ['tls-key-file'] }),
    'tls-key-file': Flags.string({ summary: 'PEM private key.', helpValue: 'FILE', dependsOn: ['tls-cert-file'] }),
    'tls-generate-cert': Flags.boolean({ summary: 'Generate a self-signed certificate (kept in --tls-out-dir and reused).', allowNo: true }),
    'tls-out-dir': Flags.string({ summary: 'Where a generated certificate and key are written.', helpValue: 'DIR' }),
    'insecure-http': Flags.boolean({ summary: 'Serve plain HTTP (tests and TLS-terminating proxies only).', allowNo: true }),
    'users-file': Flags.string({ summary: 'Users file (JSON, 0600). Default: DM_SERVER_USERS_FILE.', helpValue: 'FILE' }),
    'client-credentials-dir': Flags.string({ summary: 'Watched folder of client credentials (one file per client: user@host:password).', helpValue: 'DIR' }),
    'client-credentials-role': Flags.string({ summary: 'Role of users from the credentials folder.', options: ['read', 'append', 'full'] }),
    'private-repos': Flags.boolean({ summary: 'Each user sees only its own sub-repository /USER/.', allowNo: true }),
    'server-data-file': Flags.string({ summary: 'Where to write {protocol, port, fingerprint} before reporting ready.', helpValue: 'FILE' }),
    'password-file': Flags.string({ summary: 'Repository password (to manage users\' key files and report the repository id).', helpValue: 'FILE' }),
    'config-dir': Flags.string({ summary: 'Config folder (default /etc/config when present).', helpValue: 'DIR' }),
    'secrets-dir': Flags.string({ summary: 'Folder of secret folders (default /etc/secrets when present).', helpValue: 'DIR' }),
    'max-body-bytes': Flags.integer({ summary: 'Largest accepted upload in bytes (default 129 MiB).', min: 1 }),
    'memory-budget-bytes': Flags.integer({ summary: 'Bytes of bodies held in memory at once (default 512 MiB).', min: 1 }),
    'headers-timeout': Flags.integer({ summary: 'Seconds a client may take to send request headers (default 30).', min: 1 }),
    'request-timeout': Flags.integer({ summary: 'Seconds a client may take to send a whole request (default 900).', min: 1 }),
    'idle-timeout': Flags.integer({ summary: 'Seconds of silence before a connection is closed (default 60).', min: 1 }),
    'credentials-rescan': Flags.integer({ summary: 'Milliseconds between rescans of the credentials folder (default 2000).', min: 100, hidden: true }),
    'auth-delay-ms': Flags.integer({ summary: 'First delay after a failed login, doubled per failure (default 200).', min: 0, hidden: true }),
    'log-level': Flags.string({ char: 'v', summary: 'Log level (info: one JSON line per request).', options: [...LEVELS], default: 'info' }),
  };

  async run(): Promise<Record<string, unknown>> {
    if (kubeRequested(this.argv)) return runInCluster(this, 'server-start') as Promise<never>;
    const { flags } = await this.parse(ServerStart);
    const level = LEVELS.indexOf(flags['log-level'] as (typeof LEVELS)[number]);
    const log = (e: LogEntry) => {
      if (LEVELS.indexOf(e.level) <= level) process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
    };
    try {
      const settings = await resolveServerSettings({
        repo: flags.repo,
        address: flags.address,
        tlsCertFile: flags['tls-cert-file'],
        tlsKeyFile: flags['tls-key-file'],
        tlsGenerateCert: flags['tls-generate-cert'],
        insecureHttp: flags['insecure-http'],
        usersFile: flags['users-file'],
        clientCredentialsDir: flags['client-credentials-dir'],
        clientCredentialsRole: flags['client-credentials-role'],
        privateRepos: flags['private-repos'],
        serverDataFile: flags['server-data-file'],
        passwordFile: flags['password-file'],
        configDir: flags['config-dir'],
        secretsDir: flags['secrets-dir'],
        maxBodyBytes: flags['max-body-bytes'],
        memoryBudgetBytes: flags['memory-budget-bytes'],
        headersTimeoutMs: flags['headers-timeout'] && flags['headers-timeout'] * 1000,
        requestTimeoutMs: flags['request-timeout'] && flags['request-timeout'] * 1000,
        idleTimeoutMs: flags['idle-timeout'] && flags['idle-timeout'] * 1000,
        authDelayBaseMs: flags['auth-delay-ms'],
      });
      const h = await startServer(settings, { version: this.config.version, log, tlsOutDir: flags['tls-out-dir'], rescanMs: flags['credentials-rescan'] });
      // Human line on stderr (stdout carries the JSON log).
      process.stderr.write(`dmctl server listening on ${h.url}${h.fingerprint ? `\ncertificate SHA-256 fingerprint: ${h.fingerprint}` : ''}\n`);
      const onHup = () => void h.refresh().catch((err) => log({ level: 'error', msg: 'refresh failed', error: (err as Error).message }));
      process.on('SIGHUP', onHup);
      const signal = await new Promise<string>((resolve) => {
        process.once('SIGTERM', () => resolve('SIGTERM'));
        process.once('SIGINT', () => resolve('SIGINT'));
      });
      process.off('SIGHUP', onHup);
      log({ level: 'info', msg: 'stopping', signal });
      await h.stop();
      return { stopped: true, signal, url: h.url, fingerprint: h.fingerprint };
    } catch (err) {
      if (err instanceof DmctlError) {
        log({ level: 'error', msg: err.message, code: err.code, hint: err.hint });
        this.error(err.message + (err.hint ? `\nhint: ${err.hint}` : ''), { exit: err.exitCode === 0 ? 1 : err.exitCode });
      }
      throw err;
    }
  }
}
