// Build step after tsc: @oclif/core becomes one file, dist/vendor/oclif-core.js, and dist's
// modules import it instead of the package. Every dmctl command loads @oclif/core before anything
// else; loaded the usual way that resolves, reads and compiles about 150 files (and semver, for a
// Node version check npm's `engines` already makes) - ~50 ms of the main thread on the 2-core
// machine, a fifth of a short command's run. The bundle loads in about half that.
// Only @oclif/core is bundled: the autocomplete plugin keeps the package (its commands load it
// when they run), and TypeScript support, which oclif loads only for a development checkout, stays
// external.
//   node scripts/bundle-oclif.mjs            (run by `npm run build`)
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { promises as fsp, statSync } from 'node:fs';
import { createRequire } from 'node:module';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist', 'vendor', 'oclif-core.js');
const entry = createRequire(path.join(root, 'package.json')).resolve('@oclif/core');

// An ES module re-exporting the package's names: esbuild then writes real ES exports (a CommonJS
// bundle's exports would be hidden from Node's named-import detection behind one require()).
const names = Object.keys(createRequire(entry)(entry)).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n));
await build({
  stdin: { contents: `export { ${names.join(', ')} } from ${JSON.stringify(entry)};`, resolveDir: root, loader: 'js' },
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // The CommonJS code inside calls require() for Node's built-ins and reads __dirname (for files
  // next to the package, which it does without when they are missing).
  banner: {
    js: [
      "import { createRequire as __dmctlCreateRequire } from 'node:module';",
      "import { fileURLToPath as __dmctlFileURLToPath } from 'node:url';",
      "import { dirname as __dmctlDirname } from 'node:path';",
      'const require = __dmctlCreateRequire(import.meta.url);',
      'const __filename = __dmctlFileURLToPath(import.meta.url);',
      'const __dirname = __dmctlDirname(__filename);',
    ].join(' '),
  },
  external: ['typescript', 'ts-node', 'tsx', 'tsx/*', 'wsl-utils'],
  legalComments: 'eof',
  logLevel: 'warning',
});

// Point dist's imports at the bundle (tsc leaves `from '@oclif/core'` as written): the import
// statements only, which tsc writes at the start of a line (not, say, a test's text of a module).
const SPEC = /^(import\s[^;\n]*?\bfrom\s*)(['"])@oclif\/core\2/gm;
let files = 0;
async function rewrite(dir) {
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (p !== path.dirname(out)) await rewrite(p);
    } else if (e.name.endsWith('.js')) {
      const text = await fsp.readFile(p, 'utf8');
      if (!text.includes('@oclif/core')) continue;
      let rel = path.relative(path.dirname(p), out).split(path.sep).join('/');
      if (!rel.startsWith('.')) rel = './' + rel;
      const next = text.replace(SPEC, (_m, pre, q) => `${pre}${q}${rel}${q}`);
      if (next !== text) {
        await fsp.writeFile(p, next);
        files++;
      }
    }
  }
}
await rewrite(path.join(root, 'dist'));
console.log(`bundled @oclif/core: ${statSync(out).size} bytes, imported by ${files} modules`);
