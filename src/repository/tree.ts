// restic tree blobs: `{"nodes":[…]}\n` with one JSON object per directory entry, byte-identical to
// what restic 0.14 writes (the tree ID is the SHA-256 of these bytes, so identical bytes mean
// dedup against trees restic wrote). Field order, omission rules and escaping follow restic's
// Node struct marshalled by go1.19 encoding/json; names are Go-quoted first (goquote.ts).

import { isUtf8 } from 'node:buffer';
import { DmctlError, IntegrityError } from '../core/errors.js';
import { goQuote, goUnquote } from './goquote.js';
import {
  bytesFromGoString,
  bytesToGoJsonLossy,
  encodeExtraValue,
  goJsonString,
  JsonNumber,
  JsonObject,
  parseGoJson,
  RawJson,
  type JsonValue,
} from './gojson.js';
import { formatGoTime, parseGoTime, tryParseGoTime, ZERO_GO_TIME, type GoTime } from './gotime.js';

/** Node kinds restic knows. Trees from newer restic versions may carry others; they decode as-is. */
export type NodeType = 'file' | 'dir' | 'symlink' | 'dev' | 'chardev' | 'fifo' | 'socket';

export interface ExtendedAttribute {
  /** Attribute name (a Go string: invalid UTF-8 is lossy, see gojson.ts). */
  name: string;
  value: Buffer;
}

export interface Node {
  /** Entry name: raw bytes (Linux names need not be UTF-8). */
  name: Buffer;
  type: NodeType;
  /** Go os.FileMode bits (see goFileMode), not st_mode. */
  mode: number;
  mtime: GoTime;
  atime: GoTime;
  ctime: GoTime;
  uid: number;
  gid: number;
  user?: string;
  group?: string;
  inode?: bigint;
  /** st_dev of the file system holding the entry. */
  deviceId?: bigint;
  size?: bigint;
  links?: bigint;
  /** Symlink target bytes (restic stores them lossily: invalid UTF-8 bytes come back as 0xFF). */
  linktarget?: Buffer;
  extendedAttributes?: ExtendedAttribute[];
  /** st_rdev for dev/chardev. */
  device?: bigint;
  /** Data blob IDs in file order; `[]` for an empty file, null for everything but files. */
  content: string[] | null;
  /** Tree blob ID (dirs). */
  subtree?: string;
  error?: string;
  /** Unknown keys (from newer writers), kept as raw JSON and re-emitted after the known ones. */
  extra?: Record<string, unknown>;
}

// ---- Go FileMode ----

export const GO_MODE = {
  DIR: 0x8000_0000,
  APPEND: 0x4000_0000,
  EXCLUSIVE: 0x2000_0000,
  TEMPORARY: 0x1000_0000,
  SYMLINK: 0x0800_0000,
  DEVICE: 0x0400_0000,
  NAMED_PIPE: 0x0200_0000,
  SOCKET: 0x0100_0000,
  SETUID: 0x0080_0000,
  SETGID: 0x0040_0000,
  CHAR_DEVICE: 0x0020_0000,
  STICKY: 0x0010_0000,
  IRREGULAR: 0x0008_0000,
  PERM: 0o777,
} as const;

const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const S_IFBLK = 0o060000;
const S_IFDIR = 0o040000;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;

/** POSIX st_mode → Go FileMode as restic stores it (permissions, type bits, setuid/setgid/sticky). */
export function goFileMode(stMode: number): number {
  let m = stMode & GO_MODE.PERM;
  switch (stMode & S_IFMT) {
    case S_IFBLK: m |= GO_MODE.DEVICE; break;
    case S_IFCHR: m |= GO_MODE.DEVICE | GO_MODE.CHAR_DEVICE; break;
    case S_IFDIR: m |= GO_MODE.DIR; break;
    case S_IFIFO: m |= GO_MODE.NAMED_PIPE; break;
    case S_IFLNK: m |= GO_MODE.SYMLINK; break;
    case S_IFSOCK: m |= GO_MODE.SOCKET; break;
    default: break; // regular file (and anything unknown, as Go does)
  }
  if (stMode & 0o4000) m |= GO_MODE.SETUID;
  if (stMode & 0o2000) m |= GO_MODE.SETGID;
  if (stMode & 0o1000) m |= GO_MODE.STICKY;
  return m >>> 0;
}

/** Go FileMode → the bits chmod(2) takes: permissions plus setuid/setgid/sticky. */
export function posixMode(goMode: number): number {
  let m = goMode & GO_MODE.PERM;
  if (goMode & GO_MODE.SETUID) m |= 0o4000;
  if (goMode & GO_MODE.SETGID) m |= 0o2000;
  if (goMode & GO_MODE.STICKY) m |= 0o1000;
  return m;
}

/** Node type for a POSIX st_mode (undefined for an unknown file type). */
export function nodeTypeFromStatMode(stMode: number): NodeType | undefined {
  switch (stMode & S_IFMT) {
    case S_IFREG: return 'file';
    case S_IFDIR: return 'dir';
    case S_IFLNK: return 'symlink';
    case S_IFBLK: return 'dev';
    case S_IFCHR: return 'chardev';
    case S_IFIFO: return 'fifo';
    case S_IFSOCK: return 'socket';
    default: return undefined;
  }
}

// ---- encoding ----

const ID_RE = /^[0-9a-f]{64}$/;

function idJson(id: string, what: string): string {
  if (!ID_RE.test(id)) throw new DmctlError('invalid-id', `invalid blob ID ${JSON.stringify(id)} in ${what}`);
  return '"' + id + '"';
}

/** One node's JSON object exactly as restic 0.14 writes it (no trailing newline). */
export function encodeNode(n: Node): string {
  const p: string[] = [];
  p.push('{"name":' + goJsonString(goQuote(n.name)));
  p.push(',"type":' + goJsonString(n.type));
  if (n.mode) p.push(',"mode":' + (n.mode >>> 0));
  p.push(',"mtime":"' + formatGoTime(n.mtime) + '"');
  p.push(',"atime":"' + formatGoTime(n.atime) + '"');
  p.push(',"ctime":"' + formatGoTime(n.ctime) + '"');
  p.push(',"uid":' + (n.uid >>> 0) + ',"gid":' + (n.gid >>> 0));
  if (n.user) p.push(',"user":' + goJsonString(n.user));
  if (n.group) p.push(',"group":' + goJsonString(n.group));
  if (n.inode) p.push(',"inode":' + BigInt.asUintN(64, n.inode));
  if (n.deviceId) p.push(',"device_id":' + BigInt.asUintN(64, n.deviceId));
  if (n.size) p.push(',"size":' + BigInt.asUintN(64, n.size));
  if (n.links) p.push(',"links":' + BigInt.asUintN(64, n.links));
  if (n.linktarget && n.linktarget.length > 0) p.push(',"linktarget":' + bytesToGoJsonLossy(n.linktarget));
  if (n.extendedAttributes && n.extendedAttributes.length > 0) {
    p.push(
      ',"extended_attributes":[' +
        n.extendedAttributes.map((a) => '{"name":' + goJsonString(a.name) + ',"value":"' + a.value.toString('base64') + '"}').join(',') +
        ']',
    );
  }
  if (n.device) p.push(',"device":' + BigInt.asUintN(64, n.device));
  p.push(',"content":' + (n.content === null ? 'null' : '[' + n.content.map((id) => idJson(id, 'node content')).join(',') + ']'));
  if (n.subtree !== undefined) p.push(',"subtree":' + idJson(n.subtree, 'node subtree'));
  if (n.error) p.push(',"error":' + goJsonString(n.error));
  if (n.extra) for (const [k, v] of Object.entries(n.extra)) p.push(',' + goJsonString(k) + ':' + encodeExtraValue(v));
  p.push('}');
  return p.join('');
}

/** Compares node names by bytes, the order restic keeps tree entries in. */
export function compareNames(a: Node, b: Node): number {
  return Buffer.compare(a.name, b.name);
}

/**
 * The tree blob for these entries: sorted by name bytes, `{"nodes":[…]}` plus "\n", byte-identical to
 * restic. Throws on duplicate names (the archiver must make names unique first).
 */
export function encodeTree(nodes: readonly Node[]): Buffer {
  const sorted = [...nodes].sort(compareNames);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; i++) {
    if (i > 0 && Buffer.compare(sorted[i - 1]!.name, sorted[i]!.name) === 0) {
      throw new DmctlError('tree-duplicate-name', `duplicate name ${JSON.stringify(goQuote(sorted[i]!.name))} in one directory`, {
        hint: 'this is a bug in dmctl: please report it',
      });
    }
    parts.push(encodeNode(sorted[i]!));
  }
  return Buffer.from('{"nodes":[' + parts.join(',') + ']}\n', 'utf8');
}

// ---- decoding ----

function damaged(why: string): IntegrityError {
  return new IntegrityError(`invalid tree: ${why}`, {
    hint: 'the tree blob is damaged or was not written by restic; run `dmctl check`',
  });
}

function asString(v: JsonValue, key: string): string | undefined {
  if (v === null) return undefined;
  if (typeof v !== 'string') throw damaged(`"${key}" is not a string`);
  return v;
}

function asUint(v: JsonValue, key: string, bits: 32 | 64): bigint | undefined {
  if (v === null) return undefined;
  if (!(v instanceof JsonNumber) || !/^(0|[1-9]\d*)$/.test(v.raw)) throw damaged(`"${key}" is not an unsigned integer`);
  const n = BigInt(v.raw);
  if (n >= 1n << BigInt(bits)) throw damaged(`"${key}" is out of range`);
  return n;
}

function asTime(v: JsonValue, key: string): GoTime {
  if (v === null) return { ...ZERO_GO_TIME };
  if (typeof v !== 'string') throw damaged(`"${key}" is not a time`);
  return parseGoTime(v);
}

/** A blob ID as trees may spell it (restic writes lower case; Go's hex decoder takes either). */
const HEX_ID = /^[0-9a-fA-F]{64}$/;
/** An xattr value: standard base64 (line breaks tolerated, as Go's decoder does). */
const BASE64 = /^[A-Za-z0-9+/\r\n]*={0,2}$/;

function asId(v: JsonValue, key: string): string {
  if (typeof v !== 'string' || !HEX_ID.test(v)) throw damaged(`"${key}" is not a blob ID`);
  return v.toLowerCase();
}

function decodeXattrs(v: JsonValue): ExtendedAttribute[] | undefined {
  if (v === null) return undefined;
  if (!Array.isArray(v)) throw damaged('"extended_attributes" is not a list');
  return v.map((a) => {
    if (!(a instanceof JsonObject)) throw damaged('extended attribute is not an object');
    let name = '';
    let value = Buffer.alloc(0);
    for (const [k, x] of a.entries) {
      const key = k.toLowerCase();
      if (key === 'name') name = asString(x, 'name') ?? '';
      else if (key === 'value') {
        const s = asString(x, 'value');
        if (s !== undefined) {
          if (!BASE64.test(s)) throw damaged('extended attribute value is not base64');
          value = Buffer.from(s, 'base64');
        }
      }
    }
    return { name, value };
  });
}

/** Decodes one node object (Go decoding rules: keys match case-insensitively, last one wins). */
export function decodeNode(obj: JsonValue): Node {
  if (!(obj instanceof JsonObject)) throw damaged('node is not an object');
  const n: Node = {
    name: Buffer.alloc(0),
    type: '' as NodeType,
    mode: 0,
    mtime: { ...ZERO_GO_TIME },
    atime: { ...ZERO_GO_TIME },
    ctime: { ...ZERO_GO_TIME },
    uid: 0,
    gid: 0,
    content: null,
  };
  let extra: Record<string, unknown> | undefined;
  for (const [k, v, raw] of obj.entries) {
    switch (k.toLowerCase()) {
      case 'name': {
        const s = asString(v, 'name');
        n.name = s === undefined ? Buffer.alloc(0) : goUnquote(s);
        break;
      }
      case 'type': n.type = (asString(v, 'type') ?? '') as NodeType; break;
      case 'mode': n.mode = Number(asUint(v, 'mode', 32) ?? 0n); break;
      case 'mtime': n.mtime = asTime(v, 'mtime'); break;
      case 'atime': n.atime = asTime(v, 'atime'); break;
      case 'ctime': n.ctime = asTime(v, 'ctime'); break;
      case 'uid': n.uid = Number(asUint(v, 'uid', 32) ?? 0n); break;
      case 'gid': n.gid = Number(asUint(v, 'gid', 32) ?? 0n); break;
      case 'user': n.user = asString(v, 'user'); break;
      case 'group': n.group = asString(v, 'group'); break;
      case 'inode': n.inode = asUint(v, 'inode', 64); break;
      case 'device_id': n.deviceId = asUint(v, 'device_id', 64); break;
      case 'size': n.size = asUint(v, 'size', 64); break;
      case 'links': n.links = asUint(v, 'links', 64); break;
      case 'linktarget': {
        const s = asString(v, 'linktarget');
        n.linktarget = s === undefined ? undefined : bytesFromGoString(s);
        break;
      }
      case 'extended_attributes': n.extendedAttributes = decodeXattrs(v); break;
      case 'device': n.device = asUint(v, 'device', 64); break;
      case 'content':
        if (v === null) n.content = null;
        else if (Array.isArray(v)) n.content = v.map((x) => asId(x, 'content'));
        else throw damaged('"content" is not a list');
        break;
      case 'subtree': n.subtree = v === null ? undefined : asId(v, 'subtree'); break;
      case 'error': n.error = asString(v, 'error'); break;
      default:
        (extra ??= {})[k] = new RawJson(raw);
    }
  }
  // Drop keys that decoded to "absent" so that objects compare cleanly.
  for (const key of ['user', 'group', 'inode', 'deviceId', 'size', 'links', 'linktarget', 'extendedAttributes', 'device', 'subtree', 'error'] as const) {
    if (n[key] === undefined) delete n[key];
  }
  if (extra) n.extra = extra;
  return n;
}

/** Decodes a tree blob (any valid restic tree JSON). Throws IntegrityError on anything else. */
export function decodeTree(buf: Uint8Array): Node[] {
  return decodeTreeFast(buf) ?? decodeTreeExact(buf);
}

/** decodeTree with the Go-exact parser only (decodeTreeFast declined). */
export function decodeTreeExact(buf: Uint8Array): Node[] {
  const doc = parseGoJson(buf, 'tree');
  if (!(doc instanceof JsonObject)) throw damaged('not a JSON object');
  let nodes: JsonValue = null;
  for (const [k, v] of doc.entries) if (k.toLowerCase() === 'nodes') nodes = v;
  if (nodes === null) return [];
  if (!Array.isArray(nodes)) throw damaged('"nodes" is not a list');
  return nodes.map(decodeNode);
}

/** Keys restic 0.14 writes in a node, as it spells them. */
const NODE_KEYS = new Set(['name', 'type', 'mode', 'mtime', 'atime', 'ctime', 'uid', 'gid', 'user', 'group', 'inode', 'device_id', 'size', 'links', 'linktarget', 'extended_attributes', 'device', 'content', 'subtree', 'error']);

/**
 * A number that is not a plain unsigned integer (sign, leading zero, fraction, exponent: the exact
 * decoder rejects those, JSON.parse would not). In text without backslashes no string holds a quote,
 * so `":` always ends a key, and the fast path takes numbers only as values of known keys.
 */
const ODD_NUMBER = /":\s*(?:[-+]|0\d|\d+[.eE])/;

/**
 * decodeTree through the engine's JSON parser, for the trees where that gives exactly what the
 * Go-exact decoder gives (that one, in JS, took most of the main thread of unchanged-tree backups
 * and of restores after the syscalls). Undefined (decline) on anything that needs it: a backslash
 * anywhere (escapes: names that are not UTF-8 come that way), bytes that are not UTF-8, numbers
 * that are not plain unsigned integers or are beyond 2^53, a key restic 0.14 does not write or one
 * in another case (Go matches keys case-insensitively and keeps unknown ones raw), any value of the
 * wrong kind. Without escapes a JSON string's bytes are its UTF-8, so names come out byte for byte.
 */
export function decodeTreeFast(buf: Uint8Array): Node[] | undefined {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  if (b.indexOf(0x5c) >= 0 || !isUtf8(b)) return undefined;
  const text = b.toString('utf8');
  if (ODD_NUMBER.test(text)) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return undefined;
  for (const k in doc) if (k !== 'nodes' && k.toLowerCase() === 'nodes') return undefined;
  const nodes = (doc as { nodes?: unknown }).nodes;
  if (nodes === undefined || nodes === null) return [];
  if (!Array.isArray(nodes)) return undefined;
  const out: Node[] = new Array(nodes.length);
  for (let i = 0; i < nodes.length; i++) {
    const n = fastNode(nodes[i]);
    if (!n) return undefined;
    out[i] = n;
  }
  return out;
}

const DECLINE = Symbol('decline');
type Maybe<T> = T | typeof DECLINE;

function fastString(v: unknown): Maybe<string | undefined> {
  if (v === undefined || v === null) return undefined;
  return typeof v === 'string' ? v : DECLINE;
}

function fastUint(v: unknown, bits: 32 | 64): Maybe<bigint | undefined> {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || (bits === 32 && v >= 2 ** 32)) return DECLINE;
  return BigInt(v);
}

function fastTime(v: unknown): Maybe<GoTime> {
  if (v === undefined || v === null) return { ...ZERO_GO_TIME };
  if (typeof v !== 'string') return DECLINE;
  return tryParseGoTime(v) ?? DECLINE;
}

function fastId(v: unknown): Maybe<string> {
  return typeof v === 'string' && HEX_ID.test(v) ? v.toLowerCase() : DECLINE;
}

/** One node as decodeNode builds it, or undefined to decline. */
function fastNode(o: unknown): Node | undefined {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return undefined;
  const r = o as Record<string, unknown>;
  for (const k in r) if (!NODE_KEYS.has(k)) return undefined;
  const name = fastString(r.name);
  const type = fastString(r.type);
  const mode = fastUint(r.mode, 32);
  const mtime = fastTime(r.mtime);
  const atime = fastTime(r.atime);
  const ctime = fastTime(r.ctime);
  const uid = fastUint(r.uid, 32);
  const gid = fastUint(r.gid, 32);
  const user = fastString(r.user);
  const group = fastString(r.group);
  const inode = fastUint(r.inode, 64);
  const deviceId = fastUint(r.device_id, 64);
  const size = fastUint(r.size, 64);
  const links = fastUint(r.links, 64);
  const linktarget = fastString(r.linktarget);
  const device = fastUint(r.device, 64);
  const error = fastString(r.error);
  if (
    name === DECLINE || type === DECLINE || mode === DECLINE || mtime === DECLINE || atime === DECLINE || ctime === DECLINE || uid === DECLINE || gid === DECLINE ||
    user === DECLINE || group === DECLINE || inode === DECLINE || deviceId === DECLINE || size === DECLINE || links === DECLINE || linktarget === DECLINE ||
    device === DECLINE || error === DECLINE
  ) {
    return undefined;
  }
  let content: string[] | null = null;
  if (r.content !== undefined && r.content !== null) {
    if (!Array.isArray(r.content)) return undefined;
    content = new Array(r.content.length);
    for (let i = 0; i < r.content.length; i++) {
      const id = fastId(r.content[i]);
      if (id === DECLINE) return undefined;
      content[i] = id;
    }
  }
  let subtree: string | undefined;
  if (r.subtree !== undefined && r.subtree !== null) {
    const id = fastId(r.subtree);
    if (id === DECLINE) return undefined;
    subtree = id;
  }
  let xattrs: ExtendedAttribute[] | undefined;
  if (r.extended_attributes !== undefined && r.extended_attributes !== null) {
    if (!Array.isArray(r.extended_attributes)) return undefined;
    xattrs = [];
    for (const a of r.extended_attributes as unknown[]) {
      if (a === null || typeof a !== 'object' || Array.isArray(a)) return undefined;
      const x = a as Record<string, unknown>;
      for (const k in x) if (k !== 'name' && k !== 'value') return undefined;
      const xname = fastString(x.name);
      const xvalue = fastString(x.value);
      if (xname === DECLINE || xvalue === DECLINE || (xvalue !== undefined && !BASE64.test(xvalue))) return undefined;
      xattrs.push({ name: xname ?? '', value: xvalue === undefined ? Buffer.alloc(0) : Buffer.from(xvalue, 'base64') });
    }
  }
  const n: Node = {
    name: Buffer.from(name ?? '', 'utf8'),
    type: (type ?? '') as NodeType,
    mode: Number(mode ?? 0n),
    mtime,
    atime,
    ctime,
    uid: Number(uid ?? 0n),
    gid: Number(gid ?? 0n),
    content,
  };
  if (user !== undefined) n.user = user;
  if (group !== undefined) n.group = group;
  if (inode !== undefined) n.inode = inode;
  if (deviceId !== undefined) n.deviceId = deviceId;
  if (size !== undefined) n.size = size;
  if (links !== undefined) n.links = links;
  if (linktarget !== undefined) n.linktarget = bytesFromGoString(linktarget);
  if (xattrs !== undefined) n.extendedAttributes = xattrs;
  if (device !== undefined) n.device = device;
  if (subtree !== undefined) n.subtree = subtree;
  if (error !== undefined) n.error = error;
  return n;
}
