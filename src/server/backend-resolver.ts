// Opens the Backend a server serves: any repository location dmctl can open (local path, s3:, azure:,
// gs:, rest:), wrapped with retries like every backend. Sub-repositories (`/a/`, `/a/b/`) are the same
// kind of location with the segments appended to its path or prefix.
import path from 'node:path';
import type { Backend } from '../storage/backend.js';
import { openBackend, BackendOptions } from '../storage/open.js';
import { RepoLocation, parseRepositoryUrl } from '../storage/url.js';

export interface ServedBackend {
  backend: Backend;
  /** Opens a sub-repository (`/a/`, `/a/b/`) below the root. */
  sub?: (segments: string[]) => Promise<Backend>;
}

function subLocation(loc: RepoLocation, segments: string[]): RepoLocation {
  const rel = segments.join('/');
  const join = (prefix: string) => (prefix ? `${prefix}/${rel}` : rel);
  switch (loc.scheme) {
    case 'local':
      return { ...loc, path: path.join(loc.path, ...segments), display: `${loc.display}/${rel}` };
    case 's3':
    case 'gs':
    case 'azure':
      return { ...loc, prefix: join(loc.prefix), display: `${loc.display}/${rel}` };
    case 'rest':
      return { ...loc, url: `${loc.url}${rel}/`, display: `${loc.display}${rel}/` };
  }
}

export async function openBackendForServer(url: string, opts: BackendOptions = {}): Promise<ServedBackend> {
  const loc = parseRepositoryUrl(url);
  const backend = await openBackend(loc, opts);
  return { backend, sub: (segments) => openBackend(subLocation(loc, segments), opts) };
}
