// One entry point from a location (URL string or parsed RepoLocation) to a ready Backend wrapped
// with retries, timeouts and bounded concurrency.
import { promises as fsp } from 'node:fs';
import { UsageError } from '../core/errors.js';
import { Backend } from './backend.js';
import { LocalBackend } from './local.js';
// Provider modules load their SDKs (~1 s for all three): import them only when used.
import type { S3Credentials } from './s3.js';
import type { AzureCredentials } from './azure.js';
import type { GcsCredentials } from './gcs.js';
import { RetryOptions, RetryPolicy, withRetry } from './retry.js';
import { RepoLocation, parseRepositoryUrl } from './url.js';

/** Explicit credentials (from a Kanister profile); without them each SDK's default chain / env applies. */
export interface StorageCredentials {
  s3?: S3Credentials;
  azure?: AzureCredentials;
  gcs?: GcsCredentials;
}

export interface BackendOptions {
  /** Path of a PEM file with extra CA certificates (--cacert), or the PEM text itself. */
  cacert?: string | Buffer;
  /** Skip TLS certificate verification (--insecure-tls). */
  insecureTls?: boolean;
  /** Concurrent requests (--connections); default 5 for remote backends. */
  connections?: number;
  /** Credentials from a Kanister profile (see kanister/profile.ts). */
  profile?: StorageCredentials;
  /** REST only: hex SHA-256 of the server certificate (--server-cert-fingerprint). */
  serverCertFingerprint?: string;
  /** Retry tuning (tests, --retry-*). */
  retry?: RetryOptions;
  /** Environment to read provider variables from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Reads --cacert: a path to a PEM file, or PEM text / bytes given directly. */
export async function loadCa(cacert: string | Buffer | undefined): Promise<Buffer | undefined> {
  if (cacert === undefined) return undefined;
  if (Buffer.isBuffer(cacert)) return cacert;
  if (cacert.includes('-----BEGIN')) return Buffer.from(cacert);
  try {
    return await fsp.readFile(cacert);
  } catch {
    throw new UsageError(`cannot read the CA file ${cacert}`, 'give --cacert a PEM file with the server CA certificate');
  }
}

/** Builds the provider backend without the retry wrapper (tests, object-store reuse). */
export async function openProviderBackend(location: RepoLocation | string, opts: BackendOptions = {}): Promise<Backend> {
  const loc = typeof location === 'string' ? parseRepositoryUrl(location) : location;
  if (opts.connections !== undefined && !(Number.isInteger(opts.connections) && opts.connections >= 1 && opts.connections <= 256)) {
    throw new UsageError(`invalid --connections ${opts.connections}`, 'give a whole number from 1 to 256');
  }
  const ca = await loadCa(opts.cacert);
  const env = opts.env ?? process.env;
  switch (loc.scheme) {
    case 'local':
      return new LocalBackend(loc.path);
    case 's3':
      return new (await import('./s3.js')).S3Backend({ location: loc, credentials: opts.profile?.s3, insecureTls: opts.insecureTls, ca, connections: opts.connections, env });
    case 'azure':
      return new (await import('./azure.js')).AzureBackend({ location: loc, credentials: opts.profile?.azure, insecureTls: opts.insecureTls, ca, connections: opts.connections, env });
    case 'gs':
      return new (await import('./gcs.js')).GcsBackend({ location: loc, credentials: opts.profile?.gcs, insecureTls: opts.insecureTls, ca, connections: opts.connections, env });
    case 'rest':
      return new (await import('./rest.js')).RestBackend({ location: loc, insecureTls: opts.insecureTls, ca, serverCertFingerprint: opts.serverCertFingerprint, connections: opts.connections });
  }
}

/** Opens the backend for a location, wrapped with retries, timeouts and bounded concurrency. */
export async function openBackend(location: RepoLocation | string, opts: BackendOptions = {}): Promise<Backend & { readonly policy: RetryPolicy }> {
  const be = await openProviderBackend(location, opts);
  return withRetry(be, { ...opts.retry, connections: opts.connections ?? opts.retry?.connections });
}
