// Repository key files for server users: `users add U` creates a key file that opens the master key with U's
// password, `users remove` deletes it, `users set` replaces it. The server holds the repository password only
// for this (and to report the repository id). The key-file module belongs to the repository layer; it is
// loaded lazily so the server runs (without key management) even where that module is unavailable.
import type { Backend } from '../storage/backend.js';
import { DmctlError } from '../core/errors.js';

export interface MasterKeyLike {
  encrypt: Buffer;
  macK: Buffer;
  macR: Buffer;
}

interface KeyFileModule {
  addKey(be: Backend, master: MasterKeyLike, password: string | Buffer, opts?: { username?: string; hostname?: string }): Promise<string>;
  findKey(be: Backend, password: string | Buffer, opts?: { hint?: string }): Promise<{ master: MasterKeyLike; keyId: string }>;
  removeKey(be: Backend, keyId: string): Promise<void>;
}

let modPromise: Promise<KeyFileModule> | undefined;

async function keyFileModule(): Promise<KeyFileModule> {
  // A computed specifier keeps the compiler from requiring the module at build time.
  const spec = '../repository/key-file.js';
  modPromise ??= import(spec).then(
    (m) => m as KeyFileModule,
    (err) => {
      modPromise = undefined;
      throw new DmctlError('key-file-unavailable', 'repository key management is not available in this build', { cause: err });
    },
  );
  return modPromise;
}

/** Manages per-user key files with the repository password held by the server. */
export class RepoKeyManager {
  private master?: MasterKeyLike;

  constructor(
    private readonly be: Backend,
    private readonly repoPassword: string | Buffer,
    private readonly hostname = 'dmctl-server',
  ) {}

  private async masterKey(): Promise<MasterKeyLike> {
    if (!this.master) {
      const m = await keyFileModule();
      this.master = (await m.findKey(this.be, this.repoPassword)).master;
    }
    return this.master;
  }

  /** Adds a key file for `password` unless one already opens the repository with it; returns its id. */
  async ensureKey(user: string, password: string, host?: string): Promise<string> {
    const m = await keyFileModule();
    const master = await this.masterKey();
    try {
      const found = await m.findKey(this.be, password);
      return found.keyId;
    } catch (err) {
      if ((err as DmctlError)?.code !== 'wrong-password') throw err;
    }
    return m.addKey(this.be, master, password, { username: user, hostname: host ?? this.hostname });
  }

  /** Adds a new key file for `password` (always a new one); returns its id. */
  async addKey(user: string, password: string, host?: string): Promise<string> {
    const m = await keyFileModule();
    const master = await this.masterKey();
    return m.addKey(this.be, master, password, { username: user, hostname: host ?? this.hostname });
  }

  /** Removes a key file, never the one that opens the repository with the server's own password. */
  async removeKey(keyId: string): Promise<void> {
    const m = await keyFileModule();
    const own = await m.findKey(this.be, this.repoPassword);
    if (own.keyId === keyId) return;
    await m.removeKey(this.be, keyId);
  }

  /** Removes the key file that `password` opens (if any and if it is not the server's own). */
  async removeKeyFor(password: string): Promise<string | undefined> {
    const m = await keyFileModule();
    try {
      const found = await m.findKey(this.be, password);
      await this.removeKey(found.keyId);
      return found.keyId;
    } catch (err) {
      if ((err as DmctlError)?.code === 'wrong-password') return undefined;
      throw err;
    }
  }
}
