// The connection file written by `dmctl repo connect`: which repository to use when neither --repo
// nor DM_REPOSITORY says, plus connection options (TLS, Kanister profile...). JSON, mode 0600, in a
// 0700 directory. The password, when persisted, lives in a separate 0600 file next to it so the
// JSON can be shown or copied without the secret.

import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { DmctlError, EXIT_CODES, UsageError, describeSystemError } from '../core/errors.js';

/** Options that change how the repository is reached; every field optional. */
export interface ConnectionOptions {
  /** PEM file with extra CA certificates to trust. */
  cacert?: string;
  /** Skip TLS certificate verification (only for tests). */
  insecureTls?: boolean;
  /** Hex SHA-256 of the server certificate (DER) to pin. */
  serverCertFingerprint?: string;
  /** Raw Kanister Profile JSON (parsed by src/kanister/profile.ts). May hold credentials: file is 0600. */
  profile?: string;
  /** Concurrent storage connections. */
  connections?: number;
}

export interface Connection {
  /** Format version of this file. */
  version: 1;
  repository: string;
  /** Absolute path of the file holding the password; absent when the password is not persisted. */
  passwordFile?: string;
  options: ConnectionOptions;
}

export const CONNECTION_FILE_VERSION = 1;

/**
 * Default connection file: $XDG_CONFIG_HOME/dmctl/connection.json, or ~/.config/dmctl/connection.json
 * when XDG_CONFIG_HOME is unset or not absolute (as the XDG spec asks).
 */
export function defaultConfigFile(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(home, '.config');
  return join(base, 'dmctl', 'connection.json');
}

/** Where `repo connect` persists the password for `configFile`: connection.json → connection.password. */
export function passwordFileFor(configFile: string): string {
  const dir = dirname(configFile);
  const name = basename(configFile);
  const stem = name.endsWith('.json') ? name.slice(0, -'.json'.length) : name;
  return join(dir, `${stem}.password`);
}

function configError(message: string, hint: string, cause?: unknown): DmctlError {
  return new DmctlError('config', message, { hint, cause, exitCode: EXIT_CODES.USAGE });
}

/** Validates parsed JSON into a Connection; throws a UsageError naming the file (never its contents). */
export function parseConnection(text: string, configFile: string): Connection {
  const hint = 'fix the file, or run `dmctl repo disconnect` and `dmctl repo connect` again';
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw configError(`connection file ${configFile} is not valid JSON`, hint);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw configError(`connection file ${configFile} does not hold a JSON object`, hint);
  }
  const o = raw as Record<string, unknown>;
  if (typeof o.repository !== 'string' || o.repository === '') {
    throw configError(`connection file ${configFile} names no repository`, hint);
  }
  if (o.version !== undefined && o.version !== CONNECTION_FILE_VERSION) {
    throw configError(`connection file ${configFile} has unsupported version ${String(o.version)}`, 'it was written by a newer dmctl; upgrade dmctl or connect again');
  }
  let passwordFile: string | undefined;
  if (o.passwordFile !== undefined && o.passwordFile !== null) {
    if (typeof o.passwordFile !== 'string' || o.passwordFile === '') throw configError(`connection file ${configFile}: "passwordFile" must be a path`, hint);
    passwordFile = resolve(dirname(configFile), o.passwordFile);
  }
  const opts: ConnectionOptions = {};
  const src = o.options;
  if (src !== undefined && src !== null) {
    if (typeof src !== 'object' || Array.isArray(src)) throw configError(`connection file ${configFile}: "options" must be an object`, hint);
    const so = src as Record<string, unknown>;
    const str = (k: 'cacert' | 'serverCertFingerprint' | 'profile') => {
      if (so[k] === undefined || so[k] === null) return;
      if (typeof so[k] !== 'string') throw configError(`connection file ${configFile}: "options.${k}" must be a string`, hint);
      opts[k] = so[k] as string;
    };
    str('cacert');
    str('serverCertFingerprint');
    str('profile');
    if (so.cacert !== undefined && opts.cacert) opts.cacert = resolve(dirname(configFile), opts.cacert);
    if (so.insecureTls !== undefined) {
      if (typeof so.insecureTls !== 'boolean') throw configError(`connection file ${configFile}: "options.insecureTls" must be true or false`, hint);
      opts.insecureTls = so.insecureTls;
    }
    if (so.connections !== undefined) {
      if (typeof so.connections !== 'number' || !Number.isInteger(so.connections) || so.connections < 1) {
        throw configError(`connection file ${configFile}: "options.connections" must be a positive integer`, hint);
      }
      opts.connections = so.connections;
    }
  }
  return { version: 1, repository: o.repository, ...(passwordFile ? { passwordFile } : {}), options: opts };
}

/** Reads the connection file; undefined when it does not exist. */
export async function loadConnection(configFile: string): Promise<Connection | undefined> {
  let text: string;
  try {
    text = await readFile(configFile, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ENOTDIR') return undefined;
    throw configError(`cannot read connection file ${configFile}: ${describeSystemError(err)}`, 'check the file permissions, or pass --config-file', err);
  }
  return parseConnection(text, configFile);
}

/** Writes `data` to `path` atomically (temp file in the same directory, fsync, rename), mode 0600. */
export async function writeFileAtomic0600(path: string, data: string | Buffer): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  try {
    await fh.writeFile(data);
    await fh.chmod(0o600); // in case the umask widened nothing but the file pre-existed oddly
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {});
    throw err;
  }
  try {
    const dh = await open(dirname(path), fsc.O_RDONLY);
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // Directory fsync is best effort (not supported everywhere).
  }
}

export interface SaveConnectionInput {
  repository: string;
  options?: ConnectionOptions;
  /** The password to persist next to the connection file (when persistPassword is not false). */
  password?: Buffer;
  /** Default true: write `password` to passwordFileFor(configFile). */
  persistPassword?: boolean;
  /** Reference an existing password file instead of copying the password (stored as an absolute path). */
  passwordFile?: string;
}

/**
 * Saves the connection (and, unless told not to, the password in its own 0600 file). Creates the
 * directory with mode 0700. A password file left over from an earlier connect is removed when the
 * new connection does not persist a password, so no stale secret stays behind.
 */
export async function saveConnection(configFile: string, input: SaveConnectionInput): Promise<Connection> {
  if (!input.repository) throw new UsageError('no repository to connect to', 'pass --repo or set DM_REPOSITORY');
  const dir = dirname(configFile);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const st = await stat(dir);
    if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
  } catch (err) {
    throw configError(`cannot create directory ${dir}: ${describeSystemError(err)}`, 'pass --config-file with a writable location', err);
  }
  const ownPasswordFile = passwordFileFor(configFile);
  let passwordFile: string | undefined;
  try {
    if (input.passwordFile) {
      passwordFile = resolve(input.passwordFile);
    } else if (input.persistPassword !== false && input.password) {
      await writeFileAtomic0600(ownPasswordFile, input.password);
      passwordFile = ownPasswordFile;
    }
    if (passwordFile !== ownPasswordFile) await rm(ownPasswordFile, { force: true });
    const conn: Connection = {
      version: 1,
      repository: input.repository,
      ...(passwordFile ? { passwordFile } : {}),
      options: { ...(input.options ?? {}) },
    };
    await writeFileAtomic0600(configFile, JSON.stringify(conn, null, 2) + '\n');
    return conn;
  } catch (err) {
    if (err instanceof DmctlError) throw err;
    throw configError(`cannot write connection file ${configFile}: ${describeSystemError(err)}`, 'pass --config-file with a writable location', err);
  }
}

/**
 * Removes the connection file and the password file `repo connect` wrote next to it. A password
 * file the user referenced elsewhere is never touched. Returns the paths actually removed.
 */
export async function removeConnection(configFile: string): Promise<string[]> {
  const removed: string[] = [];
  for (const p of [configFile, passwordFileFor(configFile)]) {
    try {
      await rm(p);
      removed.push(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue;
      throw configError(`cannot remove ${p}: ${describeSystemError(err)}`, 'check the permissions of the directory', err);
    }
  }
  return removed;
}
