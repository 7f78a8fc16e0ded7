// Server settings from flags, the datamover-server contract folders and environment:
// - config folder (default /etc/config when present): one file per setting, named like the flag
//   (`repo`, `address`, `users-file`, `private-repos`, `client-credentials-dir`, `client-credentials-role`,
//   `server-data-file`, `max-body-bytes`, `memory-budget-bytes`, `tls-generate-cert`, `insecure-http`, secret-name overrides below);
// - secret folders (default /etc/secrets/NAME): `repo-access-secret/password` (repository password, to manage
//   key files), `admin-secret/{username,password}` (a `full` user), `tls-secret/{tls.crt,tls.key}`;
// - `PROTOCOLS` env: every requested protocol must be one this server speaks; its port is the listen port.
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { DmctlError, UsageError } from '../core/errors.js';
import { DEFAULT_MAX_BODY_BYTES, DEFAULT_MEMORY_BUDGET_BYTES } from './http.js';
import { checkRole, type Role } from './users.js';

export const PROTOCOL_NAMES = ['restic-rest', 'restic', 'rest'];

export interface ServerSettings {
  repo: string;
  host: string;
  port: number;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsGenerateCert: boolean;
  insecureHttp: boolean;
  usersFile?: string;
  clientCredentialsDir?: string;
  clientCredentialsRole: Role;
  privateRepos: boolean;
  serverDataFile?: string;
  repoPassword?: string;
  admin?: { name: string; password: string };
  maxBodyBytes?: number;
  memoryBudgetBytes?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  idleTimeoutMs?: number;
  authDelayBaseMs?: number;
  authDelayMaxMs?: number;
  protocol: string;
}

/** What the command passes in: flags as given (undefined = not given). */
export interface ServerFlags {
  repo?: string;
  address?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsGenerateCert?: boolean;
  insecureHttp?: boolean;
  usersFile?: string;
  clientCredentialsDir?: string;
  clientCredentialsRole?: string;
  privateRepos?: boolean;
  serverDataFile?: string;
  passwordFile?: string;
  configDir?: string;
  secretsDir?: string;
  maxBodyBytes?: number;
  memoryBudgetBytes?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  idleTimeoutMs?: number;
  authDelayBaseMs?: number;
  authDelayMaxMs?: number;
}

/** Parses PROTOCOLS: JSON `[{"name":..,"port":..}]`, or `name[:port][,name[:port]]`. */
export function parseProtocols(text: string): { name: string; port?: number }[] {
  const t = text.trim();
  if (!t) return [];
  if (t.startsWith('[')) {
    try {
      const arr = JSON.parse(t) as { name: string; port?: number | string }[];
      return arr.map((p) => ({ name: String(p.name), ...(p.port !== undefined ? { port: Number(p.port) } : {}) }));
    } catch (err) {
      throw new UsageError('PROTOCOLS is not valid JSON', 'use [{"name":"restic-rest","port":8000}] or restic-rest:8000');
    }
  }
  return t.split(/[,\s]+/).filter(Boolean).map((item) => {
    const [name, port] = item.split(/[:=]/);
    return { name, ...(port ? { port: Number(port) } : {}) };
  });
}

async function readSetting(dir: string | undefined, name: string): Promise<string | undefined> {
  if (!dir) return undefined;
  try {
    return (await fsp.readFile(path.join(dir, name), 'utf8')).trim();
  } catch {
    return undefined;
  }
}

function bool(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  return /^(1|true|yes|on)$/i.test(v);
}

function num(v: string | undefined, what: string): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`invalid ${what}: ${v}`);
  return n;
}

export function parseAddress(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr.trim());
  if (!m) throw new UsageError(`invalid address ${addr}`, 'use HOST:PORT, e.g. 127.0.0.1:8000');
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`invalid port in ${addr}`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export async function resolveServerSettings(flags: ServerFlags, env: NodeJS.ProcessEnv = process.env): Promise<ServerSettings> {
  const configDir = flags.configDir ?? (existsSync('/etc/config') ? '/etc/config' : undefined);
  const secretsDir = flags.secretsDir ?? (existsSync('/etc/secrets') ? '/etc/secrets' : undefined);
  const cfg = (name: string) => readSetting(configDir, name);

  // PROTOCOLS: refuse to start when asked for something this server does not speak.
  const protocols = parseProtocols(env.PROTOCOLS ?? '');
  const unsupported = protocols.filter((p) => !PROTOCOL_NAMES.includes(p.name));
  if (unsupported.length) {
    throw new DmctlError('unsupported-protocol', `unsupported protocol(s) in PROTOCOLS: ${unsupported.map((p) => p.name).join(', ')}`, {
      hint: `this server speaks ${PROTOCOL_NAMES.join(', ')} (restic's REST protocol v1/v2 over HTTPS)`,
      exitCode: 2,
    });
  }

  const repo = flags.repo ?? (await cfg('repo')) ?? env.DM_REPOSITORY;
  if (!repo) throw new UsageError('no repository to serve', 'pass --repo PATH (or a `repo` file in the config folder)');
  const address = flags.address ?? (await cfg('address'));
  let host = '127.0.0.1';
  let port = 8000;
  if (address) ({ host, port } = parseAddress(address));
  else if (protocols[0]?.port) {
    host = '0.0.0.0';
    port = protocols[0].port;
  }

  const secretName = async (key: string, dflt: string) => (await cfg(key)) ?? dflt;
  const secret = async (sname: string, file: string) => (secretsDir ? readSetting(path.join(secretsDir, sname), file) : undefined);

  let repoPassword: string | undefined;
  if (flags.passwordFile) {
    try {
      repoPassword = (await fsp.readFile(flags.passwordFile, 'utf8')).replace(/\r?\n$/, '');
    } catch (err) {
      throw new UsageError(`cannot read password file ${flags.passwordFile}`, (err as Error).message);
    }
  } else {
    repoPassword = await secret(await secretName('repo-password-secret', 'repo-access-secret'), 'password');
  }

  const adminSecret = await secretName('admin-secret', 'admin-secret');
  const adminName = await secret(adminSecret, 'username');
  const adminPw = await secret(adminSecret, 'password');

  let tlsCertFile = flags.tlsCertFile;
  let tlsKeyFile = flags.tlsKeyFile;
  if (!tlsCertFile && !tlsKeyFile && secretsDir) {
    const tdir = path.join(secretsDir, await secretName('tls-secret', 'tls-secret'));
    if (existsSync(path.join(tdir, 'tls.crt')) && existsSync(path.join(tdir, 'tls.key'))) {
      tlsCertFile = path.join(tdir, 'tls.crt');
      tlsKeyFile = path.join(tdir, 'tls.key');
    }
  }
  if (!!tlsCertFile !== !!tlsKeyFile) throw new UsageError('--tls-cert-file and --tls-key-file go together');
  const tlsGenerateCert = flags.tlsGenerateCert ?? bool(await cfg('tls-generate-cert')) ?? false;
  const insecureHttp = flags.insecureHttp ?? bool(await cfg('insecure-http')) ?? false;
  if (!tlsCertFile && !tlsGenerateCert && !insecureHttp) {
    throw new UsageError('the server needs a TLS certificate', 'pass --tls-cert-file/--tls-key-file, or --tls-generate-cert; plain HTTP only with --insecure-http');
  }

  const clientCredentialsDir =
    flags.clientCredentialsDir ?? (await cfg('client-credentials-dir')) ?? (configDir && existsSync('/etc/client_credentials') ? '/etc/client_credentials' : undefined);
  const usersFile = flags.usersFile ?? (await cfg('users-file')) ?? env.DM_SERVER_USERS_FILE;
  const serverDataFile = flags.serverDataFile ?? (await cfg('server-data-file')) ?? (configDir ? '/etc/server/data' : undefined);

  const maxBodyBytes = flags.maxBodyBytes ?? num(await cfg('max-body-bytes'), 'max-body-bytes');
  const memoryBudgetBytes = flags.memoryBudgetBytes ?? num(await cfg('memory-budget-bytes'), 'memory-budget-bytes');
  const effMax = maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const effBudget = memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES;
  if (effBudget < effMax) {
    throw new UsageError(
      `the memory budget (${effBudget} bytes) is smaller than the largest accepted upload (${effMax} bytes)`,
      'raise --memory-budget-bytes or lower --max-body-bytes (restic 0.14 writes 16 MiB packs unless --pack-size is raised)',
    );
  }

  return {
    repo,
    host,
    port,
    tlsCertFile,
    tlsKeyFile,
    tlsGenerateCert,
    insecureHttp: insecureHttp && !tlsCertFile && !tlsGenerateCert,
    usersFile,
    clientCredentialsDir,
    clientCredentialsRole: checkRole(flags.clientCredentialsRole ?? (await cfg('client-credentials-role')) ?? 'append'),
    privateRepos: flags.privateRepos ?? bool(await cfg('private-repos')) ?? false,
    serverDataFile,
    repoPassword,
    admin: adminName && adminPw ? { name: adminName, password: adminPw } : undefined,
    maxBodyBytes,
    memoryBudgetBytes,
    headersTimeoutMs: flags.headersTimeoutMs,
    requestTimeoutMs: flags.requestTimeoutMs,
    idleTimeoutMs: flags.idleTimeoutMs,
    authDelayBaseMs: flags.authDelayBaseMs,
    authDelayMaxMs: flags.authDelayMaxMs,
    protocol: protocols[0]?.name ?? 'restic-rest',
  };
}
