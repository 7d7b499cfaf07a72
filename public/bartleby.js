// window.bartleby: the page's (and any embedder's) API to the model worker.
//   await bartleby.load(url, {backend: 'auto'|'webgpu'|'cpu', onProgress, maxBufferBytes})
//   await bartleby.loadFiles(fileList, {backend, onProgress, maxBufferBytes})  // a folder from disk
//     maxBufferBytes: act as if the GPU allowed no larger buffers (to try the split embedding)
//   await bartleby.summarize(text, options, onUpdate)
//       -> {summary, token_ids, backend, ms, tokens, tokens_per_s, input_tokens, truncated, chunks, levels}
//     options use generation_config.json's names (num_beams, max_length, min_length,
//     no_repeat_ngram_size, length_penalty, early_stopping) plus max_input_tokens, and for inputs
//     longer than the window long: 'truncate' | 'chunk', chunk_overlap, partial_max_new_tokens.
//     onUpdate({level, step, max_length, partial}) per step; onUpdate({level, done, total}) per
//     batch of windows.
//   bartleby.cancel()   // stops a running summary (restarts the worker, reloads from cache)
//   bartleby.status     // {loaded, backend, notice, manifest, source, error, load_ms (verify + build)}
//   bartleby.onStatus(fn)
// `?backend=cpu` in the page URL forces the CPU path.
(() => {
  const listeners = new Set();
  const pending = new Map();
  let worker = null;
  let nextId = 1;
  let lastLoad = null;
  const status = { loaded: false, loading: false, backend: null, notice: null, manifest: null, source: null, error: null, progress: null };

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
      Object.assign(status, { loaded: true, loading: false, backend: r.backend, notice: r.notice, manifest: r.manifest, source: r.source, load_ms: r.load_ms, progress: null });
      emit();
      return r;
    } catch (e) {
      Object.assign(status, { loaded: false, loading: false, error: e.message, progress: null });
      emit();
      throw e;
    }
  }

  const onProgressWrap = (opts) => (p) => {
    status.progress = p; emit();
    if (opts && opts.onProgress) opts.onProgress(p);
  };

  const api = {
    load(url, opts = {}) {
      const abs = new URL(url, document.baseURI).href;
      const backend = requestedBackend(opts);
      const maxBufferBytes = opts.maxBufferBytes || null;
      lastLoad = { kind: 'url', url: abs, backend, maxBufferBytes };
      return finishLoad(call('load', { url: abs, backend, maxBufferBytes }, onProgressWrap(opts)));
    },
    async loadFiles(fileList, opts = {}) {
      const files = [];
      for (const f of Array.from(fileList)) {
        files.push([f.name, new Uint8Array(await f.arrayBuffer())]);
      }
      const backend = requestedBackend(opts);
      const maxBufferBytes = opts.maxBufferBytes || null;
      lastLoad = { kind: 'files', files, backend, maxBufferBytes };
      return finishLoad(call('loadFiles', { files, backend, maxBufferBytes }, onProgressWrap(opts)));
    },
    async summarize(text, options = {}, onUpdate) {
      if (!status.loaded) throw new Error('no model loaded (bartleby.load(url) first)');
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
