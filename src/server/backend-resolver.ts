// Opens the Backend a server serves. For now only local paths (`/path`, `./path`, `local:/path`); the general
// repository-URL parser replaces this later.
import path from 'node:path';
import { UsageError } from '../core/errors.js';
import type { Backend } from '../storage/backend.js';
import { LocalBackend } from '../storage/local.js';

export interface ServedBackend {
  backend: Backend;
  /** Opens a sub-repository (`/a/`, `/a/b/`) below the root, when the backend kind supports it. */
  sub?: (segments: string[]) => Backend;
}

export function openBackendForServer(url: string): ServedBackend {
  let p: string | undefined;
  if (url.startsWith('local:')) p = url.slice('local:'.length);
  else if (!/^[a-z][a-z0-9+.-]*:/i.test(url) || /^[a-zA-Z]:[\\/]/.test(url)) p = url;
  if (!p) {
    throw new UsageError(`the server cannot open ${url.replace(/\/\/[^@/]*@/, '//***@')} yet`, 'use a local path (PATH or local:PATH)');
  }
  const root = path.resolve(p);
  return {
    backend: new LocalBackend(root),
    sub: (segments) => new LocalBackend(path.join(root, ...segments)),
  };
}
