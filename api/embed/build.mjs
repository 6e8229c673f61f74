// Builds the embed loader into api/static/dist/:
//   embed.js        the loader (IIFE, minified), served at GET /embed.js: the launcher and the page API
//   chat-<hash>.js  the panel, forms and conversation (ESM), imported when the visitor reaches for the launcher
//   lk-<hash>.js    livekit-client and our room code (ESM), imported by the panel when a conversation starts
//   <file>.br, <file>.gz  each of them precompressed (brotli at its best, gzip level 9); the server picks one
//   manifest.json   the files, their hashes and sizes; api/embed_routes.py serves only what it names
// Usage: npm --prefix api/embed ci && npm --prefix api/embed run build
// The build fails when embed.js, compressed, is over its budget: it is what every page view pays for.
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'static', 'dist');
// Before any interaction a page loads embed.js and the public config, at most 16,000 bytes together
// with their headers (tests/browser/test_embed_cost.py); these budgets leave the config about 9 KB.
const BUDGET = { br: 5500, gzip: 6200 };

const common = {
  bundle: true,
  minify: true,
  write: false,
  charset: 'utf8',
  platform: 'browser',
  target: 'es2020',
  // A UMD dependency must never see the host page's RequireJS (window.define): it would register
  // itself there instead of with us, and leave the page's module registry changed.
  define: { 'process.env.NODE_ENV': '"production"', define: 'undefined' },
  logLevel: 'warning',
};

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const br = (bytes) =>
  brotliCompressSync(bytes, {
    params: {
      // The best quality costs seconds a megabyte: kept for what the widget's visitors download.
      [constants.BROTLI_PARAM_QUALITY]: bytes.length > 1_000_000 ? 9 : constants.BROTLI_MAX_QUALITY,
      [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
      [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  });
const gz = (bytes) => gzipSync(bytes, { level: 9 });

async function bundle(entry, format, define = {}) {
  const result = await build({ ...common, entryPoints: [join(here, 'src', entry)], format, define: { ...common.define, ...define } });
  return Buffer.from(result.outputFiles[0].contents);
}

const hashed = (prefix, bytes) => `${prefix}-${sha256(bytes).slice(0, 16)}.js`;

const lk = await bundle('lk.ts', 'esm');
const lkFile = hashed('lk', lk);
const chat = await bundle('chat.ts', 'esm', { __LK_CHUNK__: JSON.stringify(lkFile) });
const chatFile = hashed('chat', chat);
const loader = await bundle('main.ts', 'iife', { __PANEL_CHUNK__: JSON.stringify(chatFile) });

const files = [];
function describe(file, bytes) {
  const encoded = { br: br(bytes), gzip: gz(bytes) };
  files.push([file, bytes], [`${file}.br`, encoded.br], [`${file}.gz`, encoded.gzip]);
  return {
    file,
    sha256: sha256(bytes),
    bytes: bytes.length,
    gzip_bytes: encoded.gzip.length,
    br_bytes: encoded.br.length,
    encodings: { br: `${file}.br`, gzip: `${file}.gz` },
  };
}

// The OpenAPI page's UI (Scalar's standalone bundle, pinned in package-lock.json), served by us so that
// /schema works offline and loads nothing from a CDN.
const scalar = await readFile(join(here, 'node_modules', '@scalar', 'api-reference', 'dist', 'browser', 'standalone.js'));
const scalarFile = hashed('scalar', scalar);

const manifest = {
  loader: describe('embed.js', loader),
  chunks: { panel: describe(chatFile, chat), livekit: describe(lkFile, lk), openapi_ui: describe(scalarFile, scalar) },
  budget: BUDGET,
};

await mkdir(out, { recursive: true });
const keep = new Set(files.map(([name]) => name));
for (const name of await readdir(out)) {
  if (/^(lk|chat|scalar)-[0-9a-f]+\.js(\.br|\.gz)?$/.test(name) && !keep.has(name)) await rm(join(out, name));
}
for (const [name, bytes] of files) await writeFile(join(out, name), bytes);
await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
for (const { file, bytes, gzip_bytes, br_bytes } of [manifest.loader, ...Object.values(manifest.chunks)]) {
  console.log(`${file.padEnd(24)} ${kb(bytes).padStart(9)}  gzip ${kb(gzip_bytes).padStart(9)}  br ${kb(br_bytes).padStart(9)}`);
}
const over = Object.entries(BUDGET).filter(([enc, limit]) => manifest.loader[`${enc}_bytes`] > limit);
for (const [enc, limit] of over) console.error(`embed.js is ${manifest.loader[`${enc}_bytes`]} bytes as ${enc}, over its budget of ${limit}`);
if (over.length) process.exit(1);
