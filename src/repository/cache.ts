// Local cache of a remote repository's index files and tree packs, as restic keeps one: a backup,
// restore, ls or check of a cloud repository otherwise fetches every directory's tree with its own
// ranged request, and every index file on every run. Files are kept exactly as stored (encrypted),
// under DIR/REPO_ID/{index,data/XX}/ID, and are verified like a download (index files by their
// name's hash and MAC, packs by their SHA-256 before they are kept, blobs by MAC and hash on use).
// The cache is an accelerator only: any error in it is ignored and the repository is read instead.
import { promises as fsp, constants as fsc } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { readAt, readFull } from '../storage/local.js';

export type CachedType = 'index' | 'data';

const CACHEDIR_TAG = 'Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by dmctl.\n# For information about cache directory tags see https://bford.info/cachedir/\n';
const HEX64 = /^[0-9a-f]{64}$/;

export class RepoCache {
  private constructor(readonly dir: string) {}

  /** The cache of repository `repoId` under `root`, created if needed; undefined when it cannot be. */
  static async open(root: string, repoId: string): Promise<RepoCache | undefined> {
    if (!HEX64.test(repoId)) return undefined;
    try {
      await fsp.mkdir(root, { recursive: true, mode: 0o700 });
      await fsp.writeFile(path.join(root, 'CACHEDIR.TAG'), CACHEDIR_TAG, { flag: 'wx', mode: 0o644 }).catch(() => {});
      const dir = path.join(root, repoId);
      await fsp.mkdir(path.join(dir, 'index'), { recursive: true, mode: 0o700 });
      await fsp.mkdir(path.join(dir, 'data'), { recursive: true, mode: 0o700 });
      return new RepoCache(dir);
    } catch {
      return undefined;
    }
  }

  private pathOf(type: CachedType, id: string): string {
    return type === 'index' ? path.join(this.dir, 'index', id) : path.join(this.dir, 'data', id.slice(0, 2), id);
  }

  /** A cached file's whole content, or undefined. */
  async get(type: CachedType, id: string): Promise<Buffer | undefined> {
    try {
      return await fsp.readFile(this.pathOf(type, id));
    } catch {
      return undefined;
    }
  }

  /** `length` bytes at `offset` of a cached pack, or undefined (not cached, or shorter than asked). */
  async readRange(id: string, offset: number, length: number): Promise<Buffer | undefined> {
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(this.pathOf('data', id), fsc.O_RDONLY);
      const fd = fh.fd;
      return await readFull((buf, off, len, pos) => readAt(fd, buf, off, len, pos), offset, length, id);
    } catch {
      return undefined;
    } finally {
      await fh?.close().catch(() => {});
    }
  }

  /** Keeps a verified file (temp file, then rename: readers never see a partial one). Best effort. */
  async put(type: CachedType, id: string, data: Buffer): Promise<void> {
    const final = this.pathOf(type, id);
    const tmp = `${final}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
    try {
      await fsp.mkdir(path.dirname(final), { recursive: true, mode: 0o700 });
      await fsp.writeFile(tmp, data, { mode: 0o600 });
      await fsp.rename(tmp, final);
    } catch {
      await fsp.unlink(tmp).catch(() => {});
    }
  }

  async drop(type: CachedType, id: string): Promise<void> {
    await fsp.unlink(this.pathOf(type, id)).catch(() => {});
  }

  /**
   * Removes what the repository no longer has: index files not listed, packs no index names
   * (pruned), and temp files of interrupted writes. Best effort.
   */
  async forgetAllBut(indexIds: ReadonlySet<string>, packIds: { has(id: string): boolean }): Promise<void> {
    try {
      for (const n of await fsp.readdir(path.join(this.dir, 'index'))) {
        if (!indexIds.has(n)) await fsp.unlink(path.join(this.dir, 'index', n)).catch(() => {});
      }
      for (const sub of await fsp.readdir(path.join(this.dir, 'data'))) {
        const d = path.join(this.dir, 'data', sub);
        for (const n of await fsp.readdir(d).catch(() => [] as string[])) {
          if (!packIds.has(n)) await fsp.unlink(path.join(d, n)).catch(() => {});
        }
      }
    } catch {
      // a cache that cannot be cleaned is still correct: entries are verified when used
    }
  }
}

/**
 * The default cache root: $XDG_CACHE_HOME/dmctl, or ~/.cache/dmctl when XDG_CACHE_HOME is unset or
 * not absolute (as for the connection file's XDG_CONFIG_HOME).
 */
export function defaultCacheRoot(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  const xdg = env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(home, '.cache'), 'dmctl');
}
