// From resolved settings to an open Backend / Repository: the one place commands get them from.
import { Backend } from '../storage/backend.js';
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

/** Location string for the repository: --repo etc., or one derived from a Kanister Profile. */
export async function repositoryLocation(s: RepoSettings): Promise<{ location: string; opts: BackendOptions }> {
  const opts = await backendOptions(s);
  if (!s.repository && s.profile) {
    const mod = (await import('../kanister/profile.js')) as unknown as {
      profileToRepository(json: string): { location: string; options: Partial<BackendOptions> };
    };
    const p = mod.profileToRepository(s.profile);
    return { location: p.location, opts: { ...opts, ...p.options } };
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
  try {
    return await Repository.open(be, password);
  } finally {
    password.fill(0);
  }
}

export async function initRepositoryFromSettings(s: RepoSettings, opts: InitOptions = {}): Promise<Repository> {
  const be = await openBackendFromSettings(s);
  const password = await s.password({ confirm: true });
  try {
    return await Repository.init(be, password, opts);
  } finally {
    password.fill(0);
  }
}
