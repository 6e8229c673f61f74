// Builds the embed loader into api/static/dist/:
//   embed.js       the loader (IIFE, minified), served at GET /embed.js
//   lk-<hash>.js   livekit-client and our room code (ESM), imported by the loader when a conversation starts
//   manifest.json  the files, their hashes and sizes; api/embed_routes.py serves only what it names
// Usage: npm --prefix api/embed ci && npm --prefix api/embed run build
import { createHash } from 'node:crypto';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'static', 'dist');
const BUDGET_GZIP = 20 * 1024;

const common = {
  bundle: true,
  minify: true,
  write: false,
  platform: 'browser',
  target: 'es2020',
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
};

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const describe = (file, bytes) => ({ file, sha256: sha256(bytes), bytes: bytes.length, gzip_bytes: gzipSync(bytes, { level: 9 }).length });

const lk = (await build({ ...common, entryPoints: [join(here, 'src', 'lk.ts')], format: 'esm' })).outputFiles[0].contents;
const lkFile = `lk-${sha256(lk).slice(0, 16)}.js`;

const loader = (
  await build({
    ...common,
    entryPoints: [join(here, 'src', 'main.ts')],
    format: 'iife',
    define: { ...common.define, __LK_CHUNK__: JSON.stringify(lkFile) },
  })
).outputFiles[0].contents;

const manifest = {
  loader: describe('embed.js', loader),
  chunks: { livekit: describe(lkFile, lk) },
};

await mkdir(out, { recursive: true });
for (const name of await readdir(out)) {
  if (/^lk-[0-9a-f]+\.js$/.test(name) && name !== lkFile) await rm(join(out, name));
}
await writeFile(join(out, lkFile), lk);
await writeFile(join(out, 'embed.js'), loader);
await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
for (const { file, bytes, gzip_bytes } of [manifest.loader, manifest.chunks.livekit]) {
  console.log(`${file.padEnd(24)} ${kb(bytes).padStart(9)}  gzip ${kb(gzip_bytes).padStart(9)}`);
}
if (manifest.loader.gzip_bytes > BUDGET_GZIP) {
  console.error(`embed.js is ${kb(manifest.loader.gzip_bytes)} gzipped, over the ${kb(BUDGET_GZIP)} budget`);
  process.exit(1);
}
