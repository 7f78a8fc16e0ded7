// Repository key files for server users: `users add U` creates a key file that opens the master key with U's
// password, `users remove` deletes it, `users set` replaces it. The server holds the repository password only
// for this and to report the repository id; requests only ever move ciphertext.
import type { Backend } from '../storage/backend.js';
import type { MasterKey } from '../repository/crypto.js';
import { addKey as addKeyFile, findKey, listKeys, removeKey as removeKeyFile, tryKey } from '../repository/key-file.js';
import { loadConfig } from '../repository/config-file.js';

/** Manages per-user key files with the repository password held by the server. */
export class RepoKeyManager {
  private own?: { master: MasterKey; keyId: string };

  constructor(
    private readonly be: Backend,
    private readonly repoPassword: string | Buffer,
    private readonly hostname = 'dmctl-server',
  ) {}

  private async ownKey(): Promise<{ master: MasterKey; keyId: string }> {
    this.own ??= await findKey(this.be, this.repoPassword, { all: true });
    return this.own;
  }

  /** The repository id from the config file. */
  async repositoryId(): Promise<string> {
    return (await loadConfig(this.be, (await this.ownKey()).master)).id;
  }

  /** The key file of `user` that `password` opens, looking only at key files written for that user name. */
  async findUserKey(user: string, password: string): Promise<string | undefined> {
    const own = await this.ownKey();
    for (const k of await listKeys(this.be)) {
      if (k.username !== user || k.id === own.keyId) continue;
      try {
        if (await tryKey(this.be, k.id, password)) return k.id;
      } catch {
        // a damaged or vanished key file is not ours to judge here
      }
    }
    return undefined;
  }

  /** Returns the key file of `user` opened by `password`, adding one when there is none. */
  async ensureKey(user: string, password: string, host?: string): Promise<string> {
    return (await this.findUserKey(user, password)) ?? this.addKey(user, password, host);
  }

  /** Adds a new key file for `password`; returns its id. */
  async addKey(user: string, password: string, host?: string): Promise<string> {
    const own = await this.ownKey();
    return addKeyFile(this.be, own.master, password, { username: user, hostname: host ?? this.hostname });
  }

  /** Removes a key file, never the one the server's own password opens. */
  async removeKey(keyId: string): Promise<void> {
    const own = await this.ownKey();
    if (own.keyId === keyId) return;
    await removeKeyFile(this.be, keyId);
  }

  /** Removes the key file of `user` that `password` opens, if any; returns its id. */
  async removeKeyFor(user: string, password: string): Promise<string | undefined> {
    const id = await this.findUserKey(user, password);
    if (id) await this.removeKey(id);
    return id;
  }
}
