// bench/web's browser half: see bench/web. Prints one table row per (backend, search).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const { chromium } = createRequire(path.join(ROOT, 'tests/e2e/package.json'))('playwright-core'); // tests/e2e's npm install
const BUNDLE = path.resolve(process.argv[2]);
const DIST = path.join(ROOT, 'dist');
const BIN = path.join(ROOT, 'target/release/bartleby');
const dialogue = JSON.parse(fs.readFileSync(path.resolve(ROOT, '../shared/data/samsum/validation.jsonl'), 'utf8').split('\n')[0]).dialogue;
const NEW = Number(process.env.NEW_TOKENS || 32); // NEW_TOKENS=8: a shorter run
// SEARCHES=greedy (or beam4) runs one of the two.
const MODES = Object.fromEntries(Object.entries({ greedy: { num_beams: 1 }, beam4: { num_beams: 4 } })
  .filter(([k]) => !process.env.SEARCHES || process.env.SEARCHES.split(',').includes(k)));
for (const m of Object.values(MODES)) Object.assign(m, { min_length: NEW + 1, max_length: NEW + 1, no_repeat_ngram_size: 0 });

const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };
// transformers.js side (bench/tjs): its page, its browser build, ONNX Runtime Web's wasm files and
// the ONNX export of the same checkpoint (TJS_MODEL), all served from here.
const TJS = path.join(ROOT, 'bench/tjs');
const TJS_MODEL = process.argv[3] ? path.resolve(process.argv[3]) : null;
const TJS_DIST = [path.join(TJS, 'node_modules/@huggingface/transformers/dist'), path.join(TJS, 'node_modules/onnxruntime-web/dist')];
function resolve(p) {
  if (p.startsWith('/bundle/')) return path.join(BUNDLE, path.normalize(p.slice('/bundle/'.length)));
  if (p === '/tjs/' || p === '/tjs/index.html') return path.join(TJS, 'index.html');
  if (p.startsWith('/tjs/models/distilbart-6-6/') && TJS_MODEL) return path.join(TJS_MODEL, path.normalize(p.slice('/tjs/models/distilbart-6-6/'.length)));
  if (p.startsWith('/tjs/')) {
    const name = path.basename(p);
    return TJS_DIST.map((d) => path.join(d, name)).find((f) => fs.existsSync(f)) || '';
  }
  return path.join(DIST, path.normalize(p.endsWith('/') ? p + 'index.html' : p));
}
const server = http.createServer((req, res) => {
  const file = resolve(decodeURIComponent(new URL(req.url, 'http://x').pathname));
  if (process.env.DEBUG) console.log(req.url, '->', file);
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { 'Content-Type': MIME[path.extname(file)] || 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const origin = `http://127.0.0.1:${server.address().port}`;

const rows = [];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--enable-unsafe-webgpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // CHROMIUM_ARGS='--enable-dawn-features=disable_robustness': experiments on the browser's side.
    ...(process.env.CHROMIUM_ARGS || '').split(' ').filter(Boolean)] });
const version = browser.version();
// BACKENDS=cpu (or webgpu) limits the run; default both.
for (const backend of (process.env.BACKENDS ?? 'webgpu,cpu').split(',').filter(Boolean)) {
  const page = await browser.newPage();
  const t0 = Date.now();
  await page.goto(`${origin}/?model=/bundle/&backend=${backend}`);
  await page.waitForFunction(() => window.bartleby && (window.bartleby.status.loaded || window.bartleby.status.error), null, { timeout: 1800000 });
  const st = await page.evaluate(() => window.bartleby.status);
  if (!st.loaded) { console.log(`${backend}: ${st.error}`); continue; }
  const loadS = (Date.now() - t0) / 1000;
  console.log(`${st.backend}: page open → model ready ${loadS.toFixed(1)} s, of which verifying + building ${(st.load_ms / 1000).toFixed(1)} s (the rest: page, wasm and bundle download)`);
  for (const [mode, opts] of Object.entries(MODES)) {
    // One warm-up (shader compilation / autotune), then the timed run.
    await page.evaluate(([t, o]) => window.bartleby.summarize(t, { ...o, min_length: 3, max_length: 3 }), [dialogue, opts]);
    const r = await page.evaluate(([t, o]) => window.bartleby.summarize(t, o), [dialogue, opts]);
    rows.push({ backend: st.backend, mode, s: r.ms / 1000, tokens: r.token_ids.length - 1, load_s: loadS, ids: r.token_ids });
    console.log(`${st.backend} ${mode}: ${(r.ms / 1000).toFixed(2)} s for ${r.token_ids.length - 1} tokens (${(r.token_ids.length - 1) / (r.ms / 1000)} tok/s)`);
  }
  await page.close();
}
// transformers.js on the same dialogue, same settings (max/min new tokens = NEW), q8 ONNX files.
// Its default on this 2-core machine is one wasm thread (numThreads = ceil(cores / 2)), like ours.
const TJS_DEVICES = TJS_MODEL ? (process.env.TJS_DEVICES ?? 'wasm,webgpu').split(',').filter(Boolean) : [];
for (const device of TJS_DEVICES) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`transformers.js ${device}: page error ${e.message}`));
  if (process.env.DEBUG) page.on('console', (m) => console.log('console:', m.text()));
  await page.goto(`${origin}/tjs/`);
  await page.waitForFunction(() => window.tjsReady, null, { timeout: 60000 });
  const t0 = Date.now();
  const loaded = await page.evaluate((d) => window.tjs.load(d).then(() => null, (e) => String(e) + (e.stack || '')), device);
  if (loaded) { console.log(`transformers.js ${device}: ${loaded}`); await page.close(); continue; }
  const loadS = (Date.now() - t0) / 1000;
  for (const [mode, o] of Object.entries(MODES)) {
    const opts = { num_beams: o.num_beams, max_new_tokens: NEW, min_new_tokens: NEW, no_repeat_ngram_size: 0 };
    const r = await page.evaluate(([t, o]) => window.tjs.run(t, { ...o, max_new_tokens: 2, min_new_tokens: 2 })
      .then(() => window.tjs.run(t, o)).catch((e) => ({ error: String(e) })), [dialogue, opts]);
    if (r.error) { console.log(`transformers.js ${device} ${mode}: ${r.error}`); continue; }
    const tokens = r.ids.length - 1;
    rows.push({ backend: `transformers.js ${device}`, mode, s: r.ms / 1000, tokens, load_s: loadS, ids: r.ids });
    console.log(`transformers.js ${device} ${mode}: ${(r.ms / 1000).toFixed(2)} s for ${tokens} tokens`);
  }
  await page.close();
}
await browser.close();
server.close();

// Native, same bundle and settings (whole process incl. loading; generation time from the log).
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-web-'));
fs.writeFileSync(path.join(tmp, 'in.jsonl'), JSON.stringify({ dialogue }) + '\n');
for (const [mode, o] of Object.entries(MODES)) {
  const t0 = Date.now();
  const log = execFileSync(BIN, ['summarize', '--model', BUNDLE, '--input', path.join(tmp, 'in.jsonl'), '--output', path.join(tmp, 'out.jsonl'),
    '--num-beams', String(o.num_beams), '--min-length', String(o.min_length), '--max-length', String(o.max_length), '--no-repeat-ngram-size', '0'],
    { env: { ...process.env, BARTLEBY_LOG: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const wall = (Date.now() - t0) / 1000;
  rows.push({ backend: 'native cpu (2 threads)', mode, s: wall, tokens: NEW, load_s: NaN });
}
console.log(`\nChromium ${version}, ${os.cpus()[0].model} × ${os.cpus().length}, ${new Date().toISOString().slice(0, 10)}`);
console.log('| backend | search | time (s) | new tokens | tokens/s | page load incl. model (s) |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.backend} | ${r.mode} | ${r.s.toFixed(2)} | ${r.tokens} | ${(r.tokens / r.s).toFixed(2)} | ${Number.isNaN(r.load_s) ? 'n/a (whole process in time)' : r.load_s.toFixed(1)} |`);
// Which runs produced the same token ids (q8 weights: ONNX Runtime's int8 arithmetic and burn's f32
// expansion of the q8 values need not agree token for token).
const groups = new Map();
for (const r of rows.filter((r) => r.ids)) {
  const k = JSON.stringify(r.ids);
  groups.set(k, [...(groups.get(k) || []), `${r.backend} ${r.mode}`]);
}
console.log('\nidentical token ids: ' + [...groups.values()].map((g) => `[${g.join(', ')}]`).join(' '));
