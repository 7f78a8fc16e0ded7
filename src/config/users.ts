// uid/gid ↔ name lookup for tree nodes (restic stores `user`/`group` names next to uid/gid) and for
// restoring ownership by name. Reads /etc/passwd and /etc/group once per process and caches them.
// restic itself asks libc (NSS), so accounts that exist only in LDAP/SSSD resolve there and not
// here; for local accounts the results are the same. Unknown ids give "" like restic.

import { readFile } from 'node:fs/promises';

export interface AccountDb {
  userById: Map<number, string>;
  groupById: Map<number, string>;
  uidByName: Map<string, number>;
  gidByName: Map<string, number>;
}

/**
 * Parses passwd- or group-format text (`name:x:id:…`), first entry per id/name wins like
 * getpwuid/getgrgid on files. Comment lines and NIS `+`/`-` entries are skipped.
 */
export function parseIdFile(text: string): { byId: Map<number, string>; byName: Map<string, number> } {
  const byId = new Map<number, string>();
  const byName = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    const f = line.split(':');
    if (f.length < 3) continue;
    const name = f[0]!;
    const idText = f[2]!;
    if (name === '' || !/^\d+$/.test(idText)) continue;
    const id = Number(idText);
    if (id > 0xffffffff) continue;
    if (!byId.has(id)) byId.set(id, name);
    if (!byName.has(name)) byName.set(name, id);
  }
  return { byId, byName };
}

async function readOrEmpty(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return '';
  }
}

let cached: Promise<AccountDb> | undefined;
/** The default database once loaded, for lookups without a promise per call (once per backed-up file). */
let loaded: AccountDb | undefined;

/** The account database, loaded once (files are `/etc/passwd` and `/etc/group` unless given). */
export function loadAccountDb(passwdPath = '/etc/passwd', groupPath = '/etc/group'): Promise<AccountDb> {
  if (cached && passwdPath === '/etc/passwd' && groupPath === '/etc/group') return cached;
  const p = (async () => {
    const [pw, gr] = await Promise.all([readOrEmpty(passwdPath), readOrEmpty(groupPath)]);
    const u = parseIdFile(pw);
    const g = parseIdFile(gr);
    return { userById: u.byId, uidByName: u.byName, groupById: g.byId, gidByName: g.byName };
  })();
  if (passwdPath === '/etc/passwd' && groupPath === '/etc/group') {
    cached = p;
    p.then((db) => {
      if (cached === p) loaded = db;
    }, () => {});
  }
  return p;
}

/** Forgets the cached database (tests, long-running servers after account changes). */
export function resetAccountCache(): void {
  cached = undefined;
  loaded = undefined;
}

/** User and group names for a uid and gid ("" when unknown), synchronous once the database is loaded. */
export function lookupNames(uid: number, gid: number): [string, string] | Promise<[string, string]> {
  if (loaded) return [loaded.userById.get(uid) ?? '', loaded.groupById.get(gid) ?? ''];
  return loadAccountDb().then((db) => [db.userById.get(uid) ?? '', db.groupById.get(gid) ?? '']);
}

/** uid for a user name, undefined when unknown. */
export async function lookupUid(name: string): Promise<number | undefined> {
  return (await loadAccountDb()).uidByName.get(name);
}

/** gid for a group name, undefined when unknown. */
export async function lookupGid(name: string): Promise<number | undefined> {
  return (await loadAccountDb()).gidByName.get(name);
}
