// Repository locations as restic spells them: a local path, local:PATH, s3:HOST/BUCKET[/PREFIX],
// s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX], azure:CONTAINER:/PREFIX, gs:BUCKET:/PREFIX,
// rest:http(s)://[USER:PASS@]HOST:PORT/[PATH/]. `display` never contains secrets.
import path from 'node:path';
import { UsageError } from '../core/errors.js';

export interface LocalLocation {
  scheme: 'local';
  path: string;
  display: string;
}

export interface S3Location {
  scheme: 's3';
  /** Custom endpoint URL (`https://host:port`); undefined = AWS's own endpoints. */
  endpoint?: string;
  region?: string;
  bucket: string;
  /** Key prefix without leading/trailing slashes ('' = bucket root). */
  prefix: string;
  display: string;
}

export interface AzureLocation {
  scheme: 'azure';
  container: string;
  prefix: string;
  /** Blob service URL (`http://127.0.0.1:10000/devstoreaccount1`); undefined = from account / env. */
  endpoint?: string;
  display: string;
}

export interface GcsLocation {
  scheme: 'gs';
  bucket: string;
  prefix: string;
  /** JSON API endpoint (emulator); undefined = Google's. */
  endpoint?: string;
  display: string;
}

export interface RestLocation {
  scheme: 'rest';
  /** Base URL ending in '/', without user info. */
  url: string;
  username?: string;
  password?: string;
  display: string;
}

export type RepoLocation = LocalLocation | S3Location | AzureLocation | GcsLocation | RestLocation;

const KNOWN = ['local', 's3', 'azure', 'gs', 'rest', 'b2', 'swift', 'sftp', 'rclone'];

/** Cleans a key prefix: no leading/trailing slashes, no empty, '.' or '..' segments. */
export function cleanPrefix(p: string, what = 'prefix'): string {
  const segs = p.split('/').filter((s) => s !== '' && s !== '.');
  if (segs.includes('..')) throw new UsageError(`invalid ${what} "${p}": '..' is not allowed`);
  return segs.join('/');
}

function bucketCheck(name: string, url: string, what: string): string {
  if (!name) throw new UsageError(`invalid repository URL "${url}": no ${what} given`, `e.g. s3:https://host:port/BUCKET/PREFIX, azure:CONTAINER:/PREFIX, gs:BUCKET:/PREFIX`);
  // (S3, Azure and GCS all refuse names under 3 characters; radosgw's answer to one is a bare
  // "HTTP 400 UnknownError". Longer names and other characters are left to the server: some allow
  // legacy names AWS no longer accepts.)
  const rule = `${what} names have 3 to 63 characters: lowercase letters, digits, dots and hyphens`;
  if (name.length < 3) throw new UsageError(`invalid ${what} name "${name}" in repository URL: too short`, rule);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/.test(name)) throw new UsageError(`invalid ${what} name "${name}" in repository URL`, rule);
  return name;
}

export function s3Display(endpoint: string | undefined, bucket: string, prefix: string): string {
  return `s3:${endpoint ?? 's3.amazonaws.com'}/${bucket}${prefix ? '/' + prefix : ''}`;
}

export function parseRepositoryUrl(url: string): RepoLocation {
  if (typeof url !== 'string' || url.trim() === '') throw new UsageError('no repository location given', 'pass --repo (or set DM_REPOSITORY / RESTIC_REPOSITORY)');
  const m = /^([A-Za-z][A-Za-z0-9+.-]+):(.*)$/s.exec(url);
  if (!m) {
    const p = path.resolve(url);
    return { scheme: 'local', path: p, display: `local:${p}` };
  }
  const scheme = m[1].toLowerCase();
  const rest = m[2];
  switch (scheme) {
    case 'local': {
      if (!rest) throw new UsageError(`invalid repository URL "${url}": no path after local:`);
      const p = path.resolve(rest);
      return { scheme: 'local', path: p, display: `local:${p}` };
    }
    case 's3':
      return parseS3(url, rest);
    case 'azure':
    case 'gs': {
      const mm = /^([^:/]*):(.*)$/s.exec(rest);
      if (!mm) throw new UsageError(`invalid repository URL "${url}"`, `expected ${scheme}:${scheme === 'gs' ? 'BUCKET' : 'CONTAINER'}:/PREFIX`);
      const name = bucketCheck(mm[1], url, scheme === 'gs' ? 'bucket' : 'container');
      const prefix = cleanPrefix(mm[2]);
      const display = `${scheme}:${name}:/${prefix}`;
      return scheme === 'gs' ? { scheme: 'gs', bucket: name, prefix, display } : { scheme: 'azure', container: name, prefix, display };
    }
    case 'rest':
      return parseRest(url, rest);
    default:
      if (KNOWN.includes(scheme)) throw new UsageError(`repository type "${scheme}:" is not supported by dmctl`, 'use local, s3:, azure:, gs: or rest:');
      throw new UsageError(`unknown repository URL scheme "${scheme}:"`, 'use a local path, local:PATH, s3:HOST/BUCKET/PREFIX, azure:CONTAINER:/PREFIX, gs:BUCKET:/PREFIX or rest:http(s)://HOST:PORT/PATH/');
  }
}

function parseS3(url: string, rest: string): S3Location {
  let endpoint: string | undefined;
  let pathPart: string;
  const um = /^(https?):\/\/([^/]+)(\/.*)?$/i.exec(rest);
  if (um) {
    if (um[2].includes('@')) throw new UsageError('credentials in an s3: URL are not supported', 'use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile');
    endpoint = `${um[1].toLowerCase()}://${um[2]}`;
    pathPart = um[3] ?? '';
  } else {
    const slash = rest.indexOf('/');
    const host = slash < 0 ? rest : rest.slice(0, slash);
    if (!host) throw new UsageError(`invalid repository URL "${url}": no host`, 'expected s3:HOST/BUCKET[/PREFIX]');
    endpoint = `https://${host}`;
    pathPart = slash < 0 ? '' : rest.slice(slash);
  }
  let region: string | undefined;
  const host = new URL(endpoint).hostname;
  const aws = /^s3(?:[.-]([a-z0-9-]+))?\.amazonaws\.com$/.exec(host);
  if (aws) {
    endpoint = undefined; // AWS: let the SDK pick the regional endpoint
    if (aws[1] && aws[1] !== 'external-1') region = aws[1];
  }
  const segs = pathPart.split('/').filter((s) => s !== '');
  const bucket = bucketCheck(segs[0] ?? '', url, 'bucket');
  const prefix = cleanPrefix(segs.slice(1).join('/'));
  return { scheme: 's3', endpoint, region, bucket, prefix, display: s3Display(endpoint, bucket, prefix) };
}

function parseRest(url: string, rest: string): RestLocation {
  let u: URL;
  try {
    u = new URL(rest);
  } catch {
    throw new UsageError(`invalid repository URL "${redactUrl(url)}"`, 'expected rest:http(s)://[USER:PASS@]HOST:PORT/[PATH/]');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`invalid repository URL "${redactUrl(url)}": rest: needs http:// or https://`);
  const username = u.username ? decodeURIComponent(u.username) : undefined;
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  u.username = '';
  u.password = '';
  u.search = '';
  u.hash = '';
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  const base = u.toString();
  return { scheme: 'rest', url: base, username, password, display: `rest:${username ? base.replace('://', `://${username}:***@`) : base}` };
}

/** Replaces the password of any user:pass@ in a URL-ish string (for messages). */
export function redactUrl(s: string): string {
  return s.replace(/(\/\/[^/:@\s]*:)[^@/\s]*@/g, '$1***@');
}
