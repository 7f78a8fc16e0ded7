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

export function decodeIndex(buf: Buffer, what = 'index'): IndexFile {
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

/** All blobs the repository knows, by type and ID. Duplicates: the first location seen wins. */
export class MasterIndex {
  private readonly maps: Record<BlobType, Map<string, IndexEntry>> = { data: new Map(), tree: new Map() };
  /** Pack ID → blobs, for prune/check (the same objects lookup() returns). */
  readonly packs = new Map<string, IndexEntry[]>();
  /** Index file IDs loaded. */
  readonly files = new Set<string>();

  has(type: BlobType, id: string): boolean {
    return this.maps[type].has(id);
  }

  lookup(type: BlobType, id: string): BlobLocation | undefined {
    return this.maps[type].get(id);
  }

  /** Forgets everything (the index is loaded again from scratch). */
  clear(): void {
    this.maps.data.clear();
    this.maps.tree.clear();
    this.packs.clear();
    this.files.clear();
  }

  /** Adds a pack's blobs. Entries that already name this pack (decodeIndex's) are kept as they are. */
  addPack(packId: string, blobs: readonly PackedBlob[]): void {
    const known = this.packs.get(packId);
    if (known) return;
    const entries: IndexEntry[] = new Array(blobs.length);
    for (let i = 0; i < blobs.length; i++) {
      const b = blobs[i] as PackedBlob & { packId?: string };
      const e: IndexEntry = b.packId === packId ? (b as IndexEntry) : { type: b.type, id: b.id, packId, offset: b.offset, length: b.length, uncompressedLength: b.uncompressedLength };
      entries[i] = e;
      const m = this.maps[e.type];
      if (!m.has(e.id)) m.set(e.id, e);
    }
    this.packs.set(packId, entries);
  }

  addFile(fileId: string, f: IndexFile): void {
    this.files.add(fileId);
    for (const p of f.packs) this.addPack(p.id, p.blobs);
  }

  count(type?: BlobType): number {
    return type ? this.maps[type].size : this.maps.data.size + this.maps.tree.size;
  }

  *entries(type: BlobType): IterableIterator<[string, IndexEntry]> {
    yield* this.maps[type].entries();
  }
}
