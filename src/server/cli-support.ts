// Small helpers shared by the `server` commands (no oclif here): secrets from files/env, admin client options.
import { promises as fsp } from 'node:fs';
import { UsageError } from '../core/errors.js';
import type { ServerClientOptions } from './client.js';

/** Reads a one-line secret file (trailing newline removed). */
export async function readSecretFile(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'check the path');
  }
  const pw = text.replace(/\r?\n$/, '');
  if (!pw) throw new UsageError(`${what} file ${file} is empty`);
  return pw;
}

/** Builds client options from flags and DM_SERVER_* environment variables. */
export async function clientOptions(f: {
  server?: string;
  fingerprint?: string;
  cacert?: string;
  user?: string;
  passwordFile?: string;
}, env: NodeJS.ProcessEnv = process.env): Promise<ServerClientOptions> {
  const url = f.server ?? env.DM_SERVER_URL;
  if (!url) throw new UsageError('no server given', 'pass --server https://HOST:PORT/ (or DM_SERVER_URL)');
  const user = f.user ?? env.DM_SERVER_USER;
  const pwFile = f.passwordFile ?? env.DM_SERVER_PASSWORD_FILE;
  const password = pwFile ? await readSecretFile(pwFile, 'password') : env.DM_SERVER_PASSWORD;
  return { url, fingerprint: f.fingerprint ?? env.DM_SERVER_CERT_FINGERPRINT, cacert: f.cacert, user, password };
}
