// restore --include / --exclude / SNAPSHOT:SUBPATH, and ls, on a small tree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, symlinkSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { dmctl, ok, toolEnv, json } from '../support/run.js';

async function files(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(path.relative(root, p) + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(root);
  return out.sort();
}

test('restore filters and sub-paths select exactly what they name', async () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'dm-filters-'));
  const src = path.join(base, 'src');
  mkdirSync(path.join(src, 'etc', 'conf.d'), { recursive: true });
  mkdirSync(path.join(src, 'var', 'cache'), { recursive: true });
  writeFileSync(path.join(src, 'etc', 'a.conf'), 'a\n');
  writeFileSync(path.join(src, 'etc', 'conf.d', 'b.conf'), 'b\n');
  writeFileSync(path.join(src, 'etc', 'notes.txt'), 'n\n');
  writeFileSync(path.join(src, 'var', 'cache', 'big.bin'), Buffer.alloc(100_000, 7));
  writeFileSync(path.join(src, 'var', 'data.db'), 'db\n');
  symlinkSync('etc/a.conf', path.join(src, 'link'));
  const t = toolEnv(path.join(base, 'repo'));
  ok(await dmctl(t, ['repo', 'init']));
  ok(await dmctl(t, ['backup', src]));
  const prefix = src.slice(1); // the snapshot mirrors the absolute path

  // --include: only matching files, with the directories leading to them
  const inc = path.join(base, 'inc');
  ok(await dmctl(t, ['restore', 'latest', '--target', inc, '--include', '*.conf']));
  const incFiles = (await files(path.join(inc, prefix))).filter((f) => !f.endsWith('/'));
  assert.deepEqual(incFiles, ['etc/a.conf', 'etc/conf.d/b.conf']);

  // --exclude applies at every depth, also below an included directory
  const exc = path.join(base, 'exc');
  ok(await dmctl(t, ['restore', 'latest', '--target', exc, '--exclude', 'cache', '--exclude', '*.txt']));
  const excFiles = await files(path.join(exc, prefix));
  assert.ok(!excFiles.some((f) => f.includes('cache')), `cache restored: ${excFiles.join(', ')}`);
  assert.ok(!excFiles.some((f) => f.endsWith('.txt')), `txt restored: ${excFiles.join(', ')}`);
  assert.ok(excFiles.includes('var/data.db') && excFiles.includes('etc/conf.d/b.conf') && excFiles.includes('link'));

  // SNAPSHOT:SUBPATH restores that directory's content into the target
  const sub = path.join(base, 'sub');
  ok(await dmctl(t, ['restore', `latest:${src}/var`, '--target', sub]));
  assert.deepEqual(await files(sub), ['cache/', 'cache/big.bin', 'data.db']);
  assert.equal(readFileSync(path.join(sub, 'data.db'), 'utf8'), 'db\n');

  // ls lists the same entries as the source, --json with paths inside the snapshot
  const ls = json<{ nodes: { path: string; type: string }[] }>(ok(await dmctl(t, ['ls', 'latest', `${src}/etc`, '--json'])));
  assert.deepEqual(
    ls.nodes.map((n) => n.path).sort(),
    [`${src}/etc/a.conf`, `${src}/etc/conf.d`, `${src}/etc/conf.d/b.conf`, `${src}/etc/notes.txt`].sort(),
  );
});
