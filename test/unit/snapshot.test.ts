import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeSnapshot, encodeSnapshot, type Snapshot } from '../../src/repository/snapshot.js';
import { parseGoTime } from '../../src/repository/gotime.js';
import { IntegrityError } from '../../src/core/errors.js';

const TREE = 'ed3d6b1c2f4e5a6978897a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8bcd26';
const PARENT = '0a'.repeat(32);
const ORIG = 'fe'.repeat(32);

test('encodes the reference example byte-exactly', () => {
  const s: Snapshot = {
    time: parseGoTime('2026-11-21T12:40:53.058652842Z'),
    tree: TREE,
    paths: ['/srv/data'],
    hostname: 'vm',
    username: 'root',
    uid: 0,
    gid: 0,
  };
  assert.equal(
    encodeSnapshot(s).toString(),
    `{"time":"2026-11-21T12:40:53.058652842Z","tree":"${TREE}","paths":["/srv/data"],"hostname":"vm","username":"root"}`,
  );
});

test('key order and omitempty with every field set', () => {
  const s: Snapshot = {
    time: parseGoTime('2022-05-01T10:00:00.5+02:00'),
    parent: PARENT,
    tree: TREE,
    paths: ['/a', '/b<c>'],
    hostname: 'h',
    username: 'alice',
    uid: 1000,
    gid: 100,
    excludes: ['*.tmp'],
    tags: ['daily', 'x&y'],
    original: ORIG,
  };
  const want = `{"time":"2022-05-01T10:00:00.5+02:00","parent":"${PARENT}","tree":"${TREE}","paths":["/a","/b\\u003cc\\u003e"],"hostname":"h","username":"alice","uid":1000,"gid":100,"excludes":["*.tmp"],"tags":["daily","x\\u0026y"],"original":"${ORIG}"}`;
  assert.equal(encodeSnapshot(s).toString(), want);
  assert.deepEqual(decodeSnapshot(Buffer.from(want)), s);
  // empty lists and strings are omitted, paths never
  assert.equal(
    encodeSnapshot({ time: parseGoTime('2022-05-01T10:00:00Z'), tree: TREE, paths: [], excludes: [], tags: [], hostname: '' }).toString(),
    `{"time":"2022-05-01T10:00:00Z","tree":"${TREE}","paths":[]}`,
  );
});

test('unknown keys of newer restic versions survive a round trip', () => {
  const text = `{"time":"2026-11-21T12:40:53.058652842Z","tree":"${TREE}","paths":["/srv"],"hostname":"vm","username":"root","program_version":"restic 0.17.0","summary":{"backup_start":"2026-11-21T12:40:53Z","files_new":3,"total_bytes_processed":18446744073709551615}}`;
  const s = decodeSnapshot(Buffer.from(text));
  assert.deepEqual(Object.keys(s.extra ?? {}), ['program_version', 'summary']);
  assert.equal(encodeSnapshot(s).toString(), text);
});

test('decodes indented JSON (restic cat snapshot) to the same fields', () => {
  const text = `{\n  "time": "2026-11-21T13:31:24.875223437Z",\n  "tree": "${TREE}",\n  "paths": [\n    "/tmp/xt/src"\n  ],\n  "hostname": "vm",\n  "username": "root"\n}`;
  const s = decodeSnapshot(text);
  assert.equal(s.time.nsec, 875_223_437);
  assert.deepEqual(s.paths, ['/tmp/xt/src']);
  assert.equal(encodeSnapshot(s).toString(), `{"time":"2026-11-21T13:31:24.875223437Z","tree":"${TREE}","paths":["/tmp/xt/src"],"hostname":"vm","username":"root"}`);
});

test('bad snapshots are IntegrityErrors', () => {
  for (const bad of [
    '', '[]', '{"time":"2022-05-01T10:00:00Z","paths":[]}', `{"time":"x","tree":"${TREE}"}`,
    `{"time":"2022-05-01T10:00:00Z","tree":"${TREE}","uid":-1}`, `{"time":"2022-05-01T10:00:00Z","tree":"${TREE}","paths":"/"}`,
    `{"time":"2022-05-01T10:00:00Z","tree":"abc"}`, `{"time":"2022-05-01T10:00:00Z","tree":"${TREE}","tags":[1]}`,
  ]) {
    assert.throws(() => decodeSnapshot(Buffer.from(bad)), IntegrityError, bad);
  }
});
