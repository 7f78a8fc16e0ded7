// From resolved settings to an open Backend / Repository: the one place commands get them from.
import { Backend, spoolingOf } from '../storage/backend.js';
import { NoRepositoryError, isNotFound } from '../core/errors.js';
import { RepoCache } from '../repository/cache.js';
import { parseRepositoryUrl, type RepoLocation } from '../storage/url.js';
import { cachedKey, rememberKey } from '../repository/key-cache.js';
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

/** What the cached key file of a location is filed under (no secrets: `display` has none). */
function locationKey(loc: RepoLocation): string {
  return `${loc.scheme}|${loc.display}|${loc.scheme === 'rest' ? (loc.username ?? '') : ''}`;
}

export async function openRepositoryFromSettings(s: RepoSettings): Promise<Repository> {
  const { location, opts } = await repositoryLocation(s);
  const loc = typeof location === 'string' ? parseRepositoryUrl(location) : location;
  // Remote repositories: with a password that needs no prompt, the scrypt of the key file that
  // opened this location last time runs while the storage SDK loads (key-cache.ts).
  const cacheDir = loc.scheme === 'local' ? undefined : s.cacheDir;
  let password = cacheDir && s.passwordSource ? await s.password() : undefined;
  const preferredKey = cacheDir && password ? cachedKey(cacheDir, locationKey(loc), password) : undefined;
  let repo: Repository;
  try {
    const be = await openBackend(loc, opts);
    // Without a password given by flag, file or environment (a prompt, or the "no password"
    // error), first make sure there is a repository to ask it for, as restic does: a mistyped
    // location is reported as such, not as a missing password.
    if (password === undefined && (!s.passwordSource || s.passwordSource === 'prompt')) await requireConfig(be);
    password ??= await s.password();
    let opened: { keyId: string; raw: Buffer } | undefined;
    repo = await Repository.open(be, password, { preferredKey, onKeyFile: (keyId, raw) => (opened = { keyId, raw }) });
    if (cacheDir && opened) await rememberKey(cacheDir, locationKey(loc), opened.keyId, opened.raw);
  } finally {
    await preferredKey; // (it never rejects; the password is zeroed once its scrypt has it)
    password?.fill(0);
  }
  // Remote repositories get a local cache of index files and tree packs; a local one is its own.
  if (s.cacheDir && !spoolingOf(repo.backend)) repo.cache = await RepoCache.open(s.cacheDir, repo.config.id);
  return repo;
}

/** Throws NoRepositoryError when the storage holds no repository config. */
async function requireConfig(be: Backend): Promise<void> {
  try {
    await be.stat('config', 'config');
  } catch (err) {
    if (isNotFound(err)) throw new NoRepositoryError(be.location);
    throw err;
  }
}

export async function initRepositoryFromSettings(s: RepoSettings, opts: InitOptions = {}): Promise<Repository> {
  const { location, opts: beOpts } = await repositoryLocation(s);
  const loc = typeof location === 'string' ? parseRepositoryUrl(location) : location;
  const be = await openBackend(loc, beOpts);
  const password = await s.password({ confirm: true });
  const cacheDir = loc.scheme === 'local' ? undefined : s.cacheDir;
  let written: { keyId: string; raw: Buffer } | undefined;
  try {
    // The bucket / container first: Repository.init looks for an existing config before it creates
    // the layout, and on a missing bucket that look fails with bucket-missing (create is idempotent).
    await be.create();
    const repo = await Repository.init(be, password, { ...opts, onKeyFile: (keyId, raw) => (written = { keyId, raw }) });
    // (the first backup then opens it as the next runs will: see openRepositoryFromSettings)
    if (cacheDir && written) await rememberKey(cacheDir, locationKey(loc), written.keyId, written.raw);
    return repo;
  } finally {
    password.fill(0);
  }
}
