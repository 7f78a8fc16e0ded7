// Which parts of the local environment a pod needs to reach a repository's storage: the variables named with
// --storage-env, plus the well-known credential variables of the location's provider that are set here. Both the
// server's storage Secret (`server start --kube`) and the short-lived Secret of a datamover pod that goes straight to a
// repository are filled from this, so the two never disagree about what is copied into the cluster.
import { promises as fsp } from 'node:fs';
import { UsageError } from '../core/errors.js';

/** Variables each provider's client reads (see src/storage/*.ts and the SDKs' default credential chains). */
const PROVIDER_VARS: Record<string, string[]> = {
  s3: ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_REQUEST_CHECKSUM_CALCULATION', 'AWS_RESPONSE_CHECKSUM_VALIDATION'],
  azure: ['AZURE_ACCOUNT_NAME', 'AZURE_ACCOUNT_KEY', 'AZURE_ACCOUNT_SAS', 'AZURE_ENDPOINT_SUFFIX', 'AZURE_STORAGE_ACCOUNT', 'AZURE_STORAGE_KEY', 'AZURE_STORAGE_CONNECTION_STRING', 'AZURE_STORAGE_ENDPOINT'],
  gs: ['GOOGLE_PROJECT_ID', 'GOOGLE_CLOUD_PROJECT', 'STORAGE_EMULATOR_HOST'],
};

/** Variables whose value is the path of a credential file: the file's contents travel, not the path. */
const FILE_VARS: Record<string, string[]> = {
  gs: ['GOOGLE_APPLICATION_CREDENTIALS'],
};

export interface StorageEnv {
  /** NAME → value (stored in the Secret as `env.NAME`, given to the container through secretKeyRef). */
  env: Record<string, string>;
  /** NAME → file contents (stored as `file.NAME`, mounted; the container gets NAME = the mounted path). */
  files: Record<string, string>;
}

/** The provider of a repository location: s3, azure, gs, rest, or local. */
export function providerOf(location: string): string {
  const m = /^([a-z0-9]+):/i.exec(location);
  if (!m || /^[a-z]:[\\/]/i.test(location)) return 'local';
  return m[1]!.toLowerCase();
}

/** True when the location itself carries a secret (user:password@ in a rest: URL). */
export function locationHasCredentials(location: string): boolean {
  return /^[a-z0-9]+:[a-z][a-z0-9+.-]*:\/\/[^/@]*@/i.test(location) || /^[a-z][a-z0-9+.-]*:\/\/[^/@]*@/i.test(location);
}

/**
 * Collects what a pod needs. `explicit` (--storage-env) must be set; the provider's own variables are taken when set.
 * With `placeholders`, nothing is read: values are `<from $NAME>` (for --dry-run).
 */
export async function collectStorageEnv(location: string | undefined, explicit: string[] = [], o: { env?: NodeJS.ProcessEnv; placeholders?: boolean } = {}): Promise<StorageEnv> {
  const env = o.env ?? process.env;
  const out: StorageEnv = { env: {}, files: {} };
  const provider = location ? providerOf(location) : 'local';
  for (const v of explicit) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(v)) throw new UsageError(`--storage-env ${v}: not a variable name`);
    if (env[v] === undefined) throw new UsageError(`--storage-env ${v}: not set in this environment`);
    out.env[v] = o.placeholders ? `<from $${v}>` : env[v]!;
  }
  for (const v of PROVIDER_VARS[provider] ?? []) if (env[v] !== undefined && !(v in out.env)) out.env[v] = o.placeholders ? `<from $${v}>` : env[v]!;
  for (const v of FILE_VARS[provider] ?? []) {
    const file = env[v];
    if (!file) continue;
    delete out.env[v];
    if (o.placeholders) {
      out.files[v] = `<contents of ${file}>`;
      continue;
    }
    try {
      out.files[v] = await fsp.readFile(file, 'utf8');
    } catch (err) {
      throw new UsageError(`${v}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'the file is copied into the cluster as a Secret');
    }
  }
  return out;
}
