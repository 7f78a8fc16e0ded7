import { Flags } from '@oclif/core';
import { DmctlCommand } from '../../base-command.js';
import { DmctlError } from '../../core/errors.js';
import { resolveServerSettings } from '../../server/settings.js';
import { startServer } from '../../server/start.js';
import type { LogEntry } from '../../server/http.js';
import { kubeRequested, runInCluster, serverStartKubeFlags } from '../../kube/cli.js';

const LEVELS = ['error', 'warn', 'info', 'debug'] as const;

export default class ServerStart extends DmctlCommand {
  static override summary = 'Serve a repository over restic\'s REST protocol (HTTPS), with users and roles.';
  static override description = `Clients (the restic client or dmctl) then hold only a user, a password and the server's certificate fingerprint; the server holds the storage settings.

Settings come from flags, then from the config folder (one file per setting, named like the flag: repo, address, users-file, private-repos, client-credentials-dir, client-credentials-role, server-data-file, tls-generate-cert, max-body-bytes, memory-budget-bytes), then defaults. Secret folders under --secrets-dir: repo-access-secret/password (repository password, used only to manage users' key files), admin-secret/{username,password} (a full user), tls-secret/{tls.crt,tls.key}. The PROTOCOLS environment variable must name only restic-rest (its port is used when --address is not given).

Memory: uploads are held in memory (exactly their Content-Length) while their SHA-256 is checked, downloads while they are sent. All of them together stay within --memory-budget-bytes; a request that does not fit is answered 503 with Retry-After (restic retries it), so the server's memory stays bounded whatever the number of clients. Size the pod's memory limit at the budget plus about 150 MiB.

Logs go to stdout as JSON lines (one per request at -v info). SIGHUP reloads users and the certificate without dropping connections; SIGTERM/SIGINT stop the server (exit code 0 once open requests are done).`;
  static override examples = [
    {
      description: 'Serve a local repository with a generated certificate (its fingerprint is printed and kept in --tls-out-dir):',
      command: '<%= config.bin %> server start --repo /srv/repo --tls-generate-cert --tls-out-dir /var/lib/dmctl --users-file /var/lib/dmctl/users.json --password-file /run/secrets/repo-pw',
    },
    {
      description: 'Serve an S3 repository with a given certificate; clients come from a mounted Kubernetes secret and each sees only its own sub-repository:',
      command: '<%= config.bin %> server start --repo s3:https://s3.example.com/bucket/repo --tls-cert-file cert.pem --tls-key-file key.pem --client-credentials-dir /etc/client_credentials --private-repos',
    },
    {
      description: 'A small pod: at most 128 MiB of bodies in memory, uploads up to 64 MiB (restic 0.14 packs are 16 MiB by default):',
      command: '<%= config.bin %> server start --repo /srv/repo --tls-generate-cert --users-file users.json --memory-budget-bytes 134217728 --max-body-bytes 67108864',
    },
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
    'max-body-bytes': Flags.integer({ summary: 'Largest accepted upload in bytes (default 129 MiB: a 128 MiB pack plus slack).', min: 1, helpValue: 'BYTES' }),
    'memory-budget-bytes': Flags.integer({
      summary: 'Bytes of bodies held in memory by all requests together (default 256 MiB).',
      description: 'A request that does not fit is answered 503 with Retry-After. Must be at least --max-body-bytes, or the largest uploads could never be accepted.',
      min: 1,
      helpValue: 'BYTES',
    }),
    'headers-timeout': Flags.integer({ summary: 'Seconds a client may take to send request headers (default 30).', min: 1, helpValue: 'SECONDS' }),
    'request-timeout': Flags.integer({ summary: 'Seconds a client may take to send a whole request (default 900).', min: 1, helpValue: 'SECONDS' }),
    'idle-timeout': Flags.integer({ summary: 'Seconds of silence before a connection is closed (default 60).', min: 1, helpValue: 'SECONDS' }),
    'credentials-rescan': Flags.integer({ summary: 'Milliseconds between rescans of the credentials folder (default 2000).', min: 100, hidden: true }),
    'auth-delay-ms': Flags.integer({ summary: 'First delay after a failed login, doubled per failure (default 200).', min: 0, hidden: true }),
    // Replaces the global --log-level: the server logs JSON lines on stdout, one per request at info.
    'log-level': Flags.string({
      char: 'v',
      aliases: ['verbose'],
      summary: 'Log level of the JSON log on stdout (info: one line per request).',
      options: [...LEVELS],
      default: 'info',
      helpValue: 'error|warn|info|debug',
      helpGroup: 'GLOBAL',
    }),
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
      // SIGTERM/SIGINT are how a server is meant to stop: the base command aborts and runs this handler;
      // once open requests are done the process exits 0 (a second signal exits 130 at once).
      return await new Promise<never>(() => {
        this.onInterrupt(async () => {
          const reason = this.abortSignal.reason as Error | undefined;
          const signal = /SIG[A-Z]+/.exec(reason?.message ?? '')?.[0] ?? 'signal';
          process.off('SIGHUP', onHup);
          log({ level: 'info', msg: 'stopping', signal });
          await h.stop();
          log({ level: 'info', msg: 'stopped', signal });
          if (this.jsonEnabled()) this.logJson({ stopped: true, signal, url: h.url, fingerprint: h.fingerprint });
          process.exit(0);
        });
      });
    } catch (err) {
      // Fatal: one JSON line in the log on stdout (the contract's log), then the base command's one line on
      // stderr (under --json the base command's error object is that line).
      if (err instanceof DmctlError && !this.jsonEnabled()) log({ level: 'error', msg: err.message, code: err.code, hint: err.hint });
      throw err;
    }
  }
}
