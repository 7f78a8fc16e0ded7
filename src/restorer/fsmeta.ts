// Node metadata → file system, for restore: owner (when root), mode, extended attributes and
// times (last, since everything else may touch them), plus creation of fifos and device nodes,
// which Node.js cannot make itself (coreutils mkfifo/mknod are spawned).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, lchown, link, lutimes, open, rename, unlink, utimes } from 'node:fs/promises';
import { chmodSync, fchmodSync, fchownSync, fstatSync, futimesSync, lchownSync, lutimesSync, utimesSync } from 'node:fs';
import * as xattr from '@napi-rs/xattr';
import { DmctlError, TargetError, describeSystemError } from '../core/errors.js';
import { withStringPath } from '../archiver/fsnode.js';
import type { GoTime } from '../repository/gotime.js';
import { goQuote } from '../repository/goquote.js';
import { posixMode, type Node } from '../repository/tree.js';

export interface ApplyMetadataOptions {
  /** Restore uid/gid (only effective when running as root, like restic). */
  owner: boolean;
}

const O_PATH = 0o10000000;
const O_DIRECTORY = 0o200000;

/** Whether this process can restore owners (it runs as root); asked once. */
const isRoot = typeof process.geteuid === 'function' && process.geteuid() === 0;

function shown(path: Buffer): string {
  return goQuote(path);
}

function targetError(what: string, path: Buffer, err: unknown): TargetError {
  return new TargetError(`${what} ${shown(path)}: ${describeSystemError(err)}`, { cause: err });
}

function splitParent(path: Buffer): { dir: Buffer; base: Buffer } {
  const slash = path.lastIndexOf(0x2f);
  if (slash < 0) return { dir: Buffer.from('.'), base: path };
  return { dir: slash === 0 ? Buffer.from('/') : path.subarray(0, slash), base: path.subarray(slash + 1) };
}

function tmpName(): string {
  return `.dmctl-tmp-${randomBytes(8).toString('hex')}`;
}

async function setXattrs(path: Buffer, node: Node): Promise<void> {
  const attrs = node.extendedAttributes ?? [];
  if (attrs.length === 0) return;
  const apply = async (p: string): Promise<true> => {
    for (const a of attrs) await xattr.setAttribute(p, a.name, a.value);
    return true;
  };
  const done = await withStringPath(path, node.type === 'dir', apply);
  if (done) return;
  // A non-directory whose own name is not UTF-8: the xattr library cannot name it, so give it a
  // temporary UTF-8 name in the same directory for the duration (we own restore targets).
  const { dir } = splitParent(path);
  const tmp = Buffer.concat([dir, Buffer.from('/' + tmpName())]);
  await rename(path, tmp);
  try {
    await apply(tmp.toString('utf8'));
  } finally {
    await rename(tmp, path);
  }
}

/**
 * A time for fs.utimes, as a numeric string. libuv turns the double back into a timespec and
 * drops everything below a microsecond, so passing sec + nsec/1e9 lands one microsecond early
 * whenever the double rounds down (a double near 1.7e9 s only resolves ~0.24 µs). Aiming at the
 * middle of the wanted microsecond gives exactly floor(nsec / 1000) µs.
 */
export function utimeSeconds(t: GoTime): string {
  const usec = Math.floor(t.nsec / 1000);
  return String(t.unixSec + (usec * 1000 + 500) / 1e9);
}

/**
 * Restores a node's metadata on an existing path: lchown (when `owner` and running as root),
 * chmod (not for symlinks), extended attributes, then atime/mtime last. Every step is attempted;
 * the first failure is thrown afterwards as a TargetError.
 */
export async function applyMetadata(path: Buffer, node: Node, opts: ApplyMetadataOptions): Promise<void> {
  let first: TargetError | undefined;
  const note = (e: TargetError): void => {
    first ??= e;
  };

  if (opts.owner && isRoot) {
    try {
      await lchown(path, node.uid, node.gid);
    } catch (err) {
      note(targetError('cannot change owner of', path, err));
    }
  }

  if (node.type !== 'symlink') {
    try {
      await chmod(path, posixMode(node.mode));
    } catch (err) {
      note(targetError('cannot change mode of', path, err));
    }
  }

  if (node.type !== 'symlink') {
    try {
      await setXattrs(path, node);
    } catch (err) {
      note(targetError('cannot set extended attributes on', path, err));
    }
  }

  // fs.utimes/lutimes take float seconds and libuv truncates them to whole microseconds, so the
  // last three nanosecond digits restic stored cannot be reproduced (see utimeSeconds).
  // They are passed as numeric strings because Node replaces a negative *number* (before 1970)
  // with the current time, while a numeric string is taken as is.
  try {
    const atime = utimeSeconds(node.atime);
    const mtime = utimeSeconds(node.mtime);
    if (node.type === 'symlink') await lutimes(path, atime, mtime);
    else await utimes(path, atime, mtime);
  } catch (err) {
    note(targetError('cannot set times of', path, err));
  }

  if (first) throw first;
}

/** What a regular file or symlink without extended attributes needs restored, in plain values a worker can take. */
export interface FileMeta {
  /** chmod mode (permissions, setuid, setgid, sticky). */
  mode: number;
  uid: number;
  gid: number;
  /** Times as utimeSeconds gives them. */
  atime: string;
  mtime: string;
}

export function fileMeta(node: Node): FileMeta {
  return { mode: posixMode(node.mode), uid: node.uid, gid: node.gid, atime: utimeSeconds(node.atime), mtime: utimeSeconds(node.mtime) };
}

/** The three blocking calls of a file's metadata, by path or through a descriptor. */
interface MetaCalls {
  chown(uid: number, gid: number): void;
  /** Absent for symlinks. */
  chmod?(mode: number): void;
  utimes(atime: number, mtime: number): void;
}

/** Owner (as root), mode, then times; every step is attempted, the first failure thrown afterwards. */
function applyMetaCalls(calls: MetaCalls, path: Buffer, meta: FileMeta, owner: boolean): void {
  let first: TargetError | undefined;
  const step = (what: string, f: () => void) => {
    try {
      f();
    } catch (err) {
      first ??= targetError(what, path, err);
    }
  };
  if (owner && isRoot) step('cannot change owner of', () => calls.chown(meta.uid, meta.gid));
  if (calls.chmod) step('cannot change mode of', () => calls.chmod!(meta.mode));
  // Times as numeric strings (see utimeSeconds), which the fs calls accept.
  step('cannot set times of', () => calls.utimes(meta.atime as unknown as number, meta.mtime as unknown as number));
  if (first) throw first;
}

/**
 * Metadata of a regular file or directory (or a symlink: no chmod, lutimes) without extended
 * attributes, with blocking calls, for restores of many small files and directories (each call is
 * a few microseconds; the async versions cost a thread-pool round trip each). Same order and error
 * handling as applyMetadata.
 */
export function applyFileMetaSync(path: Buffer, meta: FileMeta, owner: boolean, symlink = false): void {
  applyMetaCalls(
    {
      chown: (uid, gid) => lchownSync(path, uid, gid),
      chmod: symlink ? undefined : (mode) => chmodSync(path, mode),
      utimes: (a, m) => (symlink ? lutimesSync(path, a, m) : utimesSync(path, a, m)),
    },
    path,
    meta,
    owner,
  );
}

/**
 * applyFileMetaSync for a regular file through a descriptor it is open with (after the last write):
 * the same steps, order and errors, without resolving its path three more times (a third of the
 * system time of a restore of many small files). `path` names the file in errors.
 *
 * With `created`, the file is one this restore has just made with the permission bits of
 * `meta.mode` (see restoreRegion): one fstat tells which of owner and mode are already right, and
 * only those that are not get a call. Each chown or chmod is an inode update (and a journal entry
 * where the file system keeps a journal); a root restore of root's files, or one under the usual
 * umask, needs neither. Such a file has no setuid or setgid bit (a chown would clear them): those
 * come with the chmod, after any chown.
 */
export function applyFileMetaFd(fd: number, path: Buffer, meta: FileMeta, owner: boolean, created = false): void {
  let st: { uid: number; gid: number; mode: number } | undefined;
  if (created) {
    try {
      st = fstatSync(fd);
    } catch {
      st = undefined; // then every call is made, as without `created`
    }
  }
  applyMetaCalls(
    {
      chown: (uid, gid) => {
        if (st && st.uid === uid && st.gid === gid) return;
        fchownSync(fd, uid, gid);
      },
      chmod: (mode) => {
        if (st && (st.mode & 0o7777) === mode) return;
        fchmodSync(fd, mode);
      },
      utimes: (a, m) => futimesSync(fd, a, m),
    },
    path,
    meta,
    owner,
  );
}

const REPLACEMENT = Buffer.from('\ufffd', 'utf8');

/**
 * The bytes to give symlink(2) for a decoded `linktarget`. Trees hold link targets as Go strings:
 * each byte that was not valid UTF-8 is stored as U+FFFD, and restic restores it as U+FFFD. The
 * tree decoder keeps those marks as byte 0xFF (which never occurs in UTF-8) so that trees
 * re-encode to the same bytes; here they become U+FFFD again, as restic writes them, instead of a
 * 0xFF byte the original target may never have had.
 */
export function linkTargetBytes(target: Buffer): Buffer {
  if (!target.includes(0xff)) return target;
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < target.length; i++) {
    if (target[i] !== 0xff) continue;
    parts.push(target.subarray(start, i), REPLACEMENT);
    start = i + 1;
  }
  parts.push(target.subarray(start));
  return Buffer.concat(parts);
}

/** Linux st_rdev → [major, minor] (glibc's gnu_dev_major/minor encoding). */
export function splitDevice(rdev: bigint): [bigint, bigint] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [major, minor];
}

/** [major, minor] → Linux st_rdev. */
export function makeDevice(major: bigint, minor: bigint): bigint {
  return (
    ((major & 0xfffn) << 8n) |
    ((major & ~0xfffn) << 32n) |
    (minor & 0xffn) |
    ((minor & ~0xffn) << 12n)
  );
}

function run(cmd: string, args: string[], extraFd?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'ignore', 'pipe'];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn(cmd, args, { stdio });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      if (stderr.length < 2000) stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(stderr.trim().split('\n').pop() || `${cmd} exited with ${code ?? signal}`));
    });
  });
}

/**
 * Creates a fifo or device node for `node` at `path` with mode 0600 (applyMetadata sets the real
 * mode afterwards). Sockets are skipped like restic does. Fails if `path` exists.
 */
export async function makeSpecial(path: Buffer, node: Node): Promise<void> {
  let args: string[];
  let cmd: string;
  switch (node.type) {
    case 'fifo':
      cmd = 'mkfifo';
      args = ['-m', '600'];
      break;
    case 'dev':
    case 'chardev': {
      const [major, minor] = splitDevice(node.device ?? 0n);
      cmd = 'mknod';
      args = ['-m', '600', '', node.type === 'dev' ? 'b' : 'c', major.toString(), minor.toString()];
      break;
    }
    case 'socket':
      return;
    default:
      throw new DmctlError('not-special', `${node.type} is not a fifo or device node`, { hint: 'this is a bug in dmctl: please report it' });
  }
  const withPath = (p: string): string[] => (cmd === 'mknod' ? [...args.slice(0, 2), p, ...args.slice(3)] : [...args, p]);
  try {
    if (Buffer.from(path.toString('utf8'), 'utf8').equals(path)) {
      await run(cmd, withPath(path.toString('utf8')));
      return;
    }
    // Child processes take string arguments only: create under a temporary UTF-8 name inside the
    // target directory (reached through an inherited fd), then hard-link it to the real byte name
    // (link fails if that exists) and drop the temporary name.
    const { dir } = splitParent(path);
    const tmp = tmpName();
    const fh = await open(dir, O_PATH | O_DIRECTORY);
    try {
      await run(cmd, withPath(`/proc/self/fd/3/${tmp}`), fh.fd);
    } finally {
      await fh.close();
    }
    const tmpPath = Buffer.concat([dir, Buffer.from('/' + tmp)]);
    try {
      await link(tmpPath, path);
    } finally {
      await unlink(tmpPath);
    }
  } catch (err) {
    if (err instanceof DmctlError) throw err;
    throw targetError(`cannot create ${node.type}`, path, err);
  }
}
