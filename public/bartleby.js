// window.bartleby: the page's (and any embedder's) API to the model worker.
//   await bartleby.load(url, {backend: 'auto'|'webgpu'|'cpu', onProgress, maxBufferBytes})
//   await bartleby.loadFiles(fileList, {backend, onProgress, maxBufferBytes})  // a folder from disk
//     maxBufferBytes: act as if the GPU allowed no larger buffers (to try the split embedding)
//     maxMemoryBytes: act as if the page's wasm memory were that small (to try the refusal of a
//       model too big for the browser, which otherwise happens past 4 GiB)
//   await bartleby.summarize(text, options, onUpdate)
//       -> {summary, token_ids, backend, ms, tokens, tokens_per_s, input_tokens, truncated, chunks, levels}
//     options use generation_config.json's names (num_beams, max_length, min_length,
//     no_repeat_ngram_size, length_penalty, early_stopping) plus max_input_tokens, and for inputs
//     longer than the window long: 'truncate' | 'chunk', chunk_overlap, partial_max_new_tokens.
//     Decoder-only models (status.prompting is then {model_type, template, system, chat_template}):
//     prompt (a template with {dialogue}), system (a system message), chat_template (false: the
//     filled prompt as plain text), as `bartleby summarize --prompt --system --no-chat-template`;
//     min_new_tokens / max_new_tokens count generated tokens.
//     onUpdate({level, step, max_length, partial}) per step; onUpdate({level, done, total}) per
//     batch of windows.
//   bartleby.cancel()   // stops a running summary (restarts the worker, reloads from cache)
//   bartleby.status     // {loaded, backend, notice, manifest, source, error, load_ms (verify + build), prompting}
//   bartleby.onStatus(fn)
// `?backend=cpu` in the page URL forces the CPU path. `?backend=server` (or {backend: 'server'})
// summarizes on the `bartleby serve` that served this page (or `?server=<url>`) through its
// /generate_stream API instead of in the browser: the text is sent to that server (the status
// notice says so). A page served by `bartleby serve --web` without a bundle under model/ falls back
// to it on its own.
(() => {
  const listeners = new Set();
  const pending = new Map();
  let worker = null;
  let nextId = 1;
  let lastLoad = null;
  const status = { loaded: false, loading: false, backend: null, notice: null, manifest: null, source: null, error: null, progress: null, prompting: null };

  // The server backend: the API base URL while it is the backend, and the request to cancel.
  let serverBase = null;
  let serverAbort = null;

  const emit = () => listeners.forEach((fn) => { try { fn({ ...status }); } catch (_) {} });

  function start() {
    // Started from a blob: URL that only imports worker.js, so the worker runs under this page's
    // Content-Security-Policy (a blob worker inherits its creator's policy; a worker script fetched
    // from a static host gets none, as its response headers can't carry one there).
    const src = new URL('worker.js', document.baseURI).href;
    const boot = URL.createObjectURL(new Blob([`import ${JSON.stringify(src)};`], { type: 'text/javascript' }));
    worker = new Worker(boot, { type: 'module' });
    worker.onmessage = (e) => {
      const m = e.data;
      const p = pending.get(m.id);
      if (!p) return;
      if (m.type === 'progress' || m.type === 'update') { if (p.onUpdate) p.onUpdate(m.update || m); return; }
      pending.delete(m.id);
      if (m.type === 'done') p.resolve(m.result); else p.reject(new Error(m.message));
    };
    worker.onerror = (e) => {
      const err = new Error(`worker failed: ${e.message || 'could not start (see the console)'}`);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
    };
  }

  function call(type, payload, onUpdate, transfer) {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject, onUpdate });
      worker.postMessage({ type, id, ...payload }, transfer || []);
    });
  }

  function requestedBackend(opts) {
    return (opts && opts.backend) || new URLSearchParams(location.search).get('backend') || 'auto';
  }

  async function finishLoad(promise, kind) {
    status.loading = true; status.error = null; status.loaded = false; emit();
    try {
      const r = await promise;
      Object.assign(status, { loaded: true, loading: false, backend: r.backend, notice: r.notice, manifest: r.manifest, source: r.source, load_ms: r.load_ms, progress: null, prompting: r.prompting || null });
      emit();
      return r;
    } catch (e) {
      Object.assign(status, { loaded: false, loading: false, error: e.message, progress: null, prompting: null });
      emit();
      throw e;
    }
  }

  async function serverLoad(base) {
    const r = await fetch(new URL('info', base));
    const info = r.ok ? await r.json().catch(() => null) : null;
    if (!info || !info.model_id) throw new Error(`server backend: ${new URL('info', base)} did not answer as bartleby serve (HTTP ${r.status})`);
    serverBase = base;
    return {
      backend: 'server',
      notice: `Summaries are computed by the server at ${new URL(base).origin}: what you summarize is sent to it.`,
      manifest: { source: { model: info.model_id }, quantization: info.dtype, parameters: info.parameters },
      source: base, load_ms: 0,
    };
  }

  function serverUrl() {
    return new URL(new URLSearchParams(location.search).get('server') || './', document.baseURI).href;
  }

  async function serverSummarize(text, options, onUpdate) {
    if (options.long && options.long !== 'truncate') throw new Error('long inputs: chunk runs in the browser backends; the server backend truncates');
    for (const k of ['prompt', 'system', 'chat_template']) {
      if (options[k] !== undefined && options[k] !== null) throw new Error(`options.${k}: the server backend prompts as \`bartleby serve\` was started (--prompt, --system)`);
    }
    const parameters = {};
    for (const k of ['num_beams', 'max_length', 'min_length', 'max_new_tokens', 'length_penalty', 'no_repeat_ngram_size', 'early_stopping', 'max_input_tokens']) {
      if (options[k] !== undefined && options[k] !== null) parameters[k] = options[k];
    }
    serverAbort = new AbortController();
    const t0 = performance.now();
    let resp;
    try {
      resp = await fetch(new URL('generate_stream', serverBase), {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ inputs: text, parameters }), signal: serverAbort.signal,
      });
    } catch (e) { throw new Error(e.name === 'AbortError' ? 'cancelled' : `server backend: ${e.message}`); }
    if (!resp.ok) {
      const body = await resp.json().catch(() => null);
      throw new Error(body && body.error ? body.error : `server backend: HTTP ${resp.status}`);
    }
    // Server-Sent Events: a token per event (greedy), the last one with the text and details.
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = '', partial = '', final = null, step = 1;
    for (;;) {
      let chunk;
      try { chunk = await reader.read(); } catch (e) { throw new Error(e.name === 'AbortError' ? 'cancelled' : `server backend: ${e.message}`); }
      if (chunk.done) break;
      buf += dec.decode(chunk.value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + 2);
        let name = 'message', data = '';
        for (const line of ev.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trim();
        }
        if (!data) continue;
        const m = JSON.parse(data);
        if (name === 'error') throw new Error(m.error);
        step++;
        if (m.details) { final = m; continue; }
        partial += m.token.text;
        if (onUpdate) onUpdate({ level: 1, step, partial });
      }
    }
    if (!final) throw new Error('server backend: the stream ended without a summary');
    const ms = performance.now() - t0;
    const ids = final.details.token_ids;
    return {
      summary: final.generated_text, token_ids: ids, backend: 'server', ms, tokens: ids.length, tokens_per_s: ids.length / (ms / 1000),
      input_tokens: null, truncated: null, chunks: 1, levels: 1,
    };
  }

  const onProgressWrap = (opts) => (p) => {
    status.progress = p; emit();
    if (opts && opts.onProgress) opts.onProgress(p);
  };

  const api = {
    load(url, opts = {}) {
      const abs = new URL(url, document.baseURI).href;
      const backend = requestedBackend(opts);
      serverBase = null;
      if (backend === 'server') return finishLoad(serverLoad(serverUrl()));
      const maxBufferBytes = opts.maxBufferBytes || null;
      const maxMemoryBytes = opts.maxMemoryBytes || null;
      lastLoad = { kind: 'url', url: abs, backend, maxBufferBytes, maxMemoryBytes };
      let loading = call('load', { url: abs, backend, maxBufferBytes, maxMemoryBytes }, onProgressWrap(opts));
      // The site's own bundle missing on a page that `bartleby serve --web` serves: its server.
      if (backend === 'auto' && abs === new URL('model/', document.baseURI).href) {
        loading = loading.catch((e) => serverLoad(serverUrl()).catch(() => { throw e; }));
      }
      return finishLoad(loading);
    },
    async loadFiles(fileList, opts = {}) {
      const files = [];
      for (const f of Array.from(fileList)) {
        files.push([f.name, new Uint8Array(await f.arrayBuffer())]);
      }
      const backend = requestedBackend(opts) === 'server' ? 'auto' : requestedBackend(opts);
      serverBase = null;
      const maxBufferBytes = opts.maxBufferBytes || null;
      const maxMemoryBytes = opts.maxMemoryBytes || null;
      lastLoad = { kind: 'files', files, backend, maxBufferBytes, maxMemoryBytes };
      return finishLoad(call('loadFiles', { files, backend, maxBufferBytes, maxMemoryBytes }, onProgressWrap(opts)));
    },
    async summarize(text, options = {}, onUpdate) {
      if (!status.loaded) throw new Error('no model loaded (bartleby.load(url) first)');
      if (serverBase) return serverSummarize(text, options, onUpdate);
      const t0 = performance.now();
      const r = await call('summarize', { text, options }, onUpdate);
      const ms = performance.now() - t0;
      const tokens = r.token_ids.length;
      return {
        summary: r.summary, token_ids: r.token_ids, backend: status.backend, ms, tokens, tokens_per_s: tokens / (ms / 1000),
        input_tokens: r.input_tokens, truncated: r.truncated, chunks: r.chunks, levels: r.levels,
      };
    },
    cancel() {
      if (serverBase) { if (serverAbort) serverAbort.abort(); return; }
      const err = new Error('cancelled');
      worker.terminate();
      for (const p of pending.values()) p.reject(err);
      pending.clear();
      start();
      status.loaded = false; emit();
      if (lastLoad) {
        const again = call(lastLoad.kind === 'url' ? 'load' : 'loadFiles', lastLoad);
        finishLoad(again).catch(() => {});
      }
    },
    get status() { return { ...status }; },
    onStatus(fn) { listeners.add(fn); fn({ ...status }); return () => listeners.delete(fn); },
  };
  start();
  window.bartleby = api;
})();
