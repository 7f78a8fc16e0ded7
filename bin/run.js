#!/usr/bin/env node
// dmctl entry point: runs the compiled oclif command tree from dist/.
// CommonJS on purpose (bin/package.json): an ES module entry starts libuv's thread pool while it is
// being loaded, before UV_THREADPOOL_SIZE below could take effect.
'use strict';
const os = require('node:os');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

// The thread pool does dmctl's hashing, encryption and compression of large blobs besides file I/O.
// One thread per core (at least 2, at most 8): on a 2-core machine libuv's default of 4 only
// contends for the cores, and each thread's malloc arena adds to the peak (a 4 GiB stream peaked up
// to 28% above a 400 MiB one with 4 threads, 8% with 2, and ran faster). An explicit value wins.
process.env.UV_THREADPOOL_SIZE ??= String(Math.min(8, Math.max(2, os.availableParallelism())));

// The build bundles @oclif/core into one file (scripts/bundle-oclif.mjs): the same code, loaded in
// half the time. Its check of Node's version against oclif's own `engines` loads semver for nothing
// (npm checks dmctl's `engines` at install), so it is turned off for the import and only then.
const bundled = path.join(__dirname, '..', 'dist', 'vendor', 'oclif-core.js');
const presetEngineFlag = 'OCLIF_DISABLE_ENGINE_WARNING' in process.env;
if (!presetEngineFlag) process.env.OCLIF_DISABLE_ENGINE_WARNING = '1';
import(require('node:fs').existsSync(bundled) ? pathToFileURL(bundled).href : '@oclif/core')
  .then(({ execute }) => {
    if (!presetEngineFlag) delete process.env.OCLIF_DISABLE_ENGINE_WARNING;
    return execute({ dir: pathToFileURL(path.join(__dirname, '..', 'package.json')).href });
  })
  .catch((err) => {
    process.stderr.write(`dmctl: ${err && err.message ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
