// prune's tree scan (scanTreeRefs): the data blobs and subtrees it finds in a tree's JSON are exactly
// what a full JSON parse finds, for trees written by our encoder with awkward names, link targets
// and attributes, and for hand-written JSON in other spellings; anything it cannot be sure of
// (escapes, an unexpected value) is left to the full parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { scanTreeRefs } from '../../src/maintenance/prune.js';
import { encodeTree, type Node } from '../../src/repository/tree.js';
import { parseGoTime } from '../../src/repository/gotime.js';

const t = parseGoTime('2026-11-21T13:31:22.48384016Z');
const id = () => crypto.randomBytes(32).toString('hex');

/** What a full parse says the tree references. */
function parsed(buf: Buffer): { content: string[]; subtrees: string[] } {
  const j = JSON.parse(buf.toString('utf8')) as { nodes: { content?: string[] | null; subtree?: string | null }[] };
  const content: string[] = [];
  const subtrees: string[] = [];
  for (const n of j.nodes) {
    if (n.content) content.push(...n.content);
    if (n.subtree) subtrees.push(n.subtree);
  }
  return { content, subtrees };
}

// Names chosen to look like the keys the scan looks for, with and without characters that need escapes.
const NAMES = ['content', 'subtree', '"content":[', 'a"subtree":"x', 'nodes', 'x:y', '[', ']', ',', 'null', 'c\\d', 'tab\there', 'é', '\u0001', 'plain'];

function randomTree(rng: () => number, allowEscapes: boolean): Node[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
  const names = allowEscapes ? NAMES : NAMES.filter((n) => JSON.stringify(n).indexOf('\\') < 0);
  const nodes: Node[] = [];
  const count = 1 + Math.floor(rng() * 12);
  for (let i = 0; i < count; i++) {
    const name = Buffer.from(`${pick(names)}-${i}-${pick(names)}`);
    const kind = rng();
    const base = { name, mode: 420, mtime: t, atime: t, ctime: t, uid: 0, gid: 0, user: pick(names), group: 'content' };
    if (kind < 0.5) {
      const n = Math.floor(rng() * 5);
      nodes.push({ ...base, type: 'file', size: 10n, content: Array.from({ length: n }, id), extendedAttributes: rng() < 0.3 ? [{ name: 'user.content', value: Buffer.from(pick(names)) }] : undefined });
    } else if (kind < 0.8) {
      nodes.push({ ...base, type: 'dir', mode: 2147484141, content: null, subtree: id() });
    } else {
      nodes.push({ ...base, type: 'symlink', mode: 134218239, content: null, linktarget: Buffer.from(allowEscapes ? `"subtree":"${id()}"` : `subtree:${id()}`) });
    }
  }
  nodes.sort((a, b) => Buffer.compare(a.name, b.name));
  return nodes;
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('encoded trees without escapes: the scan finds exactly what a full parse finds', () => {
  const rng = seeded(7);
  let refs = 0;
  for (let i = 0; i < 500; i++) {
    const buf = encodeTree(randomTree(rng, false));
    const got = scanTreeRefs(buf);
    assert.ok(got, `tree ${i} was not scanned: ${buf.toString()}`);
    assert.deepEqual(got, parsed(buf), buf.toString());
    refs += got.content.length + got.subtrees.length;
  }
  assert.ok(refs > 1000);
});

test('trees with escapes are left to the full parse', () => {
  const rng = seeded(11);
  let escaped = 0;
  for (let i = 0; i < 300; i++) {
    const buf = encodeTree(randomTree(rng, true));
    const got = scanTreeRefs(buf);
    if (buf.includes(0x5c)) {
      escaped++;
      assert.equal(got, undefined, buf.toString());
    } else assert.deepEqual(got, parsed(buf));
  }
  assert.ok(escaped > 50);
  // A key spelled with an escape is the same key to a JSON parser: never scanned.
  const a = id();
  const sneaky = Buffer.from(`{"nodes":[{"name":"f","type":"file","cont\\u0065nt":["${a}"]}]}`);
  assert.deepEqual(parsed(sneaky).content, [a]);
  assert.equal(scanTreeRefs(sneaky), undefined);
});

test('other spellings: whitespace, null, empty lists; unexpected values are left to the full parse', () => {
  const [a, b, c] = [id(), id(), id()];
  const spaced = Buffer.from(`{ "nodes" : [\n {"name" : "content", "type":"file", "content" : [ "${a}" ,\n "${b}" ] },\n {"name":"d","type":"dir","content" : null,"subtree" :\t"${c}"},\n {"name":"e","type":"file","content":[]},\n {"name":"subtree","type":"dir","subtree":null} ] }\n`);
  assert.deepEqual(scanTreeRefs(spaced), { content: [a, b], subtrees: [c] });
  assert.deepEqual(scanTreeRefs(spaced), parsed(spaced));
  for (const odd of [
    `{"nodes":[{"name":"f","type":"file","content":"${a}"}]}`, // not a list
    `{"nodes":[{"name":"f","type":"file","content":["${a.toUpperCase()}"]}]}`, // not lower-case hex
    `{"nodes":[{"name":"f","type":"file","content":["${a.slice(1)}"]}]}`, // short
    `{"nodes":[{"name":"f","type":"file","content":["${a}" "${b}"]}]}`, // no comma
    `{"nodes":[{"name":"d","type":"dir","subtree":42}]}`,
    `{"nodes":[{"name":"f","type":"file","generic_attributes":{"content":"x"}}]}`,
  ]) {
    assert.equal(scanTreeRefs(Buffer.from(odd)), undefined, odd);
  }
});
