// Starting a server from resolved settings: backend, TLS (given or generated), users (file, credentials folder,
// admin secret), key files, the REST server, the server data file (written before /readyz answers 200).
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openBackendForServer } from './backend-resolver.js';
import { RestServer, type LogEntry } from './http.js';
import { RepoKeyManager } from './repo-keys.js';
import type { ServerSettings } from './settings.js';
import { generateSelfSigned, loadTls, writeTls, type TlsMaterial } from './tls.js';
import { addUser, removeUser, setUser } from './user-admin.js';
import { readUsersFile, UserStore, type CredentialsChange } from './users.js';

export interface StartOptions {
  version?: string;
  log?: (e: LogEntry) => void;
  /** Where a generated certificate is kept (reused when present). Default: a new temporary folder. */
  tlsOutDir?: string;
  /** Rescan interval of the credentials folder (ms). */
  rescanMs?: number;
}

export interface ServerHandle {
  server: RestServer;
  port: number;
  url: string;
  fingerprint?: string;
  certFile?: string;
  keyFile?: string;
  /** Reloads users, credentials and the certificate (SIGHUP, `server refresh`). */
  refresh(): Promise<void>;
  stop(): Promise<void>;
}

export interface ServerData {
  protocol: string;
  port: number;
  tls: boolean;
  fingerprint?: string;
}

async function writeServerData(file: string, data: ServerData): Promise<void> {
  await fsp.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  await fsp.writeFile(tmp, JSON.stringify(data) + '\n', { mode: 0o644 });
  await fsp.rename(tmp, file);
}

export async function startServer(s: ServerSettings, o: StartOptions = {}): Promise<ServerHandle> {
  const log = o.log ?? (() => {});
  const served = await openBackendForServer(s.repo);

  let tls: TlsMaterial | undefined;
  let certFile = s.tlsCertFile;
  let keyFile = s.tlsKeyFile;
  if (certFile && keyFile) {
    tls = await loadTls(certFile, keyFile);
  } else if (s.tlsGenerateCert) {
    const dir = o.tlsOutDir ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'dmctl-server-tls-')));
    certFile = path.join(dir, 'cert.pem');
    keyFile = path.join(dir, 'key.pem');
    if (existsSync(certFile) && existsSync(keyFile)) {
      tls = await loadTls(certFile, keyFile);
    } else {
      const hosts = ['localhost', '127.0.0.1', '::1', os.hostname()];
      if (s.host !== '0.0.0.0' && s.host !== '::' && !hosts.includes(s.host)) hosts.unshift(s.host);
      tls = generateSelfSigned(hosts);
      await writeTls(tls, certFile, keyFile);
      log({ level: 'info', msg: 'generated self-signed certificate', certFile, fingerprint: tls.fingerprint });
    }
  }

  const keys = s.repoPassword ? new RepoKeyManager(served.backend, s.repoPassword) : undefined;
  const onCredentialsChange = keys
    ? async (ch: CredentialsChange) => {
        for (const c of [...ch.removed, ...ch.changed.map((x) => x.before)]) {
          try {
            const id = await keys.removeKeyFor(c.user, c.password);
            if (id) log({ level: 'info', msg: 'removed key file of client', client: c.clientId, user: c.user, keyId: id });
          } catch (err) {
            log({ level: 'warn', msg: 'cannot remove key file of client', client: c.clientId, error: (err as Error).message });
          }
        }
        for (const c of [...ch.added, ...ch.changed.map((x) => x.after)]) {
          try {
            const id = await keys.ensureKey(c.user, c.password, c.host);
            log({ level: 'info', msg: 'key file for client', client: c.clientId, user: c.user, keyId: id });
          } catch (err) {
            log({ level: 'warn', msg: 'cannot create key file for client', client: c.clientId, error: (err as Error).message });
          }
        }
      }
    : async (ch: CredentialsChange) => {
        log({ level: 'info', msg: 'client credentials changed', added: ch.added.map((c) => c.clientId), removed: ch.removed.map((c) => c.clientId), changed: ch.changed.map((c) => c.after.clientId) });
      };

  const users = new UserStore({
    usersFile: s.usersFile,
    credentialsDir: s.clientCredentialsDir,
    credentialsRole: s.clientCredentialsRole,
    secretUsers: s.admin ? [{ ...s.admin, role: 'full' }] : [],
    rescanMs: o.rescanMs,
    onCredentialsChange,
    onError: (err) => log({ level: 'warn', msg: 'reloading client credentials failed', error: (err as Error)?.message }),
  });
  await users.start();
  if (users.all().length === 0) {
    log({ level: 'warn', msg: 'no users yet: every request is refused until users are added', usersFile: s.usersFile, credentialsDir: s.clientCredentialsDir });
  }

  const syncFileUsers = async () => {
    if (s.usersFile) users.setFileRecords(await readUsersFile(s.usersFile));
  };
  const usersFile = s.usersFile;
  let server: RestServer;
  const refresh = async () => {
    await users.reload();
    if (s.tlsCertFile && s.tlsKeyFile) {
      const t = await loadTls(s.tlsCertFile, s.tlsKeyFile);
      server.setTls(t);
    }
    log({ level: 'info', msg: 'refreshed users and certificate', users: users.all().length, fingerprint: server.fingerprint });
  };
  server = new RestServer({
    backend: served.backend,
    subBackend: served.sub,
    users,
    tls,
    host: s.host,
    port: s.port,
    privateRepos: s.privateRepos,
    maxBodyBytes: s.maxBodyBytes,
    memoryBudgetBytes: s.memoryBudgetBytes,
    headersTimeoutMs: s.headersTimeoutMs,
    requestTimeoutMs: s.requestTimeoutMs,
    idleTimeoutMs: s.idleTimeoutMs,
    authDelayBaseMs: s.authDelayBaseMs,
    authDelayMaxMs: s.authDelayMaxMs,
    version: o.version,
    log,
    admin: {
      refresh,
      repositoryId: keys ? () => keys.repositoryId() : undefined,
      addUser: usersFile
        ? async (name, role, password) => {
            const r = await addUser({ usersFile, name, role, password, keys });
            await syncFileUsers();
            return r;
          }
        : undefined,
      setUser: usersFile
        ? async (name, role, password) => {
            const r = await setUser({ usersFile, name, role, password, keys });
            await syncFileUsers();
            return r;
          }
        : undefined,
      removeUser: usersFile
        ? async (name) => {
            const r = await removeUser({ usersFile, name, keys });
            await syncFileUsers();
            return r;
          }
        : undefined,
    },
  });
  const port = await server.listen();
  if (s.serverDataFile) {
    await writeServerData(s.serverDataFile, { protocol: s.protocol, port, tls: !!tls, ...(tls ? { fingerprint: tls.fingerprint } : {}) });
  }
  server.ready = true;
  const shownHost = s.host === '0.0.0.0' || s.host === '::' ? '127.0.0.1' : s.host.includes(':') ? `[${s.host}]` : s.host;
  const url = `${tls ? 'https' : 'http'}://${shownHost}:${port}/`;
  log({ level: 'info', msg: 'listening', url, fingerprint: tls?.fingerprint, repo: served.backend.location, privateRepos: s.privateRepos });
  return {
    server,
    port,
    url,
    fingerprint: tls?.fingerprint,
    certFile,
    keyFile,
    refresh,
    async stop() {
      server.ready = false;
      users.close();
      await server.close();
      await served.backend.close();
    },
  };
}
