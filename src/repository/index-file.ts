// Index files (reference §7) and the in-memory master index of (type, blob ID) → location.
import { IntegrityError } from '../core/errors.js';
import { BlobType, PackedBlob } from './pack.js';

export interface IndexPack {
  id: string;
  blobs: PackedBlob[];
}

export interface IndexFile {
  supersedes?: string[];
  packs: IndexPack[];
}

export interface BlobLocation {
  packId: string;
  type: BlobType;
  offset: number;
  length: number;
  uncompressedLength: number;
}

/** What the master index holds per blob: one object, both its pack's entry and its location. */
export interface IndexEntry extends PackedBlob, BlobLocation {}

/** JSON exactly as restic writes it: keys in order, uncompressed_length only when compressed, trailing newline. */
export function encodeIndex(f: IndexFile): Buffer {
  const parts: string[] = [];
  parts.push('{');
  if (f.supersedes && f.supersedes.length) parts.push(`"supersedes":${JSON.stringify(f.supersedes)},`);
  parts.push('"packs":[');
  f.packs.forEach((p, i) => {
    if (i) parts.push(',');
    parts.push(`{"id":"${p.id}","blobs":[`);
    p.blobs.forEach((b, j) => {
      if (j) parts.push(',');
      parts.push(`{"id":"${b.id}","type":"${b.type}","offset":${b.offset},"length":${b.length}`);
      if (b.uncompressedLength) parts.push(`,"uncompressed_length":${b.uncompressedLength}`);
      parts.push('}');
    });
    parts.push(']}');
  });
  parts.push(']}\n');
  return Buffer.from(parts.join(''));
}

const HEX64 = /^[0-9a-f]{64}$/;

/** An index file's JSON: its list of packs (not checked further) and what it supersedes. */
function parseIndexJson(buf: Buffer, what: string): { packsRaw: unknown[]; supersedes?: string[] } {
  let j: unknown;
  try {
    j = JSON.parse(buf.toString('utf8'));
  } catch {
    throw new IntegrityError(`${what}: not valid JSON`);
  }
  let packsRaw: unknown;
  let supersedes: string[] | undefined;
  if (Array.isArray(j)) packsRaw = j; // legacy format: an array of packs
  else if (j && typeof j === 'object') {
    packsRaw = (j as { packs?: unknown }).packs ?? [];
    const s = (j as { supersedes?: unknown }).supersedes;
    if (Array.isArray(s)) supersedes = s.filter((x): x is string => typeof x === 'string');
  } else throw new IntegrityError(`${what}: unexpected JSON`);
  if (!Array.isArray(packsRaw)) throw new IntegrityError(`${what}: "packs" is not a list`);
  return { packsRaw, supersedes };
}

function indexPacksOf(buf: Buffer, what: string): unknown[] {
  return parseIndexJson(buf, what).packsRaw;
}

export function decodeIndex(buf: Buffer, what = 'index'): IndexFile {
  const { packsRaw, supersedes } = parseIndexJson(buf, what);
  const packs: IndexPack[] = [];
  for (const p of packsRaw as { id?: unknown; blobs?: unknown }[]) {
    if (typeof p?.id !== 'string' || !HEX64.test(p.id)) throw new IntegrityError(`${what}: invalid pack id`);
    const packId = p.id;
    const blobs: IndexEntry[] = [];
    for (const b of (Array.isArray(p.blobs) ? p.blobs : []) as Record<string, unknown>[]) {
      const type = b.type;
      if (type !== 'data' && type !== 'tree') throw new IntegrityError(`${what}: invalid blob type ${String(type)}`);
      if (typeof b.id !== 'string' || !HEX64.test(b.id)) throw new IntegrityError(`${what}: invalid blob id in pack ${p.id.slice(0, 10)}`);
      blobs.push({
        type,
        id: b.id,
        packId,
        offset: Number(b.offset ?? 0),
        length: Number(b.length ?? 0),
        uncompressedLength: Number(b.uncompressed_length ?? 0),
      });
    }
    packs.push({ id: p.id, blobs });
  }
  return { supersedes, packs };
}

const TYPE_DATA = 0;
const TYPE_TREE = 1;
const TYPE_NAMES: readonly BlobType[] = ['data', 'tree'];

/**
 * All blobs the repository knows, by type and ID. Duplicates: the first location seen wins.
 *
 * Compact: a blob is 32 bytes of ID and a few numbers in typed arrays (~60 bytes with its slot in
 * the hash table) instead of an object with two hex strings and a Map entry (~200 bytes), and index
 * files are scanned into it straight from their JSON bytes (addIndexBytes), without the JSON text
 * as a string or the objects JSON.parse makes (a transient peak as large again). Measured on the
 * bench repository (49k blobs): the live index went from 9.4 MB to ~3 MB of memory, and a stream
 * backup's peak from 143-146 MB to 131-133 MB. lookup() and packs.get() build the objects they return.
 */
export class MasterIndex {
  /** Entries in the order added; the entries of one pack are contiguous. */
  private cap = 0;
  private n = 0;
  private ids = new Uint8Array(0);
  private idsBuf = Buffer.alloc(0);
  private idWords = new Uint32Array(0);
  /** 32 bits each until a larger value comes (then 64-bit floats: exact up to 2^53). */
  private offsets: Uint32Array | Float64Array = new Uint32Array(0);
  private lengths: Uint32Array | Float64Array = new Uint32Array(0);
  private ulengths: Uint32Array | Float64Array = new Uint32Array(0);
  private types = new Uint8Array(0);
  private packOf = new Uint32Array(0);
  /** Packs: ID, first entry, entry count; packNo: ID → pack number. */
  private packIds: string[] = [];
  private packFirst: number[] = [];
  private packCount: number[] = [];
  private readonly packNo = new Map<string, number>();
  /** Open addressing over (type, ID): entry number + 1, 0 for an empty slot. */
  private table = new Int32Array(0);
  private used = 0;
  private readonly counts = [0, 0];
  /** Scratch for the ID being looked up. */
  private readonly probe = Buffer.alloc(32);
  private readonly probeWords = new Uint32Array(this.probe.buffer, this.probe.byteOffset, 8);

  /** Pack ID → its blobs, for prune/check (built on each call). */
  readonly packs = new PackTable(this);
  /** Index file IDs loaded. */
  readonly files = new Set<string>();

  has(type: BlobType, id: string): boolean {
    return this.find(type === 'tree' ? TYPE_TREE : TYPE_DATA, id) >= 0;
  }

  lookup(type: BlobType, id: string): BlobLocation | undefined {
    const i = this.find(type === 'tree' ? TYPE_TREE : TYPE_DATA, id);
    if (i < 0) return undefined;
    return { packId: this.packIds[this.packOf[i]!]!, type, offset: this.offsets[i]!, length: this.lengths[i]!, uncompressedLength: this.ulengths[i]! };
  }

  /** Forgets everything (the index is loaded again from scratch). */
  clear(): void {
    this.n = 0;
    this.packIds = [];
    this.packFirst = [];
    this.packCount = [];
    this.packNo.clear();
    this.table = new Int32Array(0);
    this.used = 0;
    this.counts[0] = this.counts[1] = 0;
    this.files.clear();
  }

  /** Adds a pack's blobs (nothing when the pack is known already). */
  addPack(packId: string, blobs: readonly PackedBlob[]): void {
    if (this.packNo.has(packId)) return;
    const first = this.n;
    this.reserve(first + blobs.length);
    for (let k = 0; k < blobs.length; k++) {
      const b = blobs[k]!;
      const i = first + k;
      if (b.id.length !== 64 || this.idsBuf.write(b.id, i * 32, 32, 'hex') !== 32) throw new IntegrityError(`invalid blob id ${JSON.stringify(b.id).slice(0, 80)} in pack ${packId.slice(0, 10)}`);
      this.setEntry(i, b.type === 'tree' ? TYPE_TREE : TYPE_DATA, b.offset, b.length, b.uncompressedLength ?? 0);
    }
    this.n = first + blobs.length;
    this.commit(first, [{ id: packId, first, count: blobs.length }]);
  }

  addFile(fileId: string, f: IndexFile): void {
    this.files.add(fileId);
    for (const p of f.packs) this.addPack(p.id, p.blobs);
  }

  /**
   * Adds an index file from its JSON bytes, with decodeIndex's checks and errors, without building
   * its objects: JSON.parse's are garbage as soon as their numbers and IDs are in the tables.
   * Nothing is added when the file is invalid.
   */
  addIndexBytes(fileId: string, buf: Buffer, what = 'index'): void {
    const first = this.n;
    let packs: PendingPack[] | undefined;
    try {
      packs = this.scanIndex(buf);
      this.scanned++;
    } catch (err) {
      this.n = first;
      if (err !== UNUSUAL) throw err;
    }
    packs ??= this.walkParsed(buf, what);
    this.files.add(fileId);
    this.commit(first, packs);
  }

  /** @internal index files read by the byte scanner (the others went through JSON.parse). */
  scanned = 0;

  /**
   * Reads an index file in the shape restic writes (any whitespace and key order) straight from its
   * bytes into the tables, from entry n on: neither the JSON text as a string nor JSON.parse's
   * objects are made. On the bench repository (49k blobs in 7 files) those were ~30 MB of the peak of
   * every command that loads the index. Throws UNUSUAL at anything else (escapes in strings, unknown
   * or repeated keys, numbers that are not plain integers, invalid JSON, bad IDs): walkParsed then
   * decides, with decodeIndex's checks and errors.
   */
  private scanIndex(buf: Buffer): PendingPack[] {
    const s = new IndexScan(buf);
    const packs: PendingPack[] = [];
    const seen = new Set<string>();
    const c = s.ws();
    if (c === 0x5b) this.scanPacks(s, packs, seen);
    else if (c === 0x7b) {
      s.pos++;
      let keys = 0;
      if (s.ws() === 0x7d) s.pos++;
      else {
        for (;;) {
          const k = s.key();
          if (keys & k) throw UNUSUAL;
          keys |= k;
          if (k === K_PACKS) this.scanPacks(s, packs, seen);
          else if (k === K_SUPERSEDES) s.idList();
          else throw UNUSUAL;
          if (s.endOf(0x7d)) break;
        }
      }
    } else throw UNUSUAL;
    if (s.ws() !== -1) throw UNUSUAL;
    return packs;
  }

  private scanPacks(s: IndexScan, packs: PendingPack[], seen: Set<string>): void {
    s.expect(0x5b);
    if (s.ws() === 0x5d) {
      s.pos++;
      return;
    }
    do {
      s.expect(0x7b);
      const start = this.n;
      let count = 0;
      let packId: string | undefined;
      let keys = 0;
      do {
        const k = s.key();
        if (keys & k) throw UNUSUAL;
        keys |= k;
        if (k === K_ID) packId = s.hexId();
        else if (k === K_BLOBS) count = this.scanBlobs(s, start);
        else throw UNUSUAL;
      } while (!s.endOf(0x7d));
      if (packId === undefined) throw UNUSUAL;
      // a pack known already (or listed twice in this file) is left out
      if (this.packNo.has(packId) || seen.has(packId)) continue;
      seen.add(packId);
      this.n = start + count;
      packs.push({ id: packId, first: start, count });
    } while (!s.endOf(0x5d));
  }

  /** Reads a pack's list of blobs into entries start, start + 1, ...; returns how many. */
  private scanBlobs(s: IndexScan, start: number): number {
    s.expect(0x5b);
    if (s.ws() === 0x5d) {
      s.pos++;
      return 0;
    }
    let i = start;
    do {
      this.reserve(i + 1);
      s.expect(0x7b);
      let keys = 0;
      let type = -1;
      let offset = 0;
      let length = 0;
      let ulength = 0;
      do {
        const k = s.key();
        if (keys & k) throw UNUSUAL;
        keys |= k;
        switch (k) {
          case K_ID:
            s.hexIdInto(this.ids, i * 32);
            break;
          case K_TYPE:
            type = s.blobType();
            break;
          case K_OFFSET:
            offset = s.uint();
            break;
          case K_LENGTH:
            length = s.uint();
            break;
          case K_ULENGTH:
            ulength = s.uint();
            break;
          default:
            throw UNUSUAL;
        }
      } while (!s.endOf(0x7d));
      if (!(keys & K_ID) || type < 0) throw UNUSUAL;
      this.setEntry(i, type, offset, length, ulength);
      i++;
    } while (!s.endOf(0x5d));
    return i - start;
  }

  /** The JSON.parse path: every shape JSON allows, decodeIndex's checks and errors; nothing added on error. */
  private walkParsed(buf: Buffer, what: string): PendingPack[] {
    const packsRaw = indexPacksOf(buf, what);
    const first = this.n;
    const packs: PendingPack[] = [];
    const seen = new Set<string>();
    try {
      for (const p of packsRaw as { id?: unknown; blobs?: unknown }[]) {
        if (typeof p?.id !== 'string' || !HEX64.test(p.id)) throw new IntegrityError(`${what}: invalid pack id`);
        const packId = p.id;
        const blobs = (Array.isArray(p.blobs) ? p.blobs : []) as Record<string, unknown>[];
        const start = this.n;
        this.reserve(start + blobs.length);
        for (let k = 0; k < blobs.length; k++) {
          const b = blobs[k]!;
          const t = b.type;
          if (t !== 'data' && t !== 'tree') throw new IntegrityError(`${what}: invalid blob type ${String(t)}`);
          const i = start + k;
          if (typeof b.id !== 'string' || !HEX64.test(b.id)) throw new IntegrityError(`${what}: invalid blob id in pack ${packId.slice(0, 10)}`);
          this.idsBuf.write(b.id, i * 32, 32, 'hex');
          this.setEntry(i, t === 'tree' ? TYPE_TREE : TYPE_DATA, Number(b.offset ?? 0), Number(b.length ?? 0), Number(b.uncompressed_length ?? 0));
        }
        // a pack known already (or listed twice in this file) is checked and left out
        if (this.packNo.has(packId) || seen.has(packId)) continue;
        seen.add(packId);
        this.n = start + blobs.length;
        packs.push({ id: packId, first: start, count: blobs.length });
      }
    } catch (err) {
      this.n = first;
      throw err;
    }
    return packs;
  }

  count(type?: BlobType): number {
    return type ? this.counts[type === 'tree' ? TYPE_TREE : TYPE_DATA]! : this.counts[0]! + this.counts[1]!;
  }

  /** The blobs of pack number `p`, as objects. */
  packEntries(p: number): IndexEntry[] {
    const first = this.packFirst[p]!;
    const count = this.packCount[p]!;
    const packId = this.packIds[p]!;
    const out: IndexEntry[] = new Array(count);
    for (let k = 0; k < count; k++) {
      const i = first + k;
      out[k] = {
        type: TYPE_NAMES[this.types[i]!]!,
        id: this.idsBuf.toString('hex', i * 32, i * 32 + 32),
        packId,
        offset: this.offsets[i]!,
        length: this.lengths[i]!,
        uncompressedLength: this.ulengths[i]!,
      };
    }
    return out;
  }

  /** @internal the pack number of a pack ID. */
  packNumber(packId: string): number | undefined {
    return this.packNo.get(packId);
  }

  /** @internal pack IDs in the order added. */
  packIdList(): readonly string[] {
    return this.packIds;
  }

  // ---- internals

  private setEntry(i: number, type: number, offset: number, length: number, ulength: number): void {
    this.types[i] = type;
    if ((offset > 0xffffffff || length > 0xffffffff || ulength > 0xffffffff) && this.offsets instanceof Uint32Array) {
      this.offsets = Float64Array.from(this.offsets);
      this.lengths = Float64Array.from(this.lengths);
      this.ulengths = Float64Array.from(this.ulengths);
    }
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.ulengths[i] = ulength;
  }

  /** Registers packs whose entries were written from `first` on, and puts their blobs in the table. */
  private commit(first: number, packs: PendingPack[]): void {
    for (const p of packs) {
      const no = this.packIds.length;
      this.packIds.push(p.id);
      this.packFirst.push(p.first);
      this.packCount.push(p.count);
      this.packNo.set(p.id, no);
      this.packOf.fill(no, p.first, p.first + p.count);
    }
    if ((this.used + this.n - first) * 2 > this.table.length) this.rehash(this.used + this.n - first);
    for (let i = first; i < this.n; i++) this.insert(i);
  }

  private reserve(want: number): void {
    if (want <= this.cap) return;
    // 1.5x: a million blobs leave at most a third of the arrays unused (doubling: up to half)
    const cap = Math.max(want, Math.ceil(this.cap * 1.5), 1024);
    const ids = new Uint8Array(cap * 32);
    // (all of it: addIndexBytes writes a pack's entries past n before they count)
    ids.set(this.ids);
    this.ids = ids;
    this.idsBuf = Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength);
    this.idWords = new Uint32Array(ids.buffer, ids.byteOffset, cap * 8);
    const grow = <T extends Float64Array | Uint32Array | Uint8Array>(a: T): T => {
      const b = new (a.constructor as new (k: number) => T)(cap);
      b.set(a as never);
      return b;
    };
    this.offsets = grow(this.offsets);
    this.lengths = grow(this.lengths);
    this.ulengths = grow(this.ulengths);
    this.types = grow(this.types);
    this.packOf = grow(this.packOf);
    this.cap = cap;
  }

  private rehash(entries: number): void {
    let size = 1024;
    while (size < entries * 2) size *= 2;
    const old = this.table;
    this.table = new Int32Array(size);
    this.used = 0;
    this.counts[0] = this.counts[1] = 0;
    for (let s = 0; s < old.length; s++) if (old[s]) this.insert(old[s]! - 1);
  }

  /** Puts entry i in the table unless its (type, ID) is there already (the first one seen wins). */
  private insert(i: number): void {
    const mask = this.table.length - 1;
    const type = this.types[i]!;
    const w = this.idWords;
    let s = (w[i * 8]! ^ (type * 0x9e3779b9)) & mask;
    for (;;) {
      const e = this.table[s]!;
      if (e === 0) {
        this.table[s] = i + 1;
        this.used++;
        this.counts[type]!++;
        return;
      }
      if (this.sameKey(e - 1, type, w, i * 8)) return;
      s = (s + 1) & mask;
    }
  }

  private sameKey(e: number, type: number, words: Uint32Array, at: number): boolean {
    if (this.types[e] !== type) return false;
    const w = this.idWords;
    const b = e * 8;
    for (let k = 0; k < 8; k++) if (w[b + k] !== words[at + k]) return false;
    return true;
  }

  /** The entry number of (type, id), or -1. */
  private find(type: number, id: string): number {
    if (!this.table.length || typeof id !== 'string' || id.length !== 64) return -1;
    if (this.probe.write(id, 0, 32, 'hex') !== 32) return -1;
    const mask = this.table.length - 1;
    let s = (this.probeWords[0]! ^ (type * 0x9e3779b9)) & mask;
    for (;;) {
      const e = this.table[s]!;
      if (e === 0) return -1;
      if (this.sameKey(e - 1, type, this.probeWords, 0)) return e - 1;
      s = (s + 1) & mask;
    }
  }

}

/** The byte scanner gives up: the file is left to JSON.parse (MasterIndex.walkParsed). */
const UNUSUAL = Symbol('unusual index JSON');

// Keys of restic's index JSON, one bit each (to catch a key given twice).
const K_ID = 1;
const K_TYPE = 2;
const K_OFFSET = 4;
const K_LENGTH = 8;
const K_ULENGTH = 16;
const K_BLOBS = 32;
const K_PACKS = 64;
const K_SUPERSEDES = 128;
const KEYS: readonly [Buffer, number][] = [
  [Buffer.from('id'), K_ID],
  [Buffer.from('type'), K_TYPE],
  [Buffer.from('offset'), K_OFFSET],
  [Buffer.from('length'), K_LENGTH],
  [Buffer.from('uncompressed_length'), K_ULENGTH],
  [Buffer.from('blobs'), K_BLOBS],
  [Buffer.from('packs'), K_PACKS],
  [Buffer.from('supersedes'), K_SUPERSEDES],
];

/** Value of a lower-case hex digit, -1 for any other byte (restic writes IDs in lower case). */
const HEX_VALUE = (() => {
  const t = new Int8Array(256).fill(-1);
  for (let i = 0; i < 10; i++) t[0x30 + i] = i;
  for (let i = 0; i < 6; i++) t[0x61 + i] = 10 + i;
  return t;
})();

/** A cursor over JSON bytes for MasterIndex.scanIndex; every method throws UNUSUAL at what it does not expect. */
class IndexScan {
  pos = 0;
  constructor(private readonly b: Buffer) {}

  /** Skips whitespace; the next byte, or -1 at the end. */
  ws(): number {
    const b = this.b;
    let p = this.pos;
    while (p < b.length) {
      const c = b[p]!;
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
        this.pos = p;
        return c;
      }
      p++;
    }
    this.pos = p;
    return -1;
  }

  expect(c: number): void {
    if (this.ws() !== c) throw UNUSUAL;
    this.pos++;
  }

  /** After a member or element: true at the closing `close`, false at a comma. */
  endOf(close: number): boolean {
    const c = this.ws();
    this.pos++;
    if (c === close) return true;
    if (c !== 0x2c) throw UNUSUAL;
    return false;
  }

  /** A string without escapes: the offset of its first byte (it ends at pos - 1). */
  private str(): number {
    if (this.ws() !== 0x22) throw UNUSUAL;
    const b = this.b;
    const start = this.pos + 1;
    let p = start;
    for (;;) {
      if (p >= b.length) throw UNUSUAL;
      const c = b[p]!;
      if (c === 0x22) break;
      if (c === 0x5c || c < 0x20) throw UNUSUAL;
      p++;
    }
    this.pos = p + 1;
    return start;
  }

  /** A member's key and its colon: the key's bit. */
  key(): number {
    const start = this.str();
    const len = this.pos - 1 - start;
    let code = 0;
    for (const [k, bit] of KEYS) {
      if (k.length !== len) continue;
      let i = 0;
      while (i < len && this.b[start + i] === k[i]) i++;
      if (i === len) {
        code = bit;
        break;
      }
    }
    if (!code) throw UNUSUAL;
    this.expect(0x3a);
    return code;
  }

  /** A 64-digit lower-case hex string, as a string. */
  hexId(): string {
    const start = this.str();
    if (this.pos - 1 - start !== 64) throw UNUSUAL;
    for (let i = start; i < start + 64; i++) if (HEX_VALUE[this.b[i]!]! < 0) throw UNUSUAL;
    return this.b.toString('latin1', start, start + 64);
  }

  /** A 64-digit lower-case hex string, as 32 bytes into `out` at `at`. */
  hexIdInto(out: Uint8Array, at: number): void {
    const start = this.str();
    if (this.pos - 1 - start !== 64) throw UNUSUAL;
    const b = this.b;
    for (let k = 0; k < 32; k++) {
      const hi = HEX_VALUE[b[start + 2 * k]!]!;
      const lo = HEX_VALUE[b[start + 2 * k + 1]!]!;
      if ((hi | lo) < 0) throw UNUSUAL;
      out[at + k] = (hi << 4) | lo;
    }
  }

  /** "data" or "tree": TYPE_DATA or TYPE_TREE. */
  blobType(): number {
    const start = this.str();
    const b = this.b;
    if (this.pos - 1 - start === 4) {
      if (b[start] === 0x64 && b[start + 1] === 0x61 && b[start + 2] === 0x74 && b[start + 3] === 0x61) return TYPE_DATA;
      if (b[start] === 0x74 && b[start + 1] === 0x72 && b[start + 2] === 0x65 && b[start + 3] === 0x65) return TYPE_TREE;
    }
    throw UNUSUAL;
  }

  /** A plain non-negative integer of up to 15 digits (exact in a double, as JSON.parse reads it). */
  uint(): number {
    this.ws();
    const b = this.b;
    const start = this.pos;
    let p = start;
    let v = 0;
    while (p < b.length) {
      const c = b[p]!;
      if (c < 0x30 || c > 0x39) break;
      v = v * 10 + (c - 0x30);
      p++;
    }
    const digits = p - start;
    if (digits === 0 || digits > 15 || (digits > 1 && b[start] === 0x30)) throw UNUSUAL;
    if (p < b.length && (b[p] === 0x2e || b[p] === 0x65 || b[p] === 0x45)) throw UNUSUAL;
    this.pos = p;
    return v;
  }

  /** A list of hex IDs (supersedes), skipped. */
  idList(): void {
    this.expect(0x5b);
    if (this.ws() === 0x5d) {
      this.pos++;
      return;
    }
    do this.hexId();
    while (!this.endOf(0x5d));
  }
}

interface PendingPack {
  id: string;
  first: number;
  count: number;
}

/** The packs of a MasterIndex, as a read-only map of pack ID → blobs (arrays built on each call). */
export class PackTable {
  constructor(private readonly index: MasterIndex) {}

  get size(): number {
    return this.index.packIdList().length;
  }

  has(packId: string): boolean {
    return this.index.packNumber(packId) !== undefined;
  }

  get(packId: string): IndexEntry[] | undefined {
    const p = this.index.packNumber(packId);
    return p === undefined ? undefined : this.index.packEntries(p);
  }

  *keys(): IterableIterator<string> {
    yield* this.index.packIdList();
  }

  *values(): IterableIterator<IndexEntry[]> {
    const ids = this.index.packIdList();
    for (let p = 0; p < ids.length; p++) yield this.index.packEntries(p);
  }

  *entries(): IterableIterator<[string, IndexEntry[]]> {
    const ids = this.index.packIdList();
    for (let p = 0; p < ids.length; p++) yield [ids[p]!, this.index.packEntries(p)];
  }

  [Symbol.iterator](): IterableIterator<[string, IndexEntry[]]> {
    return this.entries();
  }
}
