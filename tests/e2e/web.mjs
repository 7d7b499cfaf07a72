// End-to-end test of the web app (run by tests/run.sh after `trunk build --release`):
// exports the tiny fixture model as f32 and q8 bundles with the native CLI, summarizes three real
// dialogues natively, then in headless Chromium — on WebGPU (SwiftShader) and on the forced CPU
// path (?backend=cpu), through the UI and through window.bartleby — and asserts the token ids are
// identical. Also: a browser without WebGPU falls back to the CPU with a notice; the page makes
// no request outside its own origin; a changed bundle (sha256) is downloaded again. Screenshots
// of both views go to target/e2e/. The default model (models/bartleby-small) summarizes on the
// plain page, WebGPU and CPU.
import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import os from 'node:os';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const BIN = path.join(ROOT, 'target/release/bartleby');
const DIST = path.join(ROOT, 'dist');
const SHOTS = path.join(ROOT, 'target/e2e');
const DATA = path.resolve(ROOT, '../shared/data/samsum/validation.jsonl');
const MODEL = path.join(ROOT, 'tests/fixtures/models/tiny-gelu');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BASE_FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

let failures = 0;
function check(cond, what) {
  if (cond) { console.log(`ok   ${what}`); } else { failures++; console.log(`FAIL ${what}`); }
}

for (const p of [BIN, path.join(DIST, 'index.html'), DATA]) {
  if (!fs.existsSync(p)) { console.error(`missing ${p} (build first: see tests/run.sh)`); process.exit(1); }
}
fs.mkdirSync(SHOTS, { recursive: true });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bartleby-e2e-'));
const bundles = path.join(tmp, 'bundles');

// Three real dialogues.
const dialogues = fs.readFileSync(DATA, 'utf8').split('\n').filter(Boolean).slice(0, 3).map((l) => JSON.parse(l));
const input = path.join(tmp, 'input.jsonl');
fs.writeFileSync(input, dialogues.map((d) => JSON.stringify({ id: d.id, dialogue: d.dialogue })).join('\n') + '\n');

// Settings: the bundle's own generation config (beam search), and greedy with a max length.
const SETTINGS = {
  beam: { options: {}, flags: [] },
  greedy: { options: { num_beams: 1, max_length: 24 }, flags: ['--num-beams', '1', '--max-length', '24'] },
  // Long inputs: windows of 40 tokens, partial summaries, levels (each dialogue takes 15-19 windows).
  chunk: {
    options: { long: 'chunk', max_input_tokens: 40, partial_max_new_tokens: 8, num_beams: 1, max_length: 24 },
    flags: ['--long', 'chunk', '--max-input-tokens', '40', '--partial-max-new-tokens', '8', '--num-beams', '1', '--max-length', '24'],
  },
};
// The UI's chunk run: window 64, partial summaries with the final settings.
const UI_CHUNK = ['--long', 'chunk', '--max-input-tokens', '64', '--num-beams', '1', '--max-length', '24'];

const native = {};
for (const quant of ['f32', 'q8']) {
  const out = path.join(bundles, quant);
  execFileSync(BIN, ['export', '--model', MODEL, '--quant', quant, '--block-size', '4', '--output', out], { stdio: 'inherit' });
  for (const [name, s] of Object.entries(SETTINGS)) {
    const res = path.join(tmp, `native-${quant}-${name}.jsonl`);
    // q8 natively on the CPU is computed in int8 (as the browser's CPU path); --f32-matmul
    // expands the weights to f32 (as the WebGPU path).
    for (const [key, extra] of [[quant, []], ...(quant === 'q8' ? [['q8-f32', ['--f32-matmul']]] : [])]) {
      const res = path.join(tmp, `native-${key}-${name}.jsonl`);
      execFileSync(BIN, ['summarize', '--model', out, '--input', input, '--output', res, ...s.flags, ...extra], { stdio: 'inherit' });
      native[`${key}/${name}`] = fs.readFileSync(res, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).token_ids);
    }
  }
  for (const [key, extra] of [[quant, []], ...(quant === 'q8' ? [['q8-f32', ['--f32-matmul']]] : [])]) {
    const res = path.join(tmp, `native-${key}-ui-chunk.jsonl`);
    execFileSync(BIN, ['summarize', '--model', out, '--input', input, '--output', res, ...UI_CHUNK, ...extra], { stdio: 'inherit' });
    native[`${key}/ui-chunk`] = fs.readFileSync(res, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  }
}
check(native['f32/ui-chunk'].every((r) => r.levels > 1 && r.chunks > 1), 'the UI chunk run takes several windows and levels natively');
check(JSON.stringify(native['f32/beam']) !== JSON.stringify(native['f32/greedy']), 'beam and greedy settings give different native outputs (the test can tell them apart)');
check(Object.keys(SETTINGS).some((n) => JSON.stringify(native[`q8/${n}`]) !== JSON.stringify(native[`q8-f32/${n}`])),
  'q8 in int8 and in f32 give different native outputs (the test can tell which the browser computed)');

// A static server for dist/ and the bundles (correct MIME types; nothing else).
const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm',
  '.css': 'text/css', '.json': 'application/json', '.png': 'image/png', '.svg': 'image/svg+xml' };
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  let p = decodeURIComponent(url.pathname);
  const root = p.startsWith('/bundles/') ? tmp : DIST;
  if (p.endsWith('/')) p += 'index.html';
  const file = path.join(root, path.normalize(p));
  if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { 'Content-Type': MIME[path.extname(file)] || 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const origin = `http://127.0.0.1:${server.address().port}`;
console.log(`serving ${DIST} at ${origin}`);

async function openPage(browser, query) {
  const page = await browser.newPage();
  const foreign = [];
  const errors = [];
  page.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) foreign.push(r.url()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(`${origin}/${query}`);
  await page.waitForFunction(() => window.bartleby && (window.bartleby.status.loaded || window.bartleby.status.error), null, { timeout: 120000 });
  const status = await page.evaluate(() => window.bartleby.status);
  return { page, foreign, errors, status };
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BASE_FLAGS, '--enable-unsafe-webgpu'] });
for (const backend of ['webgpu', 'cpu']) {
  for (const quant of ['f32', 'q8']) {
    const tag = `${backend}/${quant}`;
    const want = backend === 'webgpu' && quant === 'q8' ? 'q8-f32' : quant; // the native run computed alike
    const query = `?model=/bundles/${quant}/` + (backend === 'cpu' ? '&backend=cpu' : '');
    const { page, foreign, errors, status } = await openPage(browser, query);
    check(status.loaded && status.backend === backend, `${tag}: bundle loaded on ${status.backend} ${status.error || ''}`);
    if (!status.loaded) { console.log(errors.join('\n')); await page.close(); continue; }
    for (const [name, s] of Object.entries(SETTINGS)) {
      const ids = [];
      for (const d of dialogues) {
        const r = await page.evaluate(([t, o]) => window.bartleby.summarize(t, o), [d.dialogue, s.options]);
        ids.push(r.token_ids);
        if (r.backend !== backend) check(false, `${tag}: summarize reports backend ${r.backend}`);
      }
      check(JSON.stringify(ids) === JSON.stringify(native[`${want}/${name}`]),
        `${tag} ${name}: window.bartleby token ids == native bartleby summarize (3 dialogues)`);
      if (JSON.stringify(ids) !== JSON.stringify(native[`${want}/${name}`])) {
        console.log('  browser', JSON.stringify(ids), '\n  native ', JSON.stringify(native[`${want}/${name}`]));
      }
    }
    // Through the UI: pick the greedy settings, paste the first dialogue, click Summarize.
    await page.fill('#input', dialogues[0].dialogue);
    await page.fill('#num-beams', '1');
    await page.fill('#max-length', '24');
    await page.click('#summarize');
    await page.waitForFunction(() => document.querySelector('#token-ids').textContent.length > 0 || document.querySelector('#error').textContent.length > 0, null, { timeout: 120000 });
    const uiIds = JSON.parse((await page.textContent('#token-ids')) || 'null');
    check(JSON.stringify(uiIds) === JSON.stringify(native[`${want}/greedy`][0]), `${tag}: UI token ids == native (first dialogue)`);
    check(((await page.textContent('#stats')) || '').includes('tokens/s'), `${tag}: UI shows time and tokens/s`);
    if (backend === 'cpu' && quant === 'f32') {
      // An encoder-decoder has no prompt: the form hides it, the API refuses one in a line.
      check(!(await page.isVisible('#prompting')), `${tag}: no prompt form for an encoder-decoder`);
      const refused = await page.evaluate((t) => window.bartleby.summarize(t, { prompt: 'Sum up: {dialogue}' })
        .then(() => 'summarized', (e) => String(e && e.message || e)), dialogues[0].dialogue);
      check(/^options\.prompt: bart is an encoder-decoder model/.test(refused), `${tag}: a prompt for an encoder-decoder is refused (${refused})`);
    }
    // Long inputs through the UI: chunk, window 64; level progress, then the windows and levels.
    await page.selectOption('#long', 'chunk');
    await page.fill('#max-input', '64');
    await page.click('#summarize');
    await page.waitForFunction(() => document.querySelector('#token-ids').textContent.length > 0 || document.querySelector('#error').textContent.length > 0, null, { timeout: 120000 });
    const chunkIds = JSON.parse((await page.textContent('#token-ids')) || 'null');
    const want0 = native[`${want}/ui-chunk`][0];
    check(JSON.stringify(chunkIds) === JSON.stringify(want0.token_ids), `${tag}: UI long=chunk token ids == native --long chunk (first dialogue)`);
    const stats = (await page.textContent('#stats')) || '';
    check(stats.includes(`${want0.chunks} windows, ${want0.levels} levels`), `${tag}: UI says how it was made (${stats})`);
    await page.selectOption('#long', 'truncate');
    await page.fill('#max-input', '');
    await page.screenshot({ path: path.join(SHOTS, `summarize-${backend}-${quant}.png`), fullPage: true });
    if (backend === 'webgpu' && quant === 'q8') {
      // A GPU whose buffer limit is under the embedding table: the table is held in parts.
      const limit = status.manifest.requires.min_buffer_bytes;
      await page.evaluate((l) => window.bartleby.load('/bundles/q8/', { maxBufferBytes: l }), limit);
      const st = await page.evaluate(() => window.bartleby.status);
      check(st.loaded && st.backend === 'webgpu' && /parts/.test(st.notice || ''),
        `${tag}: embedding split under a ${limit}-byte buffer limit (${st.notice || st.error})`);
      const ids = [];
      for (const d of dialogues) ids.push((await page.evaluate(([t, o]) => window.bartleby.summarize(t, o), [d.dialogue, SETTINGS.greedy.options])).token_ids);
      check(JSON.stringify(ids) === JSON.stringify(native['q8-f32/greedy']), `${tag}: split embedding: token ids == native (3 dialogues, greedy)`);
    }
    if (backend === 'webgpu' && quant === 'f32') {
      // Dashboards on the example results (real `bartleby eval` / `compare` / `train` output).
      await page.click('#tab-dashboards');
      await page.click('#dash-load-examples');
      await page.waitForFunction(() => document.querySelectorAll('#dash-table tbody tr').length > 0, null, { timeout: 60000 });
      const rows = await page.locator('#dash-table tbody tr').count();
      check(rows === 40, `dashboards: per-example table shows the 40 predictions (${rows})`);
      check(await page.locator('#dash-chart svg rect').count() > 4, 'dashboards: metric chart drawn');
      check(await page.locator('#dash-train svg').count() > 0, 'dashboards: training curve drawn');
      check(((await page.textContent('#dash-failures')) || '').length > 100, 'dashboards: failure categories shown');
      check(await page.locator('#dash-ranking svg rect').count() === 3 && await page.locator('#dash-ranking tbody tr').count() === 3,
        'dashboards: benchmark ranking (final_ranking.json) drawn with its table');
      await page.fill('#dash-filter', 'zzzz-no-such-text');
      await page.waitForFunction(() => document.querySelectorAll('#dash-table tbody tr').length === 0, null, { timeout: 10000 });
      await page.fill('#dash-filter', '');
      await page.click('#dash-recompute');
      await page.waitForFunction(() => document.querySelector('#dash-recompute-result').textContent.includes('same'), null, { timeout: 60000 });
      const same = await page.locator('#dash-recompute-result .dash-match').count();
      const differs = await page.locator('#dash-recompute-result .dash-mismatch').count();
      check(same >= 5 && differs === 0, `dashboards: ROUGE/BLEU recomputed in the page equal the file (${same} same, ${differs} differ)`);
      await page.screenshot({ path: path.join(SHOTS, 'dashboards.png'), fullPage: true });
    }
    check(foreign.length === 0, `${tag}: no request left ${origin} ${foreign.join(' ')}`);
    const realErrors = errors.filter((e) => !/favicon/.test(e));
    check(realErrors.length === 0, `${tag}: no page errors ${realErrors.join(' | ')}`);
    await page.close();
  }
}

// Decoder-only (Llama 3.2 / Phi-3 / Qwen2): a Llama fixture (GQA, llama3 rope, tied head, the real Llama 3.2 chat
// template) exported as f32 and q8 bundles: its chat-template prompts summarized on WebGPU and on the CPU give the
// ids `bartleby summarize` writes natively (q8 on the CPU in int8 on both sides; on WebGPU in f32, as
// --f32-matmul); the template's strftime_now reads the page's clock as the CLI reads the system's. A model too big
// for the page's memory is refused with the figures.
{
  const LLAMA = path.join(ROOT, 'tests/fixtures/models/llama-gqa-llama3-tied');
  const PROMPT = 'Write one short line about who said what in this chat:\n{dialogue}';
  const SYSTEM = 'You are a terse note-taker.';
  const LLAMA_SETTINGS = {
    greedy: { options: { max_new_tokens: 12 }, flags: ['--max-new-tokens', '12'] },
    beam: { options: { num_beams: 3, max_new_tokens: 8 }, flags: ['--num-beams', '3', '--max-new-tokens', '8'] },
    // The prompt options (as the page's form sends them) against the CLI's flags.
    prompted: { options: { prompt: PROMPT, system: SYSTEM, max_new_tokens: 10 }, flags: ['--prompt', PROMPT, '--system', SYSTEM, '--max-new-tokens', '10'] },
    plain: { options: { prompt: PROMPT, chat_template: false, max_new_tokens: 10 }, flags: ['--prompt', PROMPT, '--no-chat-template', '--max-new-tokens', '10'] },
  };
  const llamaNative = {};
  for (const quant of ['f32', 'q8']) {
    const out = path.join(bundles, `llama-${quant}`);
    execFileSync(BIN, ['export', '--model', LLAMA, '--quant', quant, '--block-size', '4', '--output', out], { stdio: 'inherit' });
    for (const [name, s] of Object.entries(LLAMA_SETTINGS)) {
      for (const [key, extra] of [[quant, []], ...(quant === 'q8' ? [['q8-f32', ['--f32-matmul']]] : [])]) {
        const res = path.join(tmp, `native-llama-${key}-${name}.jsonl`);
        execFileSync(BIN, ['summarize', '--model', out, '--input', input, '--output', res, ...s.flags, ...extra], { stdio: 'inherit' });
        llamaNative[`${key}/${name}`] = fs.readFileSync(res, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).token_ids);
      }
    }
  }
  check(JSON.stringify(llamaNative['f32/greedy']) !== JSON.stringify(llamaNative['f32/beam']),
    'decoder-only: greedy and beam settings give different native outputs');
  check(new Set(['greedy', 'prompted', 'plain'].map((n) => JSON.stringify(llamaNative[`f32/${n}`]))).size === 3,
    'decoder-only: the default prompt, another prompt + system message, and plain text give different native outputs');
  for (const backend of ['webgpu', 'cpu']) {
    for (const quant of ['f32', 'q8']) {
      const tag = `decoder-only ${backend}/${quant}`;
      const want = backend === 'webgpu' && quant === 'q8' ? 'q8-f32' : quant;
      const { page, errors, status } = await openPage(browser, `?model=/bundles/llama-${quant}/` + (backend === 'cpu' ? '&backend=cpu' : ''));
      check(status.loaded && status.backend === backend, `${tag}: bundle loaded on ${status.backend} ${status.error || ''}`);
      if (!status.loaded) { console.log(errors.join('\n')); await page.close(); continue; }
      for (const [name, s] of Object.entries(LLAMA_SETTINGS)) {
        const ids = [];
        for (const d of dialogues) ids.push((await page.evaluate(([t, o]) => window.bartleby.summarize(t, o), [d.dialogue, s.options])).token_ids);
        const same = JSON.stringify(ids) === JSON.stringify(llamaNative[`${want}/${name}`]);
        check(same, `${tag} ${name}: window.bartleby token ids == native bartleby summarize (3 chat prompts)`);
        if (!same) console.log('  browser', JSON.stringify(ids), '\n  native ', JSON.stringify(llamaNative[`${want}/${name}`]));
      }
      if (backend === 'cpu' && quant === 'f32') {
        // The page's form for a decoder-only model: the model's prompt template (with {dialogue}), a system
        // message, the chat-template switch, max new tokens — the ids of the CLI's --prompt / --system /
        // --no-chat-template runs.
        check(await page.isVisible('#prompting'), `${tag}: the page shows the prompt form`);
        const template = await page.inputValue('#prompt');
        check(template.includes('{dialogue}') && await page.isChecked('#chat-template'),
          `${tag}: the form starts from the model's prompt template and its chat template (${JSON.stringify(template)})`);
        check(/max new tokens/.test(await page.textContent('#prompting + fieldset')), `${tag}: lengths are counted in new tokens`);
        const ui = async () => {
          await page.click('#summarize');
          await page.waitForFunction(() => document.querySelector('#token-ids').textContent.length > 0 || document.querySelector('#error').textContent.length > 0, null, { timeout: 120000 });
          return JSON.parse((await page.textContent('#token-ids')) || 'null');
        };
        await page.fill('#input', dialogues[0].dialogue);
        await page.fill('#max-length', '10');
        await page.fill('#prompt', PROMPT);
        await page.fill('#system', SYSTEM);
        const prompted = await ui();
        check(JSON.stringify(prompted) === JSON.stringify(llamaNative['f32/prompted'][0]),
          `${tag}: UI prompt + system message token ids == native --prompt --system (first dialogue)`);
        await page.fill('#system', '');
        await page.uncheck('#chat-template');
        const plain = await ui();
        check(JSON.stringify(plain) === JSON.stringify(llamaNative['f32/plain'][0]),
          `${tag}: UI without the chat template token ids == native --no-chat-template (first dialogue)`);
        await page.fill('#prompt', 'no placeholder here');
        await page.click('#summarize');
        await page.waitForFunction(() => document.querySelector('#error').textContent.length > 0, null, { timeout: 60000 });
        check(/prompt template must contain \{dialogue\}/.test(await page.textContent('#error')), `${tag}: a prompt without {dialogue} is refused in a line`);
        await page.screenshot({ path: path.join(SHOTS, 'summarize-decoder-only.png'), fullPage: true });
        const refused = await page.evaluate(() => window.bartleby.load('/bundles/llama-f32/', { backend: 'cpu', maxMemoryBytes: 100000 })
          .then(() => 'loaded', (e) => String(e && e.message || e)));
        check(/too big for the browser/.test(refused) && /about (?!0(\.0)? MiB)[0-9.]+ MiB/.test(refused), `${tag}: a model over the page's memory is refused with the figures (${refused.slice(0, 120)})`);
      }
      const realErrors = errors.filter((e) => !/favicon/.test(e));
      check(realErrors.length === 0 || (backend === 'cpu' && quant === 'f32' && realErrors.every((e) => /too big/.test(e))),
        `${tag}: no page errors ${realErrors.join(' | ')}`);
      await page.close();
    }
  }
}

// The site's default model (models/bartleby-small, copied to dist/model/ by the build): the plain
// page summarizes on first open, WebGPU and CPU, with the ids `bartleby summarize` (no --model)
// writes for the same dialogues and the model's own settings.
{
  const res = path.join(tmp, 'native-default.jsonl');
  const env = { ...process.env, HF_HUB_OFFLINE: '1' };
  delete env.BARTLEBY_DEFAULT_MODEL;
  execFileSync(BIN, ['summarize', '--input', input, '--output', res], { stdio: 'inherit', env });
  const want = fs.readFileSync(res, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).token_ids);
  check(fs.existsSync(path.join(DIST, 'model/manifest.json')), 'dist/model/ holds the default model bundle');
  for (const backend of ['webgpu', 'cpu']) {
    const tag = `default model on first open (${backend})`;
    const { page, foreign, errors, status } = await openPage(browser, backend === 'cpu' ? '?backend=cpu' : '');
    check(status.loaded && status.backend === backend, `${tag}: loaded on ${status.backend} ${status.error || ''}`);
    if (status.loaded) {
      const ids = [];
      for (const d of dialogues) ids.push((await page.evaluate((t) => window.bartleby.summarize(t, {}), d.dialogue)).token_ids);
      check(JSON.stringify(ids) === JSON.stringify(want), `${tag}: token ids == native default-model summarize (3 dialogues)`);
      if (JSON.stringify(ids) !== JSON.stringify(want)) console.log('  browser', JSON.stringify(ids), '\n  native ', JSON.stringify(want));
      await page.fill('#input', dialogues[0].dialogue);
      await page.click('#summarize');
      await page.waitForFunction(() => document.querySelector('#token-ids').textContent.length > 0 || document.querySelector('#error').textContent.length > 0, null, { timeout: 120000 });
      const uiIds = JSON.parse((await page.textContent('#token-ids')) || 'null');
      const out = (await page.textContent('#output')) || '';
      check(JSON.stringify(uiIds) === JSON.stringify(want[0]) && out.trim().length > 0, `${tag}: the UI summarizes with the default settings ("${out.trim().slice(0, 60)}")`);
      await page.screenshot({ path: path.join(SHOTS, `default-model-${backend}.png`), fullPage: true });
    }
    check(foreign.length === 0, `${tag}: no request left ${origin} ${foreign.join(' ')}`);
    const realErrors = errors.filter((e) => !/favicon/.test(e));
    check(realErrors.length === 0, `${tag}: no page errors ${realErrors.join(' | ')}`);
    await page.close();
  }
}

// Cache: a reload does not download the weights again; a changed sha256 does.
{
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  let weightFetches = 0;
  ctx.on('request', (r) => { if (r.url().endsWith('/bundles/q8/model.safetensors')) weightFetches++; });
  const wait = () => page.waitForFunction(() => window.bartleby && (window.bartleby.status.loaded || window.bartleby.status.error), null, { timeout: 120000 });
  await page.goto(`${origin}/?model=/bundles/q8/&backend=cpu`); await wait();
  await page.reload(); await wait();
  check(weightFetches === 1, `cache: weights fetched once over two page loads (${weightFetches})`);
  // Re-export q4 in place of q8: new sha256 → downloaded again.
  fs.rmSync(path.join(bundles, 'q8'), { recursive: true });
  execFileSync(BIN, ['export', '--model', MODEL, '--quant', 'q4', '--block-size', '4', '--check-n', '0', '--output', path.join(bundles, 'q8')]);
  await page.reload(); await wait();
  const st = await page.evaluate(() => window.bartleby.status);
  check(weightFetches === 2 && st.loaded && st.manifest.quantization === 'q4', `cache: changed sha256 → downloaded again (${weightFetches}, ${st.manifest && st.manifest.quantization})`);
  await ctx.close();
}
// CSP reaches the worker: a bundle on another origin (not in connect-src) is refused before any
// request leaves the page, and the load fails with an error.
{
  let hits = 0;
  const other = http.createServer((req, res) => { hits++; res.writeHead(404); res.end(); });
  await new Promise((r) => other.listen(0, '127.0.0.1', r));
  const page = await browser.newPage();
  await page.goto(`${origin}/?model=http://127.0.0.1:${other.address().port}/bundle/&backend=cpu`);
  await page.waitForFunction(() => window.bartleby && (window.bartleby.status.loaded || window.bartleby.status.error), null, { timeout: 120000 });
  const st = await page.evaluate(() => window.bartleby.status);
  check(!st.loaded && st.error && hits === 0, `CSP: the worker cannot fetch from another origin (${hits} request(s) reached it; error: ${st.error})`);
  await page.close();
  other.close();
}
await browser.close();

// No WebGPU at all (flag removed): CPU with a notice.
{
  const b = await chromium.launch({ executablePath: CHROMIUM, args: BASE_FLAGS });
  const { page, status } = await openPage(b, '?model=/bundles/f32/');
  const notice = await page.textContent('#notice');
  check(status.loaded && status.backend === 'cpu' && status.notice && notice.includes('CPU'),
    `no WebGPU: falls back to the CPU with a notice ("${status.notice}")`);
  const r = await page.evaluate(([t, o]) => window.bartleby.summarize(t, o), [dialogues[1].dialogue, SETTINGS.greedy.options]);
  check(JSON.stringify(r.token_ids) === JSON.stringify(native['f32/greedy'][1]), 'no WebGPU: token ids == native');
  await page.screenshot({ path: path.join(SHOTS, 'summarize-no-webgpu.png'), fullPage: true });
  await b.close();
}

// `bartleby serve --web dist`: the page's third backend, "server" (the API the page calls on its
// own origin). Served from a copy of dist/ without model/, so the plain page falls back to the
// server by itself.
{
  const bare = path.join(tmp, 'dist-without-model');
  const skip = path.join(DIST, 'model');
  fs.cpSync(DIST, bare, { recursive: true, filter: (src) => src !== skip && !src.startsWith(skip + path.sep) });
  const srv = spawn(BIN, ['serve', '--model', MODEL, '--web', bare, '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const apiOrigin = await new Promise((resolve, reject) => {
    let err = '';
    srv.stderr.on('data', (d) => {
      err += d;
      const m = err.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) resolve(m[1]);
    });
    srv.on('exit', (c) => reject(new Error(`bartleby serve exited ${c}: ${err}`)));
  });
  const b = await chromium.launch({ executablePath: CHROMIUM, args: [...BASE_FLAGS, '--enable-unsafe-webgpu'] });
  for (const query of ['?backend=server', '']) {
    const page = await b.newPage();
    const foreign = [];
    page.on('request', (r) => { if (!r.url().startsWith(apiOrigin) && !r.url().startsWith('blob:') && !r.url().startsWith('data:')) foreign.push(r.url()); });
    await page.goto(`${apiOrigin}/${query}`);
    await page.waitForFunction(() => window.bartleby && (window.bartleby.status.loaded || window.bartleby.status.error), null, { timeout: 120000 });
    const st = await page.evaluate(() => window.bartleby.status);
    const tag = `server backend (${query || 'no bundle: fallback'})`;
    check(st.loaded && st.backend === 'server' && st.notice && st.notice.includes('sent to it'), `${tag}: loaded, with a notice that text goes to the server (${st.error || st.notice})`);
    if (st.loaded) {
      for (const name of ['beam', 'greedy']) {
        const ids = [];
        for (const d of dialogues) {
          const r = await page.evaluate(([t, o]) => window.bartleby.summarize(t, o), [d.dialogue, SETTINGS[name].options]);
          ids.push(r.token_ids);
        }
        check(JSON.stringify(ids) === JSON.stringify(native[`f32/${name}`]), `${tag} ${name}: token ids == native bartleby summarize (3 dialogues)`);
      }
      // Through the UI, streamed: the text appears and the badge says Server.
      await page.selectOption('#examples', '0');
      await page.fill('#num-beams', '1');
      await page.click('#summarize');
      await page.waitForFunction(() => document.querySelector('#stats').textContent.includes('tokens/s'), null, { timeout: 60000 });
      const badge = await page.textContent('#backend');
      const out = await page.textContent('#output');
      check(badge === 'Server' && out.length > 0, `${tag}: the UI summarizes on the server (badge "${badge}")`);
      if (!query) await page.screenshot({ path: path.join(SHOTS, 'summarize-server.png'), fullPage: true });
    }
    check(foreign.length === 0, `${tag}: no request outside the server's origin ${foreign.join(' ')}`);
    await page.close();
  }
  await b.close();
  srv.kill('SIGTERM');
  const code = await new Promise((r) => srv.on('exit', (c) => r(c)));
  check(code === 0, `bartleby serve --web: SIGTERM → exit 0 (${code})`);
}

server.close();
fs.rmSync(tmp, { recursive: true, force: true });
if (failures) { console.error(`${failures} check(s) failed`); process.exit(1); }
console.log('web e2e: all checks passed');
