// A backup with a parent snapshot takes what it can from the parent (file content, and for the same
// inode with the same change time, xattrs and link targets) and must still write exactly the trees
// a backup without a parent writes: after xattrs change, a link is replaced, a file is rewritten in
// place, and when nothing changed at all.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as xattr from '@napi-rs/xattr';
import { LocalBackend } from '../../src/storage/local.js';
import { Repository } from '../../src/repository/repository.js';
import { backup } from '../../src/archiver/archiver.js';
import { loadSnapshot } from '../../src/repository/snapshots.js';
import { decodeTree, type Node } from '../../src/repository/tree.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'dmctl-parent-'));
after(() => fsp.rm(work, { recursive: true, force: true }));
const src = path.join(work, 'src');

async function snap(repo: Repository, parent: 'latest' | 'none'): Promise<{ tree: string; nodes: Map<string, Node> }> {
  const s = await backup(repo, { paths: [src], host: 'h', parent: parent === 'none' ? null : undefined });
  const { snapshot } = await loadSnapshot(repo, s.snapshotId);
  // Down to src's own tree: the snapshot's tree holds the path's directories.
  let tree = snapshot.tree;
  for (const part of src.split('/').filter(Boolean)) {
    const n = decodeTree(await repo.loadBlob('tree', tree)).find((x) => x.name.toString() === part)!;
    tree = n.subtree!;
  }
  return { tree: snapshot.tree, nodes: new Map(decodeTree(await repo.loadBlob('tree', tree)).map((n) => [n.name.toString(), n])) };
}

const xattrOf = (n: Node | undefined, name: string) => n?.extendedAttributes?.find((a) => a.name === name)?.value.toString();

test('with a parent, backups write the trees a backup without one writes', async () => {
  await fsp.mkdir(path.join(src, 'd'), { recursive: true });
  await fsp.writeFile(path.join(src, 'f'), 'one');
  await fsp.writeFile(path.join(src, 'g'), 'two');
  await fsp.symlink('target-1', path.join(src, 'l'));
  xattr.setAttributeSync(path.join(src, 'f'), 'user.a', Buffer.from('v1'));
  xattr.setAttributeSync(path.join(src, 'd'), 'user.d', Buffer.from('x'));
  const repo = await Repository.init(new LocalBackend(path.join(work, 'repo')), 'pw');
  const first = await snap(repo, 'latest');
  assert.equal(xattrOf(first.nodes.get('f'), 'user.a'), 'v1');

  // Nothing changed: the same tree, with and without the parent.
  const again = await snap(repo, 'latest');
  assert.equal(again.tree, first.tree);

  // An xattr changed (same inode, new change time), another added to the directory, the link
  // replaced by one to another target, a file rewritten in place with the same size.
  xattr.setAttributeSync(path.join(src, 'f'), 'user.a', Buffer.from('v2'));
  xattr.setAttributeSync(path.join(src, 'd'), 'user.e', Buffer.from('y'));
  await fsp.rm(path.join(src, 'l'));
  await fsp.symlink('target-2', path.join(src, 'l'));
  await fsp.writeFile(path.join(src, 'g'), 'TWO');
  const withParent = await snap(repo, 'latest');
  const without = await snap(repo, 'none');
  assert.equal(xattrOf(withParent.nodes.get('f'), 'user.a'), 'v2');
  assert.equal(xattrOf(withParent.nodes.get('d'), 'user.e'), 'y');
  assert.equal(withParent.nodes.get('l')?.linktarget?.toString(), 'target-2');
  assert.notEqual(withParent.tree, first.tree);
  assert.equal(withParent.tree, without.tree, 'the parent changed what was written');
  await repo.backend.close();
});
