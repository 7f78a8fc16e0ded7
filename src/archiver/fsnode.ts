// File system entry → tree node, exactly as restic 0.14 records it (NodeFromFileInfo + the
// archiver's atime rule): Go FileMode, ns times in the local offset, uid/gid with names, inode,
// device_id, links (file/symlink/dev/chardev), size (files), link target bytes, device (st_rdev),
// and every extended attribute the kernel lists (not for symlinks; xattr errors are ignored).
// `content` (files: []) and `subtree` are left for the archiver to fill.

import type { BigIntStats } from 'node:fs';
import { spawn } from 'node:child_process';
import { open, readlink } from 'node:fs/promises';
import * as xattr from '@napi-rs/xattr';
import { DmctlError } from '../core/errors.js';
import { lookupNames } from '../config/users.js';
import { goTimeFromUnixNs } from '../repository/gotime.js';
import { goFileMode, nodeTypeFromStatMode, type ExtendedAttribute, type Node } from '../repository/tree.js';

export interface NodeFromStatOptions {
  /** Record the real atime (restic --with-atime); default: atime = mtime. */
  withAtime?: boolean;
  /** Skip extended attributes (default: collect them). */
  noXattrs?: boolean;
  /**
   * The entry's node in the parent snapshot. When it is the same inode of the same device with the
   * same change time, its extended attributes and link target are taken from there instead of being
   * read again: setting or removing an xattr updates the change time (as does any metadata change),
   * and a symlink's target cannot change without a new inode. Half of an unchanged tree's backup was
   * these calls (listxattr for every entry, readlink for every link).
   */
  previous?: Node;
}

/** The parent's node describes this inode as it still is (see NodeFromStatOptions.previous). */
function sameInode(prev: Node | undefined, node: Node, st: BigIntStats): prev is Node {
  return (
    prev !== undefined &&
    prev.type === node.type &&
    st.ino !== 0n &&
    prev.inode === st.ino &&
    prev.deviceId === st.dev &&
    prev.ctime.unixSec === node.ctime.unixSec &&
    prev.ctime.nsec === node.ctime.nsec
  );
}

/** Linux O_PATH: an fd that only names the file (no read permission needed, no open side effects). */
const O_PATH = 0o10000000;
const O_DIRECTORY = 0o200000;
const O_NOFOLLOW = 0o400000;

function isUtf8RoundTrip(b: Buffer): boolean {
  return Buffer.from(b.toString('utf8'), 'utf8').equals(b);
}

/**
 * Runs `fn` with a string path naming the same file as the byte path. @napi-rs/xattr takes JS
 * strings (UTF-8) and uses the l* syscalls (no symlink following), so a path that is not valid
 * UTF-8 is reached through /proc/self/fd: via `<dirfd>/.` for directories, or `<parentfd>/<base>`
 * when only the parent part is not UTF-8. A non-directory whose own name is not UTF-8 cannot be
 * reached this way: `fn` is not called and undefined is returned.
 */
export async function withStringPath<T>(path: Buffer, isDir: boolean, fn: (p: string) => Promise<T>): Promise<T | undefined> {
  if (isUtf8RoundTrip(path)) return fn(path.toString('utf8'));
  let target: Buffer;
  let rest: string;
  if (isDir) {
    target = path;
    rest = '.';
  } else {
    const slash = path.lastIndexOf(0x2f);
    const base = path.subarray(slash + 1);
    if (!isUtf8RoundTrip(base)) return undefined;
    target = slash < 0 ? Buffer.from('.') : slash === 0 ? Buffer.from('/') : path.subarray(0, slash);
    rest = base.toString('utf8');
  }
  const fh = await open(target, O_PATH | O_DIRECTORY);
  try {
    return await fn(`/proc/self/fd/${fh.fd}/${rest}`);
  } finally {
    await fh.close();
  }
}

const XATTR_CHILD = [
  'import os, sys, json, base64',
  'p = "/proc/self/fd/3"',
  'out = []',
  'for n in os.listxattr(p):',
  '    try: out.append([n, base64.b64encode(os.getxattr(p, n)).decode()])',
  '    except OSError: pass',
  'sys.stdout.write(json.dumps(out))',
].join('\n');

/**
 * Extended attributes of a non-directory whose own name is not UTF-8, which @napi-rs/xattr cannot
 * spell. A python3 child reads them through an inherited O_PATH descriptor of the file itself
 * (/proc/self/fd/3, which getxattr follows), so the file is not touched. Without python3: [].
 */
async function readXattrsViaChild(fullPath: Buffer): Promise<ExtendedAttribute[]> {
  const fh = await open(fullPath, O_PATH | O_NOFOLLOW);
  try {
    const stdout = await new Promise<string>((resolve, reject) => {
      const child = spawn('python3', ['-c', XATTR_CHILD], { stdio: ['ignore', 'pipe', 'ignore', fh.fd] });
      let out = '';
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (d: string) => (out += d));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`python3 exited with ${code}`))));
    });
    return (JSON.parse(stdout) as [string, string][]).map(([name, value]) => ({ name, value: Buffer.from(value, 'base64') }));
  } finally {
    await fh.close();
  }
}

/** All extended attributes of a path, in the kernel's order; [] when none or on any error. */
export async function readXattrs(fullPath: Buffer, isDir: boolean): Promise<ExtendedAttribute[]> {
  try {
    const out = await withStringPath(fullPath, isDir, async (p) => {
      // One listxattr per entry: the synchronous call costs ~2 µs, the async one a thread-pool
      // round trip of the main thread's time (this runs for every file of a backup).
      const names = xattr.listAttributesSync(p);
      const attrs: ExtendedAttribute[] = [];
      for (const name of names) {
        try {
          const value = xattr.getAttributeSync(p, name);
          if (value !== null) attrs.push({ name, value: Buffer.from(value) });
        } catch {
          // restic warns and skips an attribute it cannot read
        }
      }
      return attrs;
    });
    return out ?? (await readXattrsViaChild(fullPath));
  } catch {
    return [];
  }
}

/**
 * The node restic 0.14 stores for one directory entry, from its lstat result (`fs.lstat(path,
 * {bigint: true})`). `name` is the entry's base name, `fullPath` the path to read link targets and
 * xattrs from.
 */
export async function nodeFromStat(name: Buffer, fullPath: Buffer, st: BigIntStats, opts: NodeFromStatOptions = {}): Promise<Node> {
  const stMode = Number(st.mode);
  const type = nodeTypeFromStatMode(stMode);
  if (type === undefined) {
    throw new DmctlError('unsupported-file-type', `unsupported file type (mode 0${stMode.toString(8)})`);
  }
  const mtime = goTimeFromUnixNs(st.mtimeNs);
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  const names = lookupNames(uid, gid);
  const [user, group] = Array.isArray(names) ? names : await names;
  const node: Node = {
    name,
    type,
    mode: goFileMode(stMode),
    mtime,
    atime: opts.withAtime ? goTimeFromUnixNs(st.atimeNs) : { ...mtime },
    ctime: goTimeFromUnixNs(st.ctimeNs),
    uid,
    gid,
    content: type === 'file' ? [] : null,
  };
  if (user) node.user = user;
  if (group) node.group = group;
  if (st.ino) node.inode = st.ino;
  if (st.dev) node.deviceId = st.dev;
  switch (type) {
    case 'file':
      if (st.size) node.size = st.size;
      node.links = st.nlink;
      break;
    case 'symlink':
      node.linktarget = sameInode(opts.previous, node, st) && opts.previous.linktarget ? opts.previous.linktarget : await readlink(fullPath, { encoding: 'buffer' });
      node.links = st.nlink;
      break;
    case 'dev':
    case 'chardev':
      node.device = st.rdev;
      node.links = st.nlink;
      break;
    default:
      break;
  }
  if (type !== 'symlink' && !opts.noXattrs) {
    const attrs = sameInode(opts.previous, node, st) ? (opts.previous.extendedAttributes ?? []) : await readXattrs(fullPath, type === 'dir');
    if (attrs.length > 0) node.extendedAttributes = attrs;
  }
  return node;
}
