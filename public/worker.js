// The model's Web Worker (a module worker). It fetches a bundle's files (with progress),
// caches them in Cache Storage keyed by sha256, picks WebGPU or the CPU, and hands everything to
// the wasm module built from app-web/src/bin/worker.rs (bartleby-core). No user text is sent
// anywhere: the only network requests are for the bundle's own files.
import init, { load_bundle, prompting, summarize } from './bartleby-worker.js';

const ready = init();
const CACHE = 'bartleby-bundles-v1';

const post = (msg) => self.postMessage(msg);

function join(base, path) {
  return new URL(path, base.endsWith('/') ? base : base + '/').href;
}

async function download(url, id, done, total) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
  if (!resp.body) return new Uint8Array(await resp.arrayBuffer());
  const reader = resp.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done: end, value } = await reader.read();
    if (end) break;
    chunks.push(value);
    got += value.length;
    post({ type: 'progress', id, stage: 'download', loaded: done + got, total });
  }
  const bytes = new Uint8Array(got);
  let off = 0;
  for (const c of chunks) { bytes.set(c, off); off += c.length; }
  return bytes;
}

// sha256 of every file against the manifest with the browser's own SubtleCrypto (secure contexts:
// https, localhost); false where it is missing, and the wasm side checks instead.
async function checkSha256(manifest, files) {
  if (!(self.crypto && self.crypto.subtle)) return false;
  const byPath = new Map(files);
  for (const f of manifest.files) {
    const bytes = byPath.get(f.path);
    if (!bytes) throw new Error(`${f.path}: listed in manifest.json but missing`);
    const d = new Uint8Array(await self.crypto.subtle.digest('SHA-256', bytes));
    const hex = Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
    if (hex !== f.sha256) throw new Error(`${f.path}: sha256 ${hex} does not match the manifest's ${f.sha256}`);
  }
  return true;
}

// Fetches manifest.json and every file it lists; a file whose sha256 is cached is not downloaded
// again, and cache entries of the same URL with another sha256 are dropped.
async function fetchBundle(base, id) {
  const murl = join(base, 'manifest.json');
  const mresp = await fetch(murl, { cache: 'no-cache' });
  if (!mresp.ok) throw new Error(`${murl}: HTTP ${mresp.status} (no bundle there? build one with \`bartleby export\`)`);
  const manifestBytes = new Uint8Array(await mresp.arrayBuffer());
  let manifest;
  try { manifest = JSON.parse(new TextDecoder().decode(manifestBytes)); }
  catch (e) { throw new Error(`${murl}: not JSON (${e.message})`); }
  if (!Array.isArray(manifest.files)) throw new Error(`${murl}: no "files" list`);
  const total = manifest.files.reduce((n, f) => n + f.bytes, 0);
  let cache = null;
  try { cache = await caches.open(CACHE); } catch (_) { /* no Cache Storage (e.g. http on a LAN address) */ }
  const files = [['manifest.json', manifestBytes]];
  let done = 0, cached = 0;
  for (const f of manifest.files) {
    const url = join(base, f.path);
    const key = `${url}?bartleby-sha256=${f.sha256}`;
    let bytes = null;
    if (cache) {
      const hit = await cache.match(key);
      if (hit) {
        bytes = new Uint8Array(await hit.arrayBuffer());
        if (bytes.length !== f.bytes) bytes = null; else cached += bytes.length;
      }
    }
    if (!bytes) {
      bytes = await download(url, id, done, total);
      if (cache) {
        for (const old of await cache.keys()) {
          if (old.url.startsWith(`${url}?bartleby-sha256=`) && old.url !== key) await cache.delete(old);
        }
        try { await cache.put(key, new Response(bytes)); } catch (_) { /* quota: keep going uncached */ }
      }
    }
    done += f.bytes;
    post({ type: 'progress', id, stage: 'download', loaded: done, total });
    files.push([f.path, bytes]);
  }
  return { manifest, files, cached };
}

// WebGPU when the browser gives an adapter whose buffer limit fits every tensor but the
// embedding table (held in parts under the limit when it is larger), else the CPU.
// `maxBufferBytes` (optional) lowers the adapter's limit, to try the split on any GPU.
async function pickBackend(requested, manifest, maxBufferBytes) {
  if (requested === 'cpu') return { backend: 'cpu', notice: null, limit: null };
  const gpu = self.navigator && self.navigator.gpu;
  if (!gpu) return { backend: 'cpu', notice: 'WebGPU is not available in this browser: running on the CPU (wasm).', limit: null };
  let adapter = null;
  try { adapter = await gpu.requestAdapter(); } catch (_) { adapter = null; }
  if (!adapter) return { backend: 'cpu', notice: 'No WebGPU adapter: running on the CPU (wasm).', limit: null };
  const req = manifest.requires || {};
  const need = req.max_buffer_bytes || 0;
  const least = req.min_buffer_bytes ?? need;
  let have = Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize);
  if (maxBufferBytes) have = Math.min(have, maxBufferBytes);
  const mb = (x) => (x / 1048576).toFixed(x < 1048576 ? 3 : 0);
  if (have < least) {
    return { backend: 'cpu', notice: `This GPU allows buffers of ${mb(have)} MiB; the model needs ${mb(least)} MiB: running on the CPU (wasm).`, limit: null };
  }
  const notice = have < need ? `The embedding table (${mb(need)} MiB) is over this GPU's ${mb(have)} MiB buffer limit: it is held in ${Math.ceil(need / have)}+ parts.` : null;
  // A software adapter (SwiftShader: the GPU emulated on the CPU) gets encoding's products on a
  // kernel that suits it (core/src/gpu.rs).
  const info = adapter.info || {};
  const software = !!(info.isFallbackAdapter ?? adapter.isFallbackAdapter) || info.architecture === 'swiftshader';
  return { backend: 'webgpu', notice, limit: have, software };
}

// A page's wasm memory is at most 4 GiB (wasm32): the bundle's files are read into it, and on
// the CPU the weights are held there too (f32/f16 bundles in f32; q8/q4 as int8 — one byte per
// parameter, q4 unpacked — plus the embedding table in f32). A model that cannot fit is refused
// here with the figures, after the download and before the weights are loaded.
// `maxMemoryBytes` (optional) lowers the limit, to try the refusal with a small model.
const WASM_MEMORY_BYTES = 4 * 1024 ** 3;
function checkMemory(manifest, files, backend, maxMemoryBytes) {
  const fileBytes = files.reduce((n, [, bytes]) => n + bytes.byteLength, 0);
  const quantized = /^q/.test(String(manifest.quantization || ''));
  const req = manifest.requires || {};
  const held = backend !== 'cpu' ? 0
    : quantized ? (manifest.parameters || fileBytes) + (req.max_buffer_bytes || 0)
    : req.device_bytes || 0;
  const need = fileBytes + held;
  const limit = Math.min(WASM_MEMORY_BYTES, maxMemoryBytes || Infinity);
  if (need > limit) {
    const size = (x) => (x < 1024 ** 3 ? `${(x / 1024 ** 2).toFixed(1)} MiB` : `${(x / 1024 ** 3).toFixed(1)} GiB`);
    throw new Error(`This model is too big for the browser: it needs about ${size(need)} of the page's memory `
      + `(${backend === 'cpu' ? 'its files and its weights on the CPU' : 'its files, read before they go to the GPU'}), `
      + `and a page gets at most ${size(limit)}. Use a q4/q8 bundle (bartleby export --quant q4), or run it natively `
      + 'and use the "server" backend (bartleby serve --web).');
  }
}

async function load(id, files, manifest, requested, source, cached, maxBufferBytes, maxMemoryBytes) {
  const { backend, notice, limit, software } = await pickBackend(requested, manifest, maxBufferBytes);
  checkMemory(manifest, files, backend, maxMemoryBytes);
  post({ type: 'progress', id, stage: 'init', backend });
  const t0 = performance.now();
  const checked = await checkSha256(manifest, files);
  await load_bundle(files, backend, limit, checked, !!software);
  // Decoder-only models: their prompt template, system message and chat template (the page's form).
  const prompt = JSON.parse(prompting() ?? 'null');
  return { backend, notice, manifest, source, cached, load_ms: performance.now() - t0, software_adapter: !!software, prompting: prompt };
}

self.onmessage = async (event) => {
  const msg = event.data;
  const id = msg.id;
  try {
    await ready;
    let result;
    if (msg.type === 'load') {
      const { manifest, files, cached } = await fetchBundle(msg.url, id);
      result = await load(id, files, manifest, msg.backend, msg.url, cached, msg.maxBufferBytes, msg.maxMemoryBytes);
    } else if (msg.type === 'loadFiles') {
      const m = msg.files.find(([name]) => name === 'manifest.json');
      if (!m) throw new Error('the chosen files have no manifest.json (pick a folder written by `bartleby export`)');
      const manifest = JSON.parse(new TextDecoder().decode(m[1]));
      result = await load(id, msg.files, manifest, msg.backend, 'local files', 0, msg.maxBufferBytes, msg.maxMemoryBytes);
    } else if (msg.type === 'summarize') {
      const onUpdate = (json) => post({ type: 'update', id, update: JSON.parse(json) });
      result = JSON.parse(await summarize(msg.text, JSON.stringify(msg.options || {}), onUpdate));
    } else {
      throw new Error(`unknown request ${msg.type}`);
    }
    post({ type: 'done', id, result });
  } catch (e) {
    post({ type: 'error', id, message: (e && e.message) ? e.message : String(e) });
  }
};
