// Server users: the users file (JSON, 0600, salted scrypt hashes), the watched client-credentials folder
// (one file per client id holding `user@host:password`, a mounted Kubernetes secret), roles, a short cache of
// verified credentials so scrypt does not run on every request, and a per-IP delay after failed logins.
import crypto from 'node:crypto';
import { promises as fsp, watch as fsWatch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { DmctlError, UsageError } from '../core/errors.js';

export type Role = 'read' | 'append' | 'full';
export const ROLES: readonly Role[] = ['read', 'append', 'full'];

export interface UserRecord {
  name: string;
  role: Role;
  /** `scrypt$N$r$p$<salt b64>$<dk b64>` */
  hash: string;
  /** Repository key file that opens the master key with this user's password. */
  keyId?: string;
  /** Where the user comes from: the users file, the credentials folder or a secret folder. */
  source?: 'file' | 'credentials' | 'secret';
  /** Informational host (from `user@host:password`). */
  host?: string;
}

/** The public view of a user (never the hash). */
export interface UserInfo {
  name: string;
  role: Role;
  keyId?: string;
  source: 'file' | 'credentials' | 'secret';
}

export const USERNAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkUsername(name: string): void {
  if (!USERNAME_RE.test(name)) {
    throw new UsageError(`invalid user name ${JSON.stringify(name)}`, 'use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit');
  }
}

export function checkRole(role: string): Role {
  if (!(ROLES as readonly string[]).includes(role)) throw new UsageError(`invalid role ${JSON.stringify(role)}`, 'use read, append or full');
  return role as Role;
}

// ---------------------------------------------------------------------------------------------------------
// Password hashing

const scryptAsync = promisify(crypto.scrypt) as (pw: crypto.BinaryLike, salt: crypto.BinaryLike, len: number, opts: crypto.ScryptOptions) => Promise<Buffer>;

export const DEFAULT_SCRYPT = { N: 16384, r: 8, p: 1 };

export async function hashPassword(password: string | Buffer, params = DEFAULT_SCRYPT): Promise<string> {
  const salt = crypto.randomBytes(16);
  const dk = await scryptAsync(password, salt, 32, { N: params.N, r: params.r, p: params.p, maxmem: 256 * 1024 * 1024 });
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${dk.toString('base64')}`;
}

export async function verifyPassword(password: string | Buffer, hash: string): Promise<boolean> {
  const parts = hash.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const N = Number(parts[1]), r = Number(parts[2]), p = Number(parts[3]);
  if (!Number.isInteger(N) || N < 2 || (N & (N - 1)) !== 0 || N > 1 << 20 || !(r >= 1 && r <= 32) || !(p >= 1 && p <= 16)) return false;
  const salt = Buffer.from(parts[4], 'base64');
  const want = Buffer.from(parts[5], 'base64');
  if (want.length < 16) return false;
  const got = await scryptAsync(password, salt, want.length, { N, r, p, maxmem: 256 * 1024 * 1024 });
  return crypto.timingSafeEqual(got, want);
}

// ---------------------------------------------------------------------------------------------------------
// Users file

export interface UsersFile {
  version: 1;
  users: UserRecord[];
}

export async function readUsersFile(file: string): Promise<UserRecord[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new DmctlError('users-file', `cannot read users file ${file}: ${(err as Error).message}`, { cause: err });
  }
  let doc: UsersFile;
  try {
    doc = JSON.parse(text) as UsersFile;
  } catch (err) {
    throw new DmctlError('users-file', `users file ${file} is not valid JSON`, { cause: err, hint: 'fix or remove the file; `dmctl server users add` recreates it' });
  }
  if (!doc || !Array.isArray(doc.users)) throw new DmctlError('users-file', `users file ${file} has no "users" list`);
  const out: UserRecord[] = [];
  for (const u of doc.users) {
    if (!u || typeof u.name !== 'string' || !USERNAME_RE.test(u.name) || !ROLES.includes(u.role) || typeof u.hash !== 'string') {
      throw new DmctlError('users-file', `users file ${file} has an invalid entry ${JSON.stringify(u?.name ?? u)}`);
    }
    out.push({ name: u.name, role: u.role, hash: u.hash, ...(u.keyId ? { keyId: u.keyId } : {}), source: 'file' });
  }
  return out;
}

/** Writes the users file atomically with mode 0600. */
export async function writeUsersFile(file: string, users: UserRecord[]): Promise<void> {
  const doc: UsersFile = {
    version: 1,
    users: users
      .filter((u) => (u.source ?? 'file') === 'file')
      .map((u) => ({ name: u.name, role: u.role, hash: u.hash, ...(u.keyId ? { keyId: u.keyId } : {}) })),
  };
  await fsp.mkdir(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${crypto.randomBytes(4).toString('hex')}`;
  await fsp.writeFile(tmp, JSON.stringify(doc, null, 2) + '\n', { mode: 0o600 });
  await fsp.chmod(tmp, 0o600);
  await fsp.rename(tmp, file);
}

// ---------------------------------------------------------------------------------------------------------
// Client credentials folder

export interface ClientCredential {
  clientId: string;
  user: string;
  host?: string;
  password: string;
}

/** Parses `user@host:password` (host optional). */
export function parseCredential(clientId: string, text: string): ClientCredential | undefined {
  const line = text.replace(/\r?\n$/, '');
  const colon = line.indexOf(':');
  if (colon <= 0) return undefined;
  const who = line.slice(0, colon);
  const password = line.slice(colon + 1);
  if (!password) return undefined;
  const at = who.indexOf('@');
  const user = at < 0 ? who : who.slice(0, at);
  const host = at < 0 ? undefined : who.slice(at + 1);
  if (!USERNAME_RE.test(user)) return undefined;
  return { clientId, user, host, password };
}

/** Reads every credential file of a folder (skips dot-files such as Kubernetes' `..data`). */
export async function readCredentialsDir(dir: string): Promise<{ creds: ClientCredential[]; bad: string[] }> {
  const creds: ClientCredential[] = [];
  const bad: string[] = [];
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { creds, bad };
    throw new DmctlError('credentials-dir', `cannot read client credentials folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
  for (const n of names.sort()) {
    if (n.startsWith('.')) continue;
    let text: string;
    try {
      const st = await fsp.stat(path.join(dir, n));
      if (!st.isFile() || st.size > 4096) {
        if (st.isFile()) bad.push(n);
        continue;
      }
      text = await fsp.readFile(path.join(dir, n), 'utf8');
    } catch {
      continue; // swapped out while reading; the next scan sees the new state
    }
    const c = parseCredential(n, text);
    if (c) creds.push(c);
    else bad.push(n);
  }
  return { creds, bad };
}

// ---------------------------------------------------------------------------------------------------------
// The live user set used by the server

export interface UserStoreOptions {
  usersFile?: string;
  credentialsDir?: string;
  /** Role of users from the credentials folder (default append). */
  credentialsRole?: Role;
  /** Extra users from secret folders (admin secret), password in memory. */
  secretUsers?: { name: string; password: string; role: Role }[];
  /** How long a verified credential stays cached (ms, default 60 s). */
  cacheTtlMs?: number;
  /** Rescan interval of the credentials folder (ms, default 2000). */
  rescanMs?: number;
  /** Called after a credentials-folder change with what was added/changed/removed (for key files). */
  onCredentialsChange?: (change: CredentialsChange) => Promise<void>;
  /** Error sink for background reloads (logging). */
  onError?: (err: unknown) => void;
}

export interface CredentialsChange {
  added: ClientCredential[];
  removed: ClientCredential[];
  changed: { before: ClientCredential; after: ClientCredential }[];
}

interface CacheEntry {
  user: UserRecord;
  expires: number;
  generation: number;
}

export class UserStore {
  private fileUsers: UserRecord[] = [];
  private credUsers = new Map<string, UserRecord>();
  private secretUsers: UserRecord[] = [];
  private creds = new Map<string, ClientCredential>(); // by client id
  private cache = new Map<string, CacheEntry>();
  private readonly cacheKey = crypto.randomBytes(32);
  private generation = 0;
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private scanning?: Promise<void>;
  private rescanPending = false;
  private closed = false;

  constructor(readonly opts: UserStoreOptions) {}

  /** Loads everything and starts watching the credentials folder. */
  async start(): Promise<void> {
    await this.reload();
    const dir = this.opts.credentialsDir;
    if (dir) {
      try {
        // Kubernetes swaps the `..data` symlink: a rename event on the folder; we rescan on any event.
        this.watcher = fsWatch(dir, { persistent: false }, () => this.scheduleScan());
        this.watcher.on('error', () => {});
      } catch {
        // folder may not exist yet: the periodic rescan picks it up
      }
      this.timer = setInterval(() => this.scheduleScan(), this.opts.rescanMs ?? 2000);
      this.timer.unref();
    }
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
  }

  /** Re-reads the users file, the secret users and the credentials folder; clears the credential cache. */
  async reload(): Promise<void> {
    if (this.opts.usersFile) this.fileUsers = await readUsersFile(this.opts.usersFile);
    const secret: UserRecord[] = [];
    for (const s of this.opts.secretUsers ?? []) {
      secret.push({ name: s.name, role: s.role, hash: await hashPassword(s.password), source: 'secret' });
    }
    this.secretUsers = secret;
    this.invalidate();
    await this.scanCredentials();
  }

  invalidate(): void {
    this.generation++;
    this.cache.clear();
  }

  private scheduleScan(): void {
    if (this.closed) return;
    if (this.scanning) {
      this.rescanPending = true;
      return;
    }
    this.scanning = this.scanCredentials()
      .catch((err) => this.opts.onError?.(err))
      .finally(() => {
        this.scanning = undefined;
        if (this.rescanPending) {
          this.rescanPending = false;
          this.scheduleScan();
        }
      });
  }

  /** Rescans the credentials folder now (also used by tests and the refresh API). */
  async scanCredentials(): Promise<void> {
    const dir = this.opts.credentialsDir;
    if (!dir) return;
    const { creds } = await readCredentialsDir(dir);
    const next = new Map(creds.map((c) => [c.clientId, c]));
    const change: CredentialsChange = { added: [], removed: [], changed: [] };
    for (const [id, c] of next) {
      const old = this.creds.get(id);
      if (!old) change.added.push(c);
      else if (old.user !== c.user || old.password !== c.password || old.host !== c.host) change.changed.push({ before: old, after: c });
    }
    for (const [id, c] of this.creds) if (!next.has(id)) change.removed.push(c);
    if (!change.added.length && !change.removed.length && !change.changed.length && this.credUsers.size === next.size) return;
    const users = new Map<string, UserRecord>();
    const role = this.opts.credentialsRole ?? 'append';
    for (const c of next.values()) {
      const prev = this.credUsers.get(c.user);
      const old = this.creds.get(c.clientId);
      const same = prev && old && old.user === c.user && old.password === c.password;
      users.set(c.user, same ? prev : { name: c.user, role, hash: await hashPassword(c.password), source: 'credentials', host: c.host });
    }
    this.creds = next;
    this.credUsers = users;
    this.invalidate();
    if (this.opts.onCredentialsChange && (change.added.length || change.removed.length || change.changed.length)) {
      await this.opts.onCredentialsChange(change);
    }
  }

  /** Every user, users-file entries first; a name in the users file wins over the same name elsewhere. */
  all(): UserRecord[] {
    const seen = new Set<string>();
    const out: UserRecord[] = [];
    for (const u of [...this.fileUsers, ...this.secretUsers, ...this.credUsers.values()]) {
      if (seen.has(u.name)) continue;
      seen.add(u.name);
      out.push(u);
    }
    return out;
  }

  list(): UserInfo[] {
    return this.all().map((u) => ({ name: u.name, role: u.role, ...(u.keyId ? { keyId: u.keyId } : {}), source: u.source ?? 'file' }));
  }

  get(name: string): UserRecord | undefined {
    return this.all().find((u) => u.name === name);
  }

  /** Users from the users file only (what the admin API edits). */
  fileRecords(): UserRecord[] {
    return this.fileUsers.slice();
  }

  /** Replaces the users-file users (after the admin API wrote the file). */
  setFileRecords(users: UserRecord[]): void {
    this.fileUsers = users.map((u) => ({ ...u, source: 'file' }));
    this.invalidate();
  }

  /** Checks a user name and password; the result is cached for a short while keyed by an HMAC of both. */
  async authenticate(name: string, password: string): Promise<UserRecord | undefined> {
    const key = crypto.createHmac('sha256', this.cacheKey).update(name).update('\0').update(password).digest('base64');
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.expires > now && hit.generation === this.generation) return hit.user;
    const gen = this.generation;
    const user = this.get(name);
    // Hash even for unknown users so timing does not reveal which names exist.
    const ok = await verifyPassword(password, user?.hash ?? DUMMY_HASH);
    if (!user || !ok) return undefined;
    if (gen === this.generation) {
      if (this.cache.size > 10000) this.cache.clear();
      this.cache.set(key, { user, expires: now + (this.opts.cacheTtlMs ?? 60_000), generation: gen });
    }
    return user;
  }
}

const DUMMY_HASH = `scrypt$${DEFAULT_SCRYPT.N}$${DEFAULT_SCRYPT.r}$${DEFAULT_SCRYPT.p}$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`;

// ---------------------------------------------------------------------------------------------------------
// Failed-login delay per client address

export class FailureThrottle {
  private failures = new Map<string, { count: number; last: number }>();

  constructor(
    private readonly baseMs = 200,
    private readonly maxMs = 5000,
    private readonly forgetMs = 10 * 60_000,
  ) {}

  /** Records a failure and returns how long to wait before answering 401. */
  fail(ip: string): number {
    const now = Date.now();
    let f = this.failures.get(ip);
    if (!f || now - f.last > this.forgetMs) f = { count: 0, last: now };
    f.count++;
    f.last = now;
    this.failures.set(ip, f);
    if (this.failures.size > 100_000) this.failures.clear();
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(f.count - 1, 20));
  }
}
