// Local filesystem backend, restic's layout and write discipline: temp file in the final directory,
// write, fsync, link into place (never overwriting), fsync the directory, files 0400, dirs 0700.
import fs, { promises as fsp, constants as fsc } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { DmctlError, StorageError, describeSystemError } from '../core/errors.js';
import { Backend, FileInfo, FileType, FILE_TYPES, ID_RE, SpoolingBackend } from './backend.js';

/** A file system error as a StorageError; `noSpaceHint` for a disk other than the repository's. */
export function mapFsError(err: unknown, what: string, noSpaceHint = 'free space on the repository disk; the repository is still consistent'): StorageError {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT': return new StorageError('not-found', `${what}: not found`, { cause: err });
    case 'EEXIST': return new StorageError('already-exists', `${what}: already exists`, { cause: err });
    case 'EACCES':
    case 'EPERM': return new StorageError('access-denied', `${what}: permission denied`, { cause: err });
    case 'ENOSPC':
    case 'EDQUOT': return new StorageError('no-space', `${what}: ${describeSystemError(err)}`, { cause: err, hint: noSpaceHint });
    case 'EROFS': return new StorageError('read-only', `${what}: read-only file system`, { cause: err });
    default: return new StorageError('other', `${what}: ${describeSystemError(err)}`, { cause: err });
  }
}

export class LocalBackend implements Backend, SpoolingBackend {
  readonly location: string;
  readonly connections = 4;
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.location = `local:${this.root}`;
  }

  dirOf(type: FileType, name: string): string {
    if (type === 'config') return this.root;
    if (type === 'data') return path.join(this.root, 'data', name.slice(0, 2));
    return path.join(this.root, type);
  }

  pathOf(type: FileType, name: string): string {
    if (type === 'config') return path.join(this.root, 'config');
    return path.join(this.dirOf(type, name), name);
  }

  async create(): Promise<void> {
    try {
      await fsp.mkdir(this.root, { recursive: true, mode: 0o700 });
      for (const t of FILE_TYPES) {
        if (t === 'config' || t === 'data') continue;
        await fsp.mkdir(path.join(this.root, t), { recursive: true, mode: 0o700 });
      }
      const data = path.join(this.root, 'data');
      await fsp.mkdir(data, { recursive: true, mode: 0o700 });
      const subs: Promise<unknown>[] = [];
      for (let i = 0; i < 256; i++) subs.push(fsp.mkdir(path.join(data, i.toString(16).padStart(2, '0')), { recursive: true, mode: 0o700 }));
      await Promise.all(subs);
    } catch (err) {
      throw mapFsError(err, `creating repository at ${this.root}`);
    }
  }

  async save(type: FileType, name: string, data: Uint8Array): Promise<void> {
    const final = this.pathOf(type, name);
    const dir = path.dirname(final);
    const tmp = `${final}-tmp-${crypto.randomBytes(6).toString('hex')}`;
    const what = `saving ${type === 'config' ? 'config' : `${type}/${name}`}`;
    let fh: fsp.FileHandle | undefined;
    try {
      try {
        fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
        fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
      }
      let off = 0;
      while (off < data.length) {
        const { bytesWritten } = await fh.write(data, off, data.length - off);
        off += bytesWritten;
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      // link() fails with EEXIST if the final name exists: never overwrite, never a partial file.
      await fsp.link(tmp, final);
      await fsp.unlink(tmp);
      await fsp.chmod(final, 0o400).catch(() => {});
      await syncDir(dir);
    } catch (err) {
      if (fh) await fh.close().catch(() => {});
      await fsp.unlink(tmp).catch(() => {});
      throw mapFsError(err, what);
    }
  }

  /** Temp files go into data/00 (same filesystem; restic skips names that are not IDs). */
  spoolDir(): string {
    return path.join(this.root, 'data', '00');
  }

  spoolError(err: unknown): Error {
    return err instanceof DmctlError ? err : mapFsError(err, `${this.location}: writing a new pack`);
  }

  async adoptFile(type: FileType, name: string, tmpPath: string): Promise<void> {
    const final = this.pathOf(type, name);
    const dir = path.dirname(final);
    try {
      try {
        await fsp.link(tmpPath, final);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') {
          await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
          await fsp.link(tmpPath, final);
        } else if (code !== 'EEXIST' || type !== 'data') throw err;
        // EEXIST for a pack: its name is the SHA-256 of its content, so the bytes are the same.
      }
      await fsp.unlink(tmpPath);
      await fsp.chmod(final, 0o400).catch(() => {});
      await syncDir(dir);
    } catch (err) {
      await fsp.unlink(tmpPath).catch(() => {});
      throw mapFsError(err, `saving ${type}/${name}`);
    }
  }

  async load(type: FileType, name: string, offset = 0, length = 0): Promise<Buffer> {
    const what = `reading ${type === 'config' ? 'config' : `${type}/${name}`}`;
    if (type === 'data' && length > 0) return this.loadRange(name, offset, length, what);
    const p = this.pathOf(type, name);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(p, 'r');
    } catch (err) {
      throw mapFsError(err, what);
    }
    try {
      if (!length) {
        const st = await fh.stat();
        length = st.size - offset;
        if (length < 0) throw new StorageError('other', `${what}: offset ${offset} is past the end (${st.size} bytes)`);
      }
      const handle = fh;
      return await readFull(async (buf, off, len, pos) => (await handle.read(buf, off, len, pos)).bytesRead, offset, length, what);
    } catch (err) {
      if (err instanceof StorageError) throw err;
      throw mapFsError(err, what);
    } finally {
      await fh.close().catch(() => {});
    }
  }

  // Ranged reads of packs (blobs for restore, trees for check and backup) go through a small cache
  // of open descriptors: packs never change once written, and opening and closing a file for every
  // blob costs two more thread-pool round trips than the read itself.
  private readonly fds = new Map<string, OpenPack>();
  private static readonly MAX_OPEN = 32;

  async loadInto(type: FileType, name: string, offset: number, dest: Buffer): Promise<void> {
    const what = `reading ${type}/${name}`;
    if (type !== 'data') {
      dest.set(await this.load(type, name, offset, dest.length));
      return;
    }
    await this.loadRange(name, offset, dest.length, what, dest);
  }

  private async loadRange(name: string, offset: number, length: number, what: string, dest?: Buffer): Promise<Buffer> {
    const h = await this.openPack(name, what);
    try {
      return await readFull((buf, off, len, pos) => readAt(h.fd, buf, off, len, pos), offset, length, what, dest);
    } catch (err) {
      if (err instanceof StorageError) throw err;
      throw mapFsError(err, what);
    } finally {
      h.refs--;
      if (h.doomed && h.refs === 0) closeQuietly(h);
      this.trimFds();
    }
  }

  private async openPack(name: string, what: string): Promise<OpenPack> {
    let h = this.fds.get(name);
    if (h) {
      // Most recently used last.
      this.fds.delete(name);
      this.fds.set(name, h);
      h.refs++;
      try {
        await h.ready;
      } catch (err) {
        h.refs--;
        throw err;
      }
      return h;
    }
    const p = this.pathOf('data', name);
    const entry: OpenPack = { fd: -1, refs: 1, ready: Promise.resolve(), doomed: false };
    entry.ready = new Promise<void>((resolve, reject) => {
      fs.open(p, 'r', (err, fd) => {
        if (err) {
          if (this.fds.get(name) === entry) this.fds.delete(name);
          reject(mapFsError(err, what));
        } else {
          entry.fd = fd;
          resolve();
        }
      });
    });
    this.fds.set(name, entry);
    h = entry;
    try {
      await h.ready;
    } catch (err) {
      h.refs--;
      throw err;
    }
    return h;
  }

  private trimFds(): void {
    for (const [name, h] of this.fds) {
      if (this.fds.size <= LocalBackend.MAX_OPEN) break;
      if (h.refs > 0) continue;
      this.fds.delete(name);
      closeQuietly(h);
    }
  }

  /** Forgets a cached descriptor (the file is being removed: its space must be freed now). */
  private dropFd(name: string): void {
    const h = this.fds.get(name);
    if (!h) return;
    this.fds.delete(name);
    if (h.refs === 0) closeQuietly(h);
    else h.doomed = true;
  }

  async stat(type: FileType, name: string): Promise<FileInfo> {
    try {
      const st = await fsp.stat(this.pathOf(type, name));
      return { name: type === 'config' ? 'config' : name, size: st.size };
    } catch (err) {
      throw mapFsError(err, `stat ${type === 'config' ? 'config' : `${type}/${name}`}`);
    }
  }

  async *list(type: FileType): AsyncIterable<FileInfo> {
    if (type === 'config') {
      try {
        yield await this.stat('config', 'config');
      } catch (err) {
        if ((err as StorageError).kind !== 'not-found') throw err;
      }
      return;
    }
    const dirs: string[] = [];
    if (type === 'data') {
      let subs: string[] = [];
      try {
        subs = await fsp.readdir(path.join(this.root, 'data'));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw mapFsError(err, 'listing data');
      }
      for (const s of subs.sort()) if (/^[0-9a-f]{2}$/.test(s)) dirs.push(path.join(this.root, 'data', s));
    } else {
      dirs.push(path.join(this.root, type));
    }
    const listDir = async (dir: string): Promise<(FileInfo | undefined)[]> => {
      let names: string[];
      try {
        names = await fsp.readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw mapFsError(err, `listing ${type}`);
      }
      const valid = names.filter((n) => ID_RE.test(n));
      return Promise.all(
        valid.map(async (n) => {
          try {
            const st = await fsp.stat(path.join(dir, n));
            return { name: n, size: st.size };
          } catch {
            return undefined; // removed while listing
          }
        }),
      );
    };
    // data/ has 256 subdirectories: read several at once (one after another, cold, they took longer
    // than everything else a small prune does), in a window so a huge listing is not held at once.
    const WINDOW = 16;
    const pending: Promise<(FileInfo | undefined)[]>[] = [];
    let next = 0;
    const fill = () => {
      while (pending.length < WINDOW && next < dirs.length) {
        const p = listDir(dirs[next++]);
        p.catch(() => {}); // awaited in turn below
        pending.push(p);
      }
    };
    fill();
    while (pending.length) {
      const infos = await pending.shift()!;
      fill();
      for (const fi of infos) if (fi) yield fi;
    }
  }

  async remove(type: FileType, name: string): Promise<void> {
    if (type === 'data') this.dropFd(name);
    const p = this.pathOf(type, name);
    try {
      await fsp.unlink(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code === 'EACCES' || code === 'EPERM') {
        // restic's files are 0400; the directory's write bit decides, but try making it writable.
        try {
          await fsp.chmod(p, 0o600);
          await fsp.unlink(p);
          return;
        } catch (err2) {
          throw mapFsError(err2, `removing ${type}/${name}`);
        }
      }
      throw mapFsError(err, `removing ${type}/${name}`);
    }
  }

  async close(): Promise<void> {
    for (const h of this.fds.values()) {
      if (h.refs === 0) closeQuietly(h);
      else h.doomed = true;
    }
    this.fds.clear();
  }
}

interface OpenPack {
  fd: number;
  refs: number;
  ready: Promise<void>;
  /** Left the cache while in use: the last reader closes it. */
  doomed: boolean;
}

function closeQuietly(h: OpenPack): void {
  h.ready.then(() => fs.close(h.fd, () => {}), () => {});
}

/** Reads `length` bytes at `offset` with `read` (which may return short counts); a short file is an error. */
export async function readFull(read: (buf: Buffer, off: number, len: number, pos: number) => Promise<number>, offset: number, length: number, what: string, dest?: Buffer): Promise<Buffer> {
  const buf = dest ?? Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = await read(buf, got, length - got, offset + got);
    if (n === 0) break;
    got += n;
  }
  if (got < length) throw new StorageError('other', `${what}: file is truncated (wanted ${length} bytes at offset ${offset}, got ${got})`);
  return buf;
}

/** fs.read as a promise; `pos` null reads at the descriptor's current position. */
export function readAt(fd: number, buf: Buffer, off: number, len: number, pos: number | null): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

async function syncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // some filesystems refuse fsync on directories; the rename is still atomic
  } finally {
    await fh?.close().catch(() => {});
  }
}
