// restic snapshot files (plaintext JSON inside the encrypted, v2-compressed unpacked file):
// compact Go JSON, keys in restic 0.14's struct order, omitempty rules as Go applies them, no
// trailing newline. Unknown keys (program_version, summary from newer restic) are preserved
// verbatim and written back after the known ones, which is where newer restic puts them.

import { IntegrityError } from '../core/errors.js';
import { encodeExtraValue, goJsonString, JsonNumber, JsonObject, parseGoJson, RawJson, type JsonValue } from './gojson.js';
import { formatGoTime, parseGoTime, ZERO_GO_TIME, type GoTime } from './gotime.js';

export interface Snapshot {
  /** Backup start time, in the writer's local offset. */
  time: GoTime;
  /** ID of the parent snapshot used for change detection. */
  parent?: string;
  /** Root tree blob ID. */
  tree: string;
  /** Backup targets, absolute, in command-line order. */
  paths: string[];
  hostname?: string;
  username?: string;
  /** Omitted from the JSON when 0 (root), like restic. */
  uid?: number;
  gid?: number;
  excludes?: string[];
  tags?: string[];
  /** ID of the first version of this snapshot, set when its metadata was rewritten. */
  original?: string;
  /** Unknown keys, kept as raw JSON (RawJson) and re-emitted in order after the known keys. */
  extra?: Record<string, unknown>;
}

const ID_RE = /^[0-9a-f]{64}$/;

function idJson(id: string, key: string): string {
  if (!ID_RE.test(id)) throw new IntegrityError(`invalid snapshot: "${key}" is not an ID: ${JSON.stringify(id)}`);
  return '"' + id + '"';
}

function strList(list: readonly string[]): string {
  return '[' + list.map(goJsonString).join(',') + ']';
}

/** Snapshot file plaintext exactly as restic 0.14 writes it. */
export function encodeSnapshot(s: Snapshot): Buffer {
  const p: string[] = ['{"time":"' + formatGoTime(s.time) + '"'];
  if (s.parent) p.push(',"parent":' + idJson(s.parent, 'parent'));
  p.push(',"tree":' + idJson(s.tree, 'tree'));
  p.push(',"paths":' + strList(s.paths));
  if (s.hostname) p.push(',"hostname":' + goJsonString(s.hostname));
  if (s.username) p.push(',"username":' + goJsonString(s.username));
  if (s.uid) p.push(',"uid":' + (s.uid >>> 0));
  if (s.gid) p.push(',"gid":' + (s.gid >>> 0));
  if (s.excludes && s.excludes.length > 0) p.push(',"excludes":' + strList(s.excludes));
  if (s.tags && s.tags.length > 0) p.push(',"tags":' + strList(s.tags));
  if (s.original) p.push(',"original":' + idJson(s.original, 'original'));
  if (s.extra) for (const [k, v] of Object.entries(s.extra)) p.push(',' + goJsonString(k) + ':' + encodeExtraValue(v));
  p.push('}');
  return Buffer.from(p.join(''), 'utf8');
}

function damaged(why: string): IntegrityError {
  return new IntegrityError(`invalid snapshot: ${why}`, {
    hint: 'the snapshot file is damaged or was not written by restic; run `dmctl check`',
  });
}

function str(v: JsonValue, key: string): string | undefined {
  if (v === null) return undefined;
  if (typeof v !== 'string') throw damaged(`"${key}" is not a string`);
  return v;
}

function strs(v: JsonValue, key: string): string[] | undefined {
  if (v === null) return undefined;
  if (!Array.isArray(v)) throw damaged(`"${key}" is not a list`);
  return v.map((x) => {
    if (typeof x !== 'string') throw damaged(`"${key}" holds a non-string`);
    return x;
  });
}

function id(v: JsonValue, key: string): string | undefined {
  if (v === null) return undefined;
  if (typeof v !== 'string' || !/^[0-9a-fA-F]{64}$/.test(v)) throw damaged(`"${key}" is not an ID`);
  return v.toLowerCase();
}

function u32(v: JsonValue, key: string): number | undefined {
  if (v === null) return undefined;
  if (!(v instanceof JsonNumber) || !/^(0|[1-9]\d*)$/.test(v.raw) || v.raw.length > 10 || Number(v.raw) > 0xffffffff) {
    throw damaged(`"${key}" is not a 32-bit unsigned integer`);
  }
  return Number(v.raw);
}

/** Decodes snapshot JSON (any valid restic snapshot; unknown keys go to `extra`). */
export function decodeSnapshot(buf: Uint8Array | string): Snapshot {
  const doc = parseGoJson(buf, 'snapshot');
  if (!(doc instanceof JsonObject)) throw damaged('not a JSON object');
  const s: Snapshot = { time: { ...ZERO_GO_TIME }, tree: '', paths: [] };
  let sawTree = false;
  let extra: Record<string, unknown> | undefined;
  for (const [k, v, raw] of doc.entries) {
    switch (k.toLowerCase()) {
      case 'time':
        if (v !== null) {
          if (typeof v !== 'string') throw damaged('"time" is not a string');
          s.time = parseGoTime(v);
        }
        break;
      case 'parent': s.parent = id(v, 'parent'); break;
      case 'tree': {
        const t = id(v, 'tree');
        if (t !== undefined) {
          s.tree = t;
          sawTree = true;
        }
        break;
      }
      case 'paths': s.paths = strs(v, 'paths') ?? []; break;
      case 'hostname': s.hostname = str(v, 'hostname'); break;
      case 'username': s.username = str(v, 'username'); break;
      case 'uid': s.uid = u32(v, 'uid'); break;
      case 'gid': s.gid = u32(v, 'gid'); break;
      case 'excludes': s.excludes = strs(v, 'excludes'); break;
      case 'tags': s.tags = strs(v, 'tags'); break;
      case 'original': s.original = id(v, 'original'); break;
      default:
        (extra ??= {})[k] = new RawJson(raw);
    }
  }
  if (!sawTree) throw damaged('no tree');
  for (const key of ['parent', 'hostname', 'username', 'uid', 'gid', 'excludes', 'tags', 'original'] as const) {
    if (s[key] === undefined) delete s[key];
  }
  if (extra) s.extra = extra;
  return s;
}
