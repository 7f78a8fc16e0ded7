// From resolved settings to an open Backend / Repository: the one place commands get them from.
import { Backend, spoolingOf } from '../storage/backend.js';
import { RepoCache } from '../repository/cache.js';
import type { RepoLocation } from '../storage/url.js';
import { parseProfile, profileLocation, profileOptions } from '../kanister/profile.js';
import { openBackend, BackendOptions } from '../storage/open.js';
import { Repository, InitOptions } from '../repository/repository.js';
import { RepoSettings, requireRepository } from './settings.js';

export async function backendOptions(s: RepoSettings): Promise<BackendOptions> {
  const opts: BackendOptions = {
    cacert: s.cacert,
    insecureTls: s.insecureTls,
    connections: s.connections,
    serverCertFingerprint: s.serverCertFingerprint,
  };
  return opts;
}

/**
 * Where the repository is. With a Kanister Profile (--profile/--profile-file), the profile gives the
 * bucket, prefix and credentials: no --repo means the repository sits at the profile's prefix, a
 * --repo PATH is a sub-path below it, and a --repo URL takes only the credentials and TLS settings.
 */
export async function repositoryLocation(s: RepoSettings): Promise<{ location: string | RepoLocation; opts: BackendOptions }> {
  const opts = await backendOptions(s);
  if (s.profile) {
    const p = parseProfile(s.profile);
    const withProfile = profileOptions(p, opts);
    if (!s.repository) return { location: profileLocation(p), opts: withProfile };
    if (/^(s3|azure|gs|rest|local):/.test(s.repository)) return { location: s.repository, opts: withProfile };
    return { location: profileLocation(p, s.repository), opts: withProfile };
  }
  return { location: requireRepository(s), opts };
}

export async function openBackendFromSettings(s: RepoSettings): Promise<Backend> {
  const { location, opts } = await repositoryLocation(s);
  return openBackend(location, opts);
}

export async function openRepositoryFromSettings(s: RepoSettings): Promise<Repository> {
  const be = await openBackendFromSettings(s);
  const password = await s.password();
  let repo: Repository;
  try {
    repo = await Repository.open(be, password);
  } finally {
    password.fill(0);
  }
  // Remote repositories get a local cache of index files and tree packs; a local one is its own.
  if (s.cacheDir && !spoolingOf(be)) repo.cache = await RepoCache.open(s.cacheDir, repo.config.id);
  return repo;
}

export async function initRepositoryFromSettings(s: RepoSettings, opts: InitOptions = {}): Promise<Repository> {
  const be = await openBackendFromSettings(s);
  const password = await s.password({ confirm: true });
  try {
    // The bucket / container first: Repository.init looks for an existing config before it creates
    // the layout, and on a missing bucket that look fails with bucket-missing (create is idempotent).
    await be.create();
    return await Repository.init(be, password, opts);
  } finally {
    password.fill(0);
  }
}
