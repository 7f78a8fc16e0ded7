// The repository config (reference §4): encrypted JSON, never compressed, fixed name.
import crypto from 'node:crypto';
import { IntegrityError } from '../core/errors.js';
import { Backend } from '../storage/backend.js';
import { MasterKey, open, seal } from './crypto.js';
import { formatPolynomial, parsePolynomial } from '../chunker/polynomial.js';

export interface RepoConfig {
  version: 1 | 2;
  id: string;
  chunkerPolynomial: bigint;
}

export function newConfig(version: 1 | 2, polynomial: bigint): RepoConfig {
  return { version, id: crypto.randomBytes(32).toString('hex'), chunkerPolynomial: polynomial };
}

export function encodeConfig(c: RepoConfig): Buffer {
  return Buffer.from(`{"version":${c.version},"id":"${c.id}","chunker_polynomial":"${formatPolynomial(c.chunkerPolynomial)}"}`);
}

export function decodeConfig(plain: Buffer): RepoConfig {
  let j: { version?: unknown; id?: unknown; chunker_polynomial?: unknown };
  try {
    j = JSON.parse(plain.toString('utf8'));
  } catch {
    throw new IntegrityError('repository config is not valid JSON');
  }
  if (j.version !== 1 && j.version !== 2) {
    throw new IntegrityError(`unsupported repository version ${String(j.version)}`, { hint: 'dmctl reads restic repository versions 1 and 2' });
  }
  if (typeof j.id !== 'string' || !/^[0-9a-f]+$/.test(j.id)) throw new IntegrityError('repository config has no valid id');
  if (typeof j.chunker_polynomial !== 'string') throw new IntegrityError('repository config has no chunker polynomial');
  return { version: j.version, id: j.id, chunkerPolynomial: parsePolynomial(j.chunker_polynomial) };
}

export async function saveConfig(be: Backend, key: MasterKey, c: RepoConfig): Promise<void> {
  await be.save('config', 'config', seal(key, encodeConfig(c)));
}

export async function loadConfig(be: Backend, key: MasterKey): Promise<RepoConfig> {
  return openConfig(key, await be.load('config', 'config'));
}

/** Decrypts and decodes the config file's bytes. */
export function openConfig(key: MasterKey, raw: Buffer): RepoConfig {
  return decodeConfig(open(key, raw, 'config'));
}
