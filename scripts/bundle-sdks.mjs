// Build step after tsc: the storage modules of the cloud SDKs become one file each, their SDK
// bundled in (esbuild, tree-shaken from the SDKs' ES module builds where they have one). Loading an
// SDK the usual way resolves, reads and compiles hundreds of files (and, for S3, every command's
// schema); the bundle holds only what dmctl uses. Every command on a cloud repository pays that
// import before its first request: on the 2-core machine the S3 module's import went from ~140 to
// ~70 ms over Node's start, Azure's and GCS's to about half. dmctl's own modules stay separate
// files (relative imports are left alone), so classes like DmctlError are the same objects inside
// and outside the bundles.
//   node scripts/bundle-sdks.mjs            (run by `npm run build`)
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { statSync } from 'node:fs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// gcs.ts puts its TLS agent into teeny-request's module-level agent pool (see there): that module
// must stay the one in node_modules, shared by the bundle and by gcs.ts's own require().
const modules = [
  { rel: 'dist/src/storage/s3.js', external: [] },
  { rel: 'dist/src/storage/azure.js', external: [] },
  { rel: 'dist/src/storage/gcs.js', external: ['teeny-request'] },
];

for (const { rel, external } of modules) {
  const file = path.join(root, rel);
  const before = statSync(file).size;
  await build({
    entryPoints: [file],
    outfile: file,
    allowOverwrite: true,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    mainFields: ['module', 'main'],
    external,
    legalComments: 'eof',
    sourcemap: true,
    logLevel: 'warning',
    // CommonJS code inside the bundle calls require() for Node's built-ins.
    banner: { js: "import { createRequire as __dmctlCreateRequire } from 'node:module'; const require = __dmctlCreateRequire(import.meta.url);" },
    plugins: [
      {
        name: 'keep-dmctl-modules',
        setup(b) {
          b.onResolve({ filter: /^\.\.?\// }, (args) => (args.importer === file ? { path: args.path, external: true } : undefined));
        },
      },
    ],
  });
  console.log(`bundled ${rel}: ${before} -> ${statSync(file).size} bytes`);
}
