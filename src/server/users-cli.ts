// The operation behind `dmctl server users add|set|remove|list`: either through a running server's admin API
// (--server) or directly on the users file (with --repo and --repo-password-file also on the key files).
import { UsageError } from '../core/errors.js';
import { openBackendForServer } from './backend-resolver.js';
import { clientOptions, readSecretFile } from './cli-support.js';
import { adminCall } from './client.js';
import { RepoKeyManager } from './repo-keys.js';
import { addUser, listUsers, removeUser, setUser } from './user-admin.js';
import type { Role, UserInfo } from './users.js';

export interface UsersCommandInput {
  action: 'add' | 'set' | 'remove' | 'list';
  name?: string;
  role?: string;
  passwordFile?: string;
  usersFile?: string;
  server?: string;
  fingerprint?: string;
  cacert?: string;
  adminUser?: string;
  adminPasswordFile?: string;
  repo?: string;
  repoPasswordFile?: string;
}

export async function runUsersCommand(i: UsersCommandInput, env: NodeJS.ProcessEnv = process.env): Promise<UserInfo | UserInfo[]> {
  const password = i.passwordFile ? await readSecretFile(i.passwordFile, 'password') : undefined;
  if (i.action === 'add' && !password) throw new UsageError('a password is needed to add a user', 'pass --password-file FILE');
  if (i.action !== 'list' && !i.name) throw new UsageError('a user name is needed');
  const server = i.server ?? (i.usersFile ? undefined : env.DM_SERVER_URL);
  if (server) {
    const o = await clientOptions({ server, fingerprint: i.fingerprint, cacert: i.cacert, user: i.adminUser, passwordFile: i.adminPasswordFile }, env);
    const path = `/_admin/users${i.name ? `/${encodeURIComponent(i.name)}` : ''}`;
    switch (i.action) {
      case 'list': return adminCall<UserInfo[]>(o, 'GET', path);
      case 'add': return adminCall<UserInfo>(o, 'POST', path, { role: i.role, password });
      case 'set': return adminCall<UserInfo>(o, 'PUT', path, { ...(i.role ? { role: i.role } : {}), ...(password ? { password } : {}) });
      case 'remove': return adminCall<UserInfo>(o, 'DELETE', path);
    }
  }
  const usersFile = i.usersFile ?? env.DM_SERVER_USERS_FILE;
  if (!usersFile) throw new UsageError('no users file and no server given', 'pass --users-file FILE (or DM_SERVER_USERS_FILE), or --server URL');
  if (i.action === 'list') return listUsers(usersFile);
  let keys: RepoKeyManager | undefined;
  let close = async () => {};
  if (i.repo) {
    if (!i.repoPasswordFile) throw new UsageError('--repo needs --repo-password-file to manage key files');
    const served = await openBackendForServer(i.repo);
    keys = new RepoKeyManager(served.backend, await readSecretFile(i.repoPasswordFile, 'repository password'));
    close = () => served.backend.close();
  }
  try {
    const e = { usersFile, name: i.name!, role: i.role as Role | undefined, password, keys };
    switch (i.action) {
      case 'add': return await addUser(e);
      case 'set': return await setUser(e);
      case 'remove': return await removeUser(e);
    }
  } finally {
    await close();
  }
}
