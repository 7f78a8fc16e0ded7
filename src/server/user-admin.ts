// Editing users: the operations behind `dmctl server users add|set|remove|list`, used offline on the users file
// and by a running server's admin API. Each change of a user's password also changes its repository key file.
import { DmctlError, UsageError } from '../core/errors.js';
import type { RepoKeyManager } from './repo-keys.js';
import { checkRole, checkUsername, hashPassword, readUsersFile, writeUsersFile, type Role, type UserInfo, type UserRecord } from './users.js';

export interface UserEdit {
  usersFile: string;
  name: string;
  role?: Role;
  password?: string;
  /** When given, key files are created/replaced/removed along with the login. */
  keys?: RepoKeyManager;
}

function info(u: UserRecord): UserInfo {
  return { name: u.name, role: u.role, ...(u.keyId ? { keyId: u.keyId } : {}), source: 'file' };
}

export async function listUsers(usersFile: string): Promise<UserInfo[]> {
  return (await readUsersFile(usersFile)).map(info);
}

export async function addUser(e: UserEdit): Promise<UserInfo> {
  checkUsername(e.name);
  const role = checkRole(e.role ?? 'append');
  if (!e.password) throw new UsageError('a password is needed to add a user', 'pass --password-file FILE');
  const users = await readUsersFile(e.usersFile);
  if (users.some((u) => u.name === e.name)) {
    throw new UsageError(`user ${e.name} already exists`, 'use `dmctl server users set` to change it');
  }
  const rec: UserRecord = { name: e.name, role, hash: await hashPassword(e.password), source: 'file' };
  if (e.keys) rec.keyId = await e.keys.addKey(e.name, e.password);
  users.push(rec);
  await writeUsersFile(e.usersFile, users);
  return info(rec);
}

export async function setUser(e: UserEdit): Promise<UserInfo> {
  checkUsername(e.name);
  const users = await readUsersFile(e.usersFile);
  const rec = users.find((u) => u.name === e.name);
  if (!rec) throw new DmctlError('no-such-user', `no user ${e.name}`, { hint: 'list users with `dmctl server users list`' });
  if (e.role) rec.role = checkRole(e.role);
  if (e.password) {
    rec.hash = await hashPassword(e.password);
    if (e.keys) {
      const oldKey = rec.keyId;
      rec.keyId = await e.keys.addKey(e.name, e.password);
      if (oldKey && oldKey !== rec.keyId) await e.keys.removeKey(oldKey);
    }
  }
  await writeUsersFile(e.usersFile, users);
  return info(rec);
}

export async function removeUser(e: UserEdit): Promise<UserInfo> {
  checkUsername(e.name);
  const users = await readUsersFile(e.usersFile);
  const i = users.findIndex((u) => u.name === e.name);
  if (i < 0) throw new DmctlError('no-such-user', `no user ${e.name}`, { hint: 'list users with `dmctl server users list`' });
  const [rec] = users.splice(i, 1);
  // Revoke the login first, then the key: a half-done removal never leaves a working login.
  await writeUsersFile(e.usersFile, users);
  if (e.keys && rec.keyId) await e.keys.removeKey(rec.keyId);
  return info(rec);
}
