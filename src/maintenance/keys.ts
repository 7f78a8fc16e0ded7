// Repository keys (key list|add|remove|passwd): several passwords can open the same repository,
// each through its own key file wrapping the one master key.
import { DmctlError, UsageError, isNotFound } from '../core/errors.js';
import { addKey, KeyInfo, listKeys, removeKey } from '../repository/key-file.js';
import { RepoLock } from '../repository/lock.js';
import { Repository } from '../repository/repository.js';

export interface KeyListEntry extends KeyInfo {
  /** This key opened the repository. */
  current: boolean;
}

export async function listRepoKeys(repo: Repository): Promise<KeyListEntry[]> {
  const keys = await listKeys(repo.backend);
  return keys
    .map((k) => ({ ...k, current: k.id === repo.keyId }))
    .sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : a.id < b.id ? -1 : 1));
}

/** Adds a key file for `password`; returns its ID. */
export async function addRepoKey(repo: Repository, password: Buffer, opts: { username?: string; hostname?: string } = {}): Promise<string> {
  if (password.length === 0) throw new UsageError('an empty password is not allowed');
  return addKey(repo.backend, repo.key, password, opts);
}

/** Resolves a key ID prefix to the full ID. */
export async function resolveKeyId(repo: Repository, prefix: string): Promise<string> {
  if (!/^[0-9a-f]{1,64}$/.test(prefix)) throw new UsageError(`invalid key ID ${JSON.stringify(prefix)}`, 'list the keys with `dmctl key list`');
  const ids = (await listKeys(repo.backend)).map((k) => k.id).filter((id) => id.startsWith(prefix));
  if (ids.length === 0) throw new DmctlError('key-not-found', `no key matches ${prefix}`, { hint: 'list the keys with `dmctl key list`' });
  if (ids.length > 1) throw new UsageError(`key ID prefix ${prefix} is ambiguous (${ids.length} keys)`, 'give more characters of the ID');
  return ids[0];
}

/** Removes a key (never the one in use). Takes an exclusive lock like restic 0.14 unless `locked`. */
export async function removeRepoKey(repo: Repository, idOrPrefix: string, opts: { retryLockMs?: number; locked?: boolean } = {}): Promise<string> {
  const lock = opts.locked ? undefined : await RepoLock.acquire(repo, { exclusive: true, retryMs: opts.retryLockMs });
  try {
    const id = await resolveKeyId(repo, idOrPrefix);
    if (id === repo.keyId) {
      throw new UsageError('refusing to remove the key currently used to access the repository', 'open the repository with another key (password) to remove this one, or use `dmctl key passwd`');
    }
    await removeKey(repo.backend, id);
    return id;
  } finally {
    await lock?.release();
  }
}

/** Changes the password: adds a key for `password`, then removes the key in use. */
export async function changeRepoPassword(
  repo: Repository,
  password: Buffer,
  opts: { retryLockMs?: number; locked?: boolean; username?: string; hostname?: string } = {},
): Promise<{ added: string; removed: string }> {
  const lock = opts.locked ? undefined : await RepoLock.acquire(repo, { exclusive: true, retryMs: opts.retryLockMs });
  try {
    const added = await addRepoKey(repo, password, opts);
    try {
      await removeKey(repo.backend, repo.keyId);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return { added, removed: repo.keyId };
  } finally {
    await lock?.release();
  }
}
