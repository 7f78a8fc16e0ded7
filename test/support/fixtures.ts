// The "awkward tree" for backup/restore tests, and a manifest of any tree that two trees can be
// compared by. Everything works on byte paths (names need not be UTF-8). Must run as root (owners,
// device nodes). Deterministic: the same call builds the same content, modes, owners and times.
//
//   makeAwkwardTree(dir)   builds the tree (dir must not exist yet); returns what it built
//   treeManifest(dir)      type, mode, uid, gid, size, mtime ns, link target bytes, rdev, xattrs,
//                          sha256 of content and hardlink groups of every entry below dir
//   diffManifests(a, b)    human-readable differences ([] when equal)
import { spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { promises as fsp, constants as fsc, mkdirSync, writeFileSync, symlinkSync, linkSync, chmodSync, lchownSync, existsSync, readdirSync, lstatSync, openSync, closeSync } from 'node:fs';
import path from 'node:path';
import * as xattr from '@napi-rs/xattr';

/** Linux open(2) flags Node does not export. */
const O_PATH = 0o10000000;
const O_DIRECTORY = 0o200000;

// ---------------------------------------------------------------------------------------------
// Deterministic data

/** `n` pseudo-random bytes for `seed` (AES-256-CTR keystream: fast, incompressible, reproducible). */
export function pseudoRandom(seed: string, n: number, offset = 0): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const iv = Buffer.alloc(16);
  // Start the counter at `offset` / 16 blocks so slices of one logical stream can be made independently.
  iv.writeBigUInt64BE(BigInt(Math.floor(offset / 16)), 8);
  const c = createCipheriv('aes-256-ctr', key, iv);
  const skip = offset % 16;
  const out = c.update(Buffer.alloc(n + skip));
  return out.subarray(skip);
}

/**
 * A stream of `total` bytes that looks like a database dump: pseudo-random runs, zero runs and
 * repeated text, yielded in pieces of `piece` bytes (default 1 MiB). Same seed, same bytes.
 */
export async function* generatedStream(seed: string, total: number, piece = 1 << 20): AsyncGenerator<Buffer> {
  let done = 0;
  let i = 0;
  while (done < total) {
    const n = Math.min(piece, total - done);
    let buf: Buffer;
    switch (i % 4) {
      case 1:
        buf = Buffer.alloc(n);
        break;
      case 3: {
        const line = Buffer.from(`INSERT INTO t VALUES (${i}, 'row ${seed}');\n`);
        buf = Buffer.alloc(n);
        for (let o = 0; o < n; o += line.length) line.copy(buf, o, 0, Math.min(line.length, n - o));
        break;
      }
      default:
        buf = pseudoRandom(`${seed}/${i}`, n);
    }
    done += n;
    i++;
    yield buf;
  }
}

/** SHA-256 (hex) of everything an iterable yields. */
export async function sha256Of(src: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<{ sha256: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const b of src) {
    h.update(b);
    size += b.length;
  }
  return { sha256: h.digest('hex'), size };
}

export function sha256hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Byte paths and names

export const B = (s: string | number[]): Buffer => (typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s));

/** Joins byte path components with '/'. */
export function pj(...parts: Array<Buffer | string>): Buffer {
  const bufs = parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p));
  return Buffer.concat(bufs.flatMap((p, i) => (i === 0 ? [p] : [B('/'), p])));
}

/** A readable rendering of a byte name for messages: printable ASCII as is, everything else \xNN. */
export function showName(b: Buffer): string {
  let s = '';
  for (const c of b) s += c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  return s;
}

function isUtf8(b: Buffer): boolean {
  return Buffer.from(b.toString('utf8'), 'utf8').equals(b);
}

/**
 * Go's encoding/json treatment of a string that holds invalid UTF-8 (restic's link targets, §9.6
 * of the format reference): every byte that does not start a valid UTF-8 sequence becomes U+FFFD.
 * Written here from the rule, independent of dmctl's encoder.
 */
export function goLossyUtf8(b: Buffer): Buffer {
  const out: Buffer[] = [];
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    let len = 0;
    if (c < 0x80) len = 1;
    else if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) len = 3;
    else if (c >= 0xf0 && c <= 0xf4) len = 4;
    if (len > 0 && i + len <= b.length) {
      const seq = b.subarray(i, i + len);
      // valid iff decoding gives exactly one code point that re-encodes to the same bytes
      const s = seq.toString('utf8');
      if (len === 1 || (!s.includes('\ufffd') && Buffer.from(s, 'utf8').equals(seq))) {
        out.push(seq);
        i += len;
        continue;
      }
    }
    out.push(Buffer.from('\ufffd', 'utf8'));
    i++;
  }
  return Buffer.concat(out);
}

// ---------------------------------------------------------------------------------------------
// The awkward tree

export const NAME_BAD_FILE = B([0x62, 0x61, 0x64, 0xff, 0x6e, 0x61, 0x6d, 0x65]); // "bad\xffname"
export const NAME_BAD_DIR = B([0x64, 0x69, 0x72, 0xff]); // "dir\xff"
export const LINK_BAD_TARGET = B([0x74, 0x67, 0x74, 0xff, 0x3c]); // "tgt\xff<"

/** Names with characters that need quoting somewhere (JSON, Go quoting, shells). */
export const AWKWARD_NAMES = ['with space', 'q"uote\'s', 'back\\slash', 'new\nline', 'tab\there', 'ls\u2028sep', '<&>', 'emoji😀', 'café', 'nbsp\u00a0x'];

export const BIG_FILE_SIZE = 20 << 20;

export interface AwkwardTreeInfo {
  root: string;
  /** Relative byte paths of every regular file. */
  files: Buffer[];
  /** Whether a device node could be made (false in a container without CAP_MKNOD). */
  devices: boolean;
}

function sh(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
}

/** Shell word holding these bytes exactly, via printf octal escapes (works for any byte but NUL). */
function shellBytes(b: Buffer): string {
  let esc = '';
  for (const c of b) esc += `\\${c.toString(8).padStart(3, '0')}`;
  return `"$(printf '${esc}_')"`; // the trailing "_" keeps a final newline from being stripped …
}

/** 20 MiB of mixed content: random runs and zero runs (some chunks repeat, some compress). */
export function bigFileContent(seed = 'big'): Buffer {
  const parts: Buffer[] = [];
  const plan: Array<[string, number]> = [['r', 4], ['z', 4], ['r', 5], ['z', 3], ['r', 4]];
  let i = 0;
  for (const [kind, mib] of plan) parts.push(kind === 'z' ? Buffer.alloc(mib << 20) : pseudoRandom(`${seed}/${i++}`, mib << 20));
  return Buffer.concat(parts);
}

/**
 * Builds the awkward tree at `dir` (which must not exist): regular, empty and big files; modes
 * 0600/0755/4755 and 2775/1777 directories; an entry owned by 1234:5678; symlinks (plain, dangling,
 * target with a non-UTF-8 byte); a hardlink pair; a fifo; a char device (1,3); user xattrs; names
 * with spaces, quotes, backslashes, newline, tab, 0xff bytes, U+2028, `<&>`, emoji; and an mtime
 * with nanoseconds on every entry (set with `touch -d @SEC.NNNNNNNNN`, directories last).
 */
export function makeAwkwardTree(dir: string): AwkwardTreeInfo {
  if (existsSync(dir)) throw new Error(`makeAwkwardTree: ${dir} exists`);
  const d = B(dir);
  const files: Buffer[] = [];
  const file = (rel: Buffer | string, content: Buffer | string, mode = 0o644): void => {
    const p = pj(d, rel);
    writeFileSync(p, content);
    chmodSync(p, mode);
    files.push(typeof rel === 'string' ? B(rel) : rel);
  };
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o750);

  file('plain.txt', 'hello, restic\n');
  xattr.setAttributeSync(path.join(dir, 'plain.txt'), 'user.comment', B('a comment on plain.txt'));
  xattr.setAttributeSync(path.join(dir, 'plain.txt'), 'user.binary', B([0, 1, 2, 0xff, 0xfe, 10]));
  file('empty', '');
  file('big.bin', bigFileContent());
  file('mode0600', 'private\n', 0o600);
  file('exec0755', '#!/bin/sh\necho hi\n', 0o755);
  file('setuid4755', '#!/bin/sh\n', 0o4755);
  file('small-random.bin', pseudoRandom('small', 700 * 1024 + 13));

  mkdirSync(path.join(dir, 'setgid2775'));
  chmodSync(path.join(dir, 'setgid2775'), 0o2775);
  file('setgid2775/inner.txt', 'in a setgid dir\n');
  mkdirSync(path.join(dir, 'sticky1777'));
  chmodSync(path.join(dir, 'sticky1777'), 0o1777);
  file('sticky1777/inner.txt', 'in a sticky dir\n');
  xattr.setAttributeSync(path.join(dir, 'sticky1777'), 'user.dirattr', B('on a directory'));
  mkdirSync(path.join(dir, 'emptydir'));

  // ownership by ids that have no names, including a setgid file (chown clears setgid: mode after)
  file('owned-1234', 'owned by 1234:5678\n');
  lchownSync(path.join(dir, 'owned-1234'), 1234, 5678);
  file('owned-setgid', 'setgid, owned by 1234:5678\n');
  lchownSync(path.join(dir, 'owned-setgid'), 1234, 5678);
  chmodSync(path.join(dir, 'owned-setgid'), 0o2750);
  mkdirSync(path.join(dir, 'owned-dir'));
  file('owned-dir/f', 'f');
  lchownSync(path.join(dir, 'owned-dir'), 1234, 5678);

  // symlinks
  symlinkSync('plain.txt', path.join(dir, 'link-to-plain'));
  symlinkSync('no/such/target', path.join(dir, 'dangling'));
  symlinkSync(LINK_BAD_TARGET, pj(d, 'link-bad-target'));
  symlinkSync('../plain.txt', path.join(dir, 'owned-dir', 'uplink'));
  lchownSync(path.join(dir, 'owned-dir', 'uplink'), 1234, 5678);

  // hardlinks: a pair in two directories, and a triple in one
  mkdirSync(path.join(dir, 'links'));
  file('links/hl-a', 'hardlinked content\n');
  linkSync(path.join(dir, 'links', 'hl-a'), path.join(dir, 'hl-b'));
  files.push(B('hl-b'));
  file('links/tri-1', pseudoRandom('tri', 100_000));
  linkSync(path.join(dir, 'links', 'tri-1'), path.join(dir, 'links', 'tri-2'));
  linkSync(path.join(dir, 'links', 'tri-1'), path.join(dir, 'links', 'tri-3'));
  files.push(B('links/tri-2'), B('links/tri-3'));

  // special files
  sh('mkfifo', ['-m', '0640', path.join(dir, 'fifo')]);
  let devices = true;
  const mk = spawnSync('mknod', ['-m', '0666', path.join(dir, 'null-dev'), 'c', '1', '3'], { encoding: 'utf8' });
  if (mk.status !== 0) devices = false;

  // awkward names
  mkdirSync(path.join(dir, 'names'));
  for (const n of AWKWARD_NAMES) file(pj('names', n), `content of ${n}\n`);
  file(pj(B('names'), NAME_BAD_FILE), 'a name that is not UTF-8\n');
  mkdirSync(pj(d, B('names'), NAME_BAD_DIR));
  file(pj(B('names'), NAME_BAD_DIR, B('child with space')), 'inside a non-UTF-8 directory\n');
  file(pj(B('names'), NAME_BAD_DIR, NAME_BAD_FILE), 'non-UTF-8 inside non-UTF-8\n');
  const dirFd = openSync(pj(d, B('names'), NAME_BAD_DIR), O_PATH | O_DIRECTORY);
  try {
    xattr.setAttributeSync(`/proc/self/fd/${dirFd}/.`, 'user.comment', B('xattr on a non-UTF-8 directory'));
  } finally {
    closeSync(dirFd);
  }
  mkdirSync(path.join(dir, 'names', 'dir "quoted"\\x\n'));
  file(pj('names', 'dir "quoted"\\x\n', 'f'), 'f\n');
  // xattrs on names the xattr library cannot spell (set through a temporary UTF-8 hard link)
  const tmpLink = path.join(path.dirname(dir), `.xattr-tmp-${process.pid}`);
  linkSync(pj(d, B('names'), NAME_BAD_FILE), tmpLink);
  xattr.setAttributeSync(tmpLink, 'user.comment', B('xattr on a non-UTF-8 name'));
  sh('rm', ['-f', tmpLink]);

  // nanosecond mtimes on every entry, children before their directory, in one shell run
  const lines: string[] = ['set -e'];
  let k = 0;
  const stamp = (rel: Buffer): void => {
    k++;
    const sec = 1_600_000_000 + k * 86_413;
    const ns = (k * 123_456_789 + 987_654_321) % 1_000_000_000;
    const when = `@${sec}.${String(ns).padStart(9, '0')}`;
    const p = rel.length ? pj(d, rel) : d;
    lines.push(`p=${shellBytes(p)}; touch -h -d ${when} -- "\${p%_}"`);
  };
  const walk = (rel: Buffer): void => {
    const abs = rel.length ? pj(d, rel) : d;
    const names = listDir(abs).sort(Buffer.compare);
    for (const n of names) {
      const r = rel.length ? pj(rel, n) : n;
      if (isDirSync(pj(d, r))) walk(r);
      else stamp(r);
    }
    stamp(rel);
  };
  walk(Buffer.alloc(0));
  sh('sh', ['-s'], lines.join('\n') + '\n');
  return { root: dir, files, devices };
}

function listDir(p: Buffer): Buffer[] {
  return readdirSync(p, { encoding: 'buffer' });
}
function isDirSync(p: Buffer): boolean {
  return lstatSync(p).isDirectory();
}

// ---------------------------------------------------------------------------------------------
// Manifest

export type EntryType = 'file' | 'dir' | 'symlink' | 'fifo' | 'chardev' | 'blockdev' | 'socket';

export interface ManifestEntry {
  /** Path relative to the manifest root ('.' for the root itself), bytes. */
  path: Buffer;
  type: EntryType;
  /** Permission bits plus setuid/setgid/sticky (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Regular files only. */
  size?: number;
  mtimeNs: bigint;
  /** Symlinks only: the target bytes. */
  linkTarget?: Buffer;
  /** Device nodes only. */
  rdev?: bigint;
  /** Extended attributes, sorted by name: [name, hex value]. */
  xattrs: Array<[string, string]>;
  /** Regular files only. */
  sha256?: string;
  /** Index into Manifest.hardlinks for non-directories with more than one link inside the tree. */
  hardlinkGroup?: number;
}

export interface Manifest {
  root: string;
  /** Sorted by path bytes. */
  entries: ManifestEntry[];
  /** Groups of paths (each sorted, groups sorted by first path) that are one inode. */
  hardlinks: Buffer[][];
}

function entryType(mode: bigint): EntryType {
  switch (Number(mode) & fsc.S_IFMT) {
    case fsc.S_IFREG: return 'file';
    case fsc.S_IFDIR: return 'dir';
    case fsc.S_IFLNK: return 'symlink';
    case fsc.S_IFIFO: return 'fifo';
    case fsc.S_IFCHR: return 'chardev';
    case fsc.S_IFBLK: return 'blockdev';
    default: return 'socket';
  }
}

/**
 * Extended attributes of a byte path. The xattr library takes UTF-8 strings (and does not follow
 * symlinks), so other paths are reached through /proc/self/fd, or, for a non-directory whose own
 * name is not UTF-8, through a temporary hard link next to the tree root (this changes the
 * file's ctime, nothing the manifest records).
 */
async function readXattrs(abs: Buffer, type: EntryType, scratchDir: string): Promise<Array<[string, string]>> {
  if (type === 'symlink') return [];
  const read = async (p: string): Promise<Array<[string, string]>> => {
    const names = await xattr.listAttributes(p);
    const out: Array<[string, string]> = [];
    for (const n of names) {
      const v = await xattr.getAttribute(p, n);
      out.push([n, v === null ? '' : Buffer.from(v).toString('hex')]);
    }
    return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  };
  if (isUtf8(abs)) return read(abs.toString('utf8'));
  if (type === 'dir') {
    const fh = await fsp.open(abs, O_PATH | O_DIRECTORY);
    try {
      return await read(`/proc/self/fd/${fh.fd}/.`);
    } finally {
      await fh.close();
    }
  }
  const slash = abs.lastIndexOf(0x2f);
  const base = abs.subarray(slash + 1);
  if (isUtf8(base)) {
    const fh = await fsp.open(abs.subarray(0, Math.max(slash, 1)), O_PATH | O_DIRECTORY);
    try {
      return await read(`/proc/self/fd/${fh.fd}/${base.toString('utf8')}`);
    } finally {
      await fh.close();
    }
  }
  const tmp = path.join(scratchDir, `.manifest-xattr-${process.pid}-${Math.random().toString(36).slice(2)}`);
  await fsp.link(abs, tmp);
  try {
    return await read(tmp);
  } finally {
    await fsp.unlink(tmp);
  }
}

async function fileSha256(abs: Buffer): Promise<string> {
  const h = createHash('sha256');
  const fh = await fsp.open(abs, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** Records every entry below `dir` (and `dir` itself as '.'); see ManifestEntry. */
export async function treeManifest(dir: string | Buffer): Promise<Manifest> {
  const root = typeof dir === 'string' ? B(dir) : dir;
  const scratch = path.dirname(root.toString('utf8'));
  const entries: ManifestEntry[] = [];
  const inodes = new Map<string, Buffer[]>();
  const visit = async (rel: Buffer): Promise<void> => {
    const abs = rel.length ? pj(root, rel) : root;
    const st = await fsp.lstat(abs, { bigint: true });
    const type = entryType(st.mode);
    const e: ManifestEntry = {
      path: rel.length ? rel : B('.'),
      type,
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: st.mtimeNs,
      xattrs: await readXattrs(abs, type, scratch),
    };
    if (type === 'file') {
      e.size = Number(st.size);
      e.sha256 = await fileSha256(abs);
    }
    if (type === 'symlink') e.linkTarget = await fsp.readlink(abs, { encoding: 'buffer' });
    if (type === 'chardev' || type === 'blockdev') e.rdev = st.rdev;
    if (type !== 'dir' && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const g = inodes.get(key) ?? [];
      g.push(e.path);
      inodes.set(key, g);
    }
    entries.push(e);
    if (type === 'dir') {
      const names = (await fsp.readdir(abs, { encoding: 'buffer' })).sort(Buffer.compare);
      for (const n of names) await visit(rel.length ? pj(rel, n) : n);
    }
  };
  await visit(Buffer.alloc(0));
  entries.sort((a, b) => Buffer.compare(a.path, b.path));
  const hardlinks = [...inodes.values()]
    .filter((g) => g.length > 1)
    .map((g) => g.sort(Buffer.compare))
    .sort((a, b) => Buffer.compare(a[0]!, b[0]!));
  hardlinks.forEach((g, i) => {
    for (const p of g) entries.find((e) => e.path.equals(p))!.hardlinkGroup = i;
  });
  return { root: root.toString(), entries, hardlinks };
}

export interface DiffOptions {
  /** Allowed |mtime difference| in ns (0 = exact). */
  mtimeToleranceNs?: bigint;
  /**
   * The restore keeps times only to this resolution (e.g. 1000n: whole microseconds, all Node's
   * utimes can set): the actual mtime must equal the expected one truncated to it.
   */
  mtimeResolutionNs?: bigint;
  /** Do not compare the mtime of the root entry ('.'). */
  ignoreRootMtime?: boolean;
  /** Maps an expected symlink target to what the restore should give (e.g. goLossyUtf8). */
  linkTarget?: (expected: Buffer) => Buffer;
}

/** Differences between an expected and an actual manifest, one line each ([] when they match). */
export function diffManifests(expected: Manifest, actual: Manifest, opts: DiffOptions = {}): string[] {
  const out: string[] = [];
  const tol = opts.mtimeToleranceNs ?? 0n;
  const act = new Map(actual.entries.map((e) => [e.path.toString('hex'), e]));
  for (const x of expected.entries) {
    const key = x.path.toString('hex');
    const a = act.get(key);
    const name = showName(x.path);
    if (!a) {
      out.push(`${name}: missing`);
      continue;
    }
    act.delete(key);
    if (a.type !== x.type) {
      out.push(`${name}: type ${a.type}, want ${x.type}`);
      continue;
    }
    if (a.mode !== x.mode) out.push(`${name}: mode 0${a.mode.toString(8)}, want 0${x.mode.toString(8)}`);
    if (a.uid !== x.uid || a.gid !== x.gid) out.push(`${name}: owner ${a.uid}:${a.gid}, want ${x.uid}:${x.gid}`);
    if (a.size !== x.size) out.push(`${name}: size ${a.size}, want ${x.size}`);
    if (a.sha256 !== x.sha256) out.push(`${name}: content differs`);
    const res = opts.mtimeResolutionNs ?? 1n;
    const wantMtime = x.mtimeNs - (((x.mtimeNs % res) + res) % res);
    const dt = a.mtimeNs > wantMtime ? a.mtimeNs - wantMtime : wantMtime - a.mtimeNs;
    if (dt > tol && !(opts.ignoreRootMtime && name === '.')) out.push(`${name}: mtime ${a.mtimeNs} ns, want ${wantMtime} ns (off by ${dt} ns)`);
    if (x.linkTarget) {
      const want = opts.linkTarget ? opts.linkTarget(x.linkTarget) : x.linkTarget;
      if (!a.linkTarget?.equals(want)) out.push(`${name}: link target ${showName(a.linkTarget ?? B(''))}, want ${showName(want)}`);
    }
    if (a.rdev !== x.rdev) out.push(`${name}: rdev ${a.rdev}, want ${x.rdev}`);
    if (JSON.stringify(a.xattrs) !== JSON.stringify(x.xattrs)) out.push(`${name}: xattrs ${JSON.stringify(a.xattrs)}, want ${JSON.stringify(x.xattrs)}`);
  }
  for (const a of act.values()) out.push(`${showName(a.path)}: unexpected ${a.type}`);
  const groups = (m: Manifest): string[] => m.hardlinks.map((g) => g.map(showName).join(' = '));
  const gx = groups(expected);
  const ga = groups(actual);
  if (JSON.stringify(gx) !== JSON.stringify(ga)) out.push(`hardlinks ${JSON.stringify(ga)}, want ${JSON.stringify(gx)}`);
  return out;
}

/** Relative path → SHA-256 of every regular file below `dir` (a quick byte-for-byte comparison of two trees). */
export async function fileDigests(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, rel: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(p, r);
      else if (e.isFile()) out[r] = createHash('sha256').update(await fsp.readFile(p)).digest('hex');
    }
  };
  await walk(dir, '');
  return out;
}

/**
 * Flips one bit of a pack file of a local repository (restic's files are read-only: made writable
 * first), `at` bytes into the pack: damage a blob's ciphertext with `loc.offset + k`.
 */
export async function flipPackBit(repoDir: string, packId: string, at: number): Promise<void> {
  const file = path.join(repoDir, 'data', packId.slice(0, 2), packId);
  const bytes = await fsp.readFile(file);
  bytes[at] ^= 0x01;
  await fsp.chmod(file, 0o600);
  await fsp.writeFile(file, bytes);
}
