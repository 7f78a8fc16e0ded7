// Kanister Profile JSON (what `{{ toJson .Profile }}` renders) → a storage location and options.
// Go field names at the top (Location, Credential, SkipSSLVerify), lowercase tags inside Location;
// keys are matched case-insensitively like Go's decoder. Credentials: keyPair {ID, Secret} or a
// corev1 Secret with base64 `data`. Messages never contain a secret or a piece of the JSON.
import { promises as fsp } from 'node:fs';
import { UsageError } from '../core/errors.js';
import type { BackendOptions, StorageCredentials } from '../storage/open.js';
import { RepoLocation, cleanPrefix, s3Display } from '../storage/url.js';

export type ProfileLocationType = 's3Compliant' | 'gcs' | 'azure';

export interface KanisterProfile {
  type: ProfileLocationType;
  bucket: string;
  endpoint?: string;
  prefix: string;
  region?: string;
  credentials: StorageCredentials;
  skipSSLVerify: boolean;
}

type Obj = Record<string, unknown>;

/** Case-insensitive field lookup (Go's encoding/json matching). */
function field(o: unknown, name: string): unknown {
  if (!o || typeof o !== 'object' || Array.isArray(o)) return undefined;
  const rec = o as Obj;
  if (name in rec) return rec[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(rec)) if (k.toLowerCase() === lower) return rec[k];
  return undefined;
}

function str(o: unknown, name: string, what: string): string | undefined {
  const v = field(o, name);
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new UsageError(`invalid profile: ${what} must be a string`);
  return v;
}

const bad = (msg: string) => new UsageError(`invalid profile: ${msg}`, 'pass the Profile as rendered by {{ toJson .Profile }} (--profile JSON or --profile-file FILE)');

/** Reads the values of a corev1 Secret JSON: base64 `data` (and plain `stringData`). */
function secretValues(secret: unknown): Map<string, string> {
  const out = new Map<string, string>();
  const data = field(secret, 'data');
  if (data && typeof data === 'object') {
    for (const [k, v] of Object.entries(data as Obj)) {
      if (typeof v !== 'string') throw bad(`Secret data "${k}" must be a base64 string`);
      if (!/^[A-Za-z0-9+/=\s]*$/.test(v)) throw bad(`Secret data "${k}" is not base64`);
      out.set(k, Buffer.from(v, 'base64').toString('utf8'));
    }
  }
  const sd = field(secret, 'stringData');
  if (sd && typeof sd === 'object') for (const [k, v] of Object.entries(sd as Obj)) if (typeof v === 'string') out.set(k, v);
  return out;
}

const AZURE_SUFFIX: Record<string, string> = {
  azurepubliccloud: 'core.windows.net',
  azurecloud: 'core.windows.net',
  azureusgovernmentcloud: 'core.usgovcloudapi.net',
  azureusgovernment: 'core.usgovcloudapi.net',
  azurechinacloud: 'core.chinacloudapi.cn',
  azuregermancloud: 'core.cloudapi.de',
};

/** Parses Profile JSON text. Malformed input ⇒ one-line UsageError, no secret echoed. */
export function parseProfile(json: string): KanisterProfile {
  let root: unknown;
  try {
    root = JSON.parse(json);
  } catch (err) {
    const pos = /position (\d+)/.exec(String((err as Error).message))?.[1];
    throw bad(`not valid JSON${pos ? ` (at character ${pos})` : ''}`);
  }
  if (!root || typeof root !== 'object' || Array.isArray(root)) throw bad('expected a JSON object');
  const loc = field(root, 'Location');
  if (!loc || typeof loc !== 'object') throw bad('no Location');
  const typeRaw = str(loc, 'type', 'Location.type') ?? '';
  const type = ({ s3compliant: 's3Compliant', gcs: 'gcs', azure: 'azure' } as Record<string, ProfileLocationType>)[typeRaw.toLowerCase()];
  if (!type) {
    if (typeRaw.toLowerCase() === 'kopia') throw new UsageError('Profile location type "kopia" is not supported by dmctl', 'use an s3Compliant, gcs or azure profile');
    throw bad(`unknown Location.type "${typeRaw.slice(0, 40)}" (expected s3Compliant, gcs or azure)`);
  }
  const bucket = str(loc, 'bucket', 'Location.bucket');
  if (!bucket) throw bad('Location.bucket is empty');
  const prefix = cleanPrefix(str(loc, 'prefix', 'Location.prefix') ?? '', 'Location.prefix');
  const endpoint = str(loc, 'endpoint', 'Location.endpoint');
  const region = str(loc, 'region', 'Location.region');
  const skip = field(root, 'SkipSSLVerify');
  if (skip !== undefined && skip !== null && typeof skip !== 'boolean') throw bad('SkipSSLVerify must be true or false');

  const credentials: StorageCredentials = {};
  const cred = field(root, 'Credential');
  let envSuffix: string | undefined;
  if (cred && typeof cred === 'object') {
    const ctype = (str(cred, 'Type', 'Credential.Type') ?? '').toLowerCase();
    if (ctype === 'keypair' || (!ctype && field(cred, 'KeyPair'))) {
      const kp = field(cred, 'KeyPair');
      const id = str(kp, 'ID', 'KeyPair.ID');
      const secret = str(kp, 'Secret', 'KeyPair.Secret');
      if (!id || !secret) throw bad('keyPair credential needs both ID and Secret');
      if (type === 's3Compliant') credentials.s3 = { accessKeyId: id, secretAccessKey: secret };
      else if (type === 'azure') credentials.azure = { accountName: id, accountKey: secret };
      else credentials.gcs = { projectId: id, credentialsJson: secret };
    } else if (ctype === 'secret') {
      const v = secretValues(field(cred, 'Secret'));
      if (type === 's3Compliant') {
        const allowed = new Set(['aws_access_key_id', 'aws_secret_access_key', 'role']);
        for (const k of v.keys()) if (!allowed.has(k)) throw bad(`AWS Secret has an unexpected key "${k.slice(0, 40)}"`);
        const id = v.get('aws_access_key_id');
        const sk = v.get('aws_secret_access_key');
        if (!id || !sk) throw bad('AWS Secret needs aws_access_key_id and aws_secret_access_key');
        // With a role, requests use temporary credentials from STS AssumeRole (60 minutes, renewed).
        const role = v.get('role')?.trim();
        credentials.s3 = { accessKeyId: id, secretAccessKey: sk, ...(role ? { roleArn: role } : {}) };
      } else if (type === 'azure') {
        const acct = v.get('azure_storage_account_id');
        const key = v.get('azure_storage_key');
        if (!acct || !key) throw bad('Azure Secret needs azure_storage_account_id and azure_storage_key');
        credentials.azure = { accountName: acct, accountKey: key };
        const envName = v.get('azure_storage_environment');
        if (envName) {
          envSuffix = AZURE_SUFFIX[envName.toLowerCase().replace(/[^a-z]/g, '')];
          if (!envSuffix) throw bad(`unknown azure_storage_environment "${envName.slice(0, 40)}"`);
        }
      } else {
        const json = v.get('service-account.json');
        if (!json) throw bad('GCP Secret needs service-account.json');
        credentials.gcs = { projectId: v.get('gcp_project_id'), credentialsJson: json };
      }
    } else if (ctype === 'kopia') {
      throw new UsageError('Profile credential type "kopia" is not supported by dmctl', 'use a keyPair or secret credential');
    } else if (ctype) {
      throw bad(`unknown Credential.Type "${ctype.slice(0, 40)}"`);
    }
  }
  let ep = endpoint;
  if (type === 'azure' && !ep && envSuffix && credentials.azure?.accountName) ep = `https://${credentials.azure.accountName}.blob.${envSuffix}`;
  return { type, bucket, endpoint: ep, prefix, region, credentials, skipSSLVerify: skip === true };
}

/** Reads --profile / --profile-file (exactly one). */
export async function loadProfile(flags: { profile?: string; profileFile?: string }): Promise<KanisterProfile> {
  if (flags.profile && flags.profileFile) throw new UsageError('give either --profile or --profile-file, not both');
  if (flags.profileFile) {
    let text: string;
    try {
      text = await fsp.readFile(flags.profileFile, 'utf8');
    } catch {
      throw new UsageError(`cannot read the profile file ${flags.profileFile}`);
    }
    return parseProfile(text);
  }
  if (flags.profile) return parseProfile(flags.profile);
  throw new UsageError('Please provide the --profile flag', 'or --profile-file FILE holding the Profile JSON');
}

function joinPrefix(a: string, b?: string): string {
  return cleanPrefix([a, b ?? ''].filter(Boolean).join('/'));
}

/** The location a profile points at; `subPath` is appended to Location.prefix (a restic repository in it). */
export function profileLocation(p: KanisterProfile, subPath?: string): RepoLocation {
  const prefix = joinPrefix(p.prefix, subPath);
  switch (p.type) {
    case 's3Compliant': {
      let endpoint = p.endpoint ? (/^https?:\/\//i.test(p.endpoint) ? p.endpoint : `https://${p.endpoint}`).replace(/\/+$/, '') : undefined;
      if (endpoint && /^https?:\/\/s3([.-][a-z0-9-]+)?\.amazonaws\.com$/i.test(endpoint)) endpoint = undefined;
      return { scheme: 's3', endpoint, region: p.region, bucket: p.bucket, prefix, display: s3Display(endpoint, p.bucket, prefix) };
    }
    case 'azure':
      return { scheme: 'azure', container: p.bucket, prefix, endpoint: p.endpoint, display: `azure:${p.bucket}:/${prefix}` };
    case 'gcs':
      return { scheme: 'gs', bucket: p.bucket, prefix, endpoint: p.endpoint, display: `gs:${p.bucket}:/${prefix}` };
  }
}

/** openBackend / openObjectStore options a profile implies (credentials, TLS verification). */
export function profileOptions(p: KanisterProfile, base: BackendOptions = {}): BackendOptions {
  return { ...base, profile: { ...base.profile, ...p.credentials }, insecureTls: base.insecureTls || p.skipSSLVerify };
}
