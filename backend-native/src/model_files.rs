//! Finding a model's files (a local directory or a Hugging Face hub id, downloaded into the
//! standard HF cache) and loading them into a [`Summarizer`].

use anyhow::{bail, Context, Result};
use bartleby_core::checkpoint::adapter::{self, AdapterReport};
use bartleby_core::checkpoint::LoadOptions;
use bartleby_core::pipeline::{ModelBytes, NamedBytes, TokenizerBytes};
use bartleby_core::{BartTokenizer, Summarizer};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// Where each file of a checkpoint lives on disk.
#[derive(Debug)]
pub struct ModelFiles {
    pub source: String,
    pub config: PathBuf,
    pub generation_config: Option<PathBuf>,
    pub weights: Vec<PathBuf>,
    pub tokenizer_json: Option<PathBuf>,
    pub vocab_merges: Option<(PathBuf, PathBuf)>,
    pub tokenizer_config: Option<PathBuf>,
    /// `chat_template.jinja` (decoder-only instruction models).
    pub chat_template: Option<PathBuf>,
    /// A SentencePiece `tokenizer.model` and `added_tokens.json` (Phi-3 ships both beside
    /// tokenizer.json; only its GGUF export reads them, as llama.cpp's convert does).
    pub tokenizer_model: Option<PathBuf>,
    pub added_tokens: Option<PathBuf>,
    /// A `bartleby export` bundle's manifest.json (sizes and sha256 of the files).
    pub manifest: Option<PathBuf>,
}

/// A way to fetch a named file of the model: `Ok(None)` when it does not exist.
trait Fetch {
    fn fetch(&self, file: &str) -> Result<Option<PathBuf>>;
}

struct LocalDir(PathBuf);

impl Fetch for LocalDir {
    fn fetch(&self, file: &str) -> Result<Option<PathBuf>> {
        let p = self.0.join(file);
        Ok(p.is_file().then_some(p))
    }
}

struct Hub {
    id: String,
    api: Option<hf_hub::api::sync::ApiRepo>,
    cache: hf_hub::CacheRepo,
}

impl Fetch for Hub {
    fn fetch(&self, file: &str) -> Result<Option<PathBuf>> {
        if let Some(p) = self.cache.get(file) {
            return Ok(Some(p));
        }
        let Some(api) = &self.api else {
            return Ok(None); // offline: only what the cache has
        };
        match api.get(file) {
            Ok(p) => Ok(Some(p)),
            Err(hf_hub::api::sync::ApiError::RequestError(e)) => match *e {
                ureq::Error::Status(404, _) => Ok(None),
                ureq::Error::Status(401 | 403, _) => bail!(
                    "{}: the hub refused access to {file} (gated or private: set HF_TOKEN)",
                    self.id
                ),
                ureq::Error::Status(code, _) => bail!("{}: hub answered HTTP {code} for {file}", self.id),
                ureq::Error::Transport(t) => bail!(
                    "{}: no such local directory, and the Hugging Face hub cannot be reached to \
                     download it as a model id ({t}); set HF_HUB_OFFLINE=1 to use only the local cache",
                    self.id
                ),
            },
            Err(e) => bail!("{}: downloading {file} failed: {e}", self.id),
        }
    }
}

fn looks_like_hub_id(s: &str) -> bool {
    !s.starts_with('.')
        && !s.starts_with('/')
        && s.matches('/').count() <= 1
        && !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// The default model's name: a small dialogue summarizer trained by this project and shipped in
/// the repository (`models/bartleby-small`, its model card in the folder).
pub const DEFAULT_MODEL: &str = "bartleby-small";

/// Where the default model is looked for, in order: `$BARTLEBY_DEFAULT_MODEL`; the repository this
/// binary was built from (`cargo run`); `models/bartleby-small` next to the executable or two
/// levels up from it (a copied `target/release`).
pub fn default_model_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("BARTLEBY_DEFAULT_MODEL") {
        out.push(PathBuf::from(p));
        return out;
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(DEFAULT_MODEL),
    );
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join("models").join(DEFAULT_MODEL));
            if let Some(up) = dir.parent().and_then(Path::parent) {
                out.push(up.join("models").join(DEFAULT_MODEL));
            }
        }
    }
    out
}

/// `--model` when given, else the default model (saying so once on stderr).
pub fn model_or_default(model: Option<&str>) -> Result<String> {
    if let Some(m) = model {
        return Ok(m.to_string());
    }
    let candidates = default_model_candidates();
    let Some(dir) = candidates.iter().find(|d| d.join("config.json").is_file()) else {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "no --model given and the default model {DEFAULT_MODEL} was not found (looked in {}); \
             pass --model DIR|HUB_ID",
            looked.join(", ")
        );
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    eprintln!(
        "bartleby: no --model given: using the default model {DEFAULT_MODEL} ({}), a small \
         research/demo summarizer (see its README.md); for real use pass --model, e.g. \
         facebook/bart-large-cnn",
        dir.display()
    );
    Ok(dir.display().to_string())
}

/// Resolves `--model`: an existing directory, else a hub id.
pub fn resolve(model: &str) -> Result<ModelFiles> {
    let (fetch, offline) = source(model, "model", "config.json")?;
    collect(model, fetch.as_ref()).map_err(|e| offline_context(e, offline))
}

/// A PEFT LoRA adapter's files.
#[derive(Debug)]
pub struct AdapterFiles {
    pub source: String,
    pub config: PathBuf,
    pub weights: PathBuf,
}

/// Resolves `--adapter`: a directory written by PEFT's `save_pretrained` (or `bartleby train`),
/// else a hub id.
pub fn resolve_adapter(adapter: &str) -> Result<AdapterFiles> {
    let (fetch, offline) = source(adapter, "adapter", adapter::CONFIG_FILE)?;
    let files = (|| {
        let config = fetch
            .fetch(adapter::CONFIG_FILE)?
            .ok_or_else(|| anyhow::anyhow!("{adapter}: no {}", adapter::CONFIG_FILE))?;
        let weights = match fetch.fetch(adapter::WEIGHTS_FILE)? {
            Some(w) => w,
            None if fetch.fetch("adapter_model.bin")?.is_some() => bail!(
                "{adapter}: only adapter_model.bin is present; Bartleby reads safetensors \
                 (PEFT: model.save_pretrained(dir, safe_serialization=True))"
            ),
            None => bail!("{adapter}: no {}", adapter::WEIGHTS_FILE),
        };
        Ok(AdapterFiles {
            source: adapter.to_string(),
            config,
            weights,
        })
    })();
    files.map_err(|e| offline_context(e, offline))
}

/// Adds the adapter's LoRA branches to the loaded model.
pub fn apply_adapter(summarizer: &mut Summarizer, files: &AdapterFiles) -> Result<AdapterReport> {
    // Core errors name the file (adapter_config.json / adapter_model.safetensors); callers add
    // which adapter.
    let config = adapter::LoraConfig::from_json(&read(&files.config)?)?;
    let report = adapter::load_adapter(&mut summarizer.model, &config, &read(&files.weights)?)?;
    tracing::info!(
        "{}: LoRA on {} projections (r={}, alpha={})",
        files.source,
        report.adapted.len(),
        config.r,
        config.lora_alpha
    );
    Ok(report)
}

/// Resolves and loads `--model`, with `--adapter` applied when given: the one way commands
/// get a model.
pub fn load_model(
    model: &str,
    adapter: Option<&str>,
    device: &Device,
    options: LoadOptions,
) -> Result<Summarizer> {
    let files = resolve(model)?;
    let mut summarizer =
        load(&files, device, options).with_context(|| format!("loading {model}"))?;
    if let Some(adapter) = adapter {
        let adapter_files = resolve_adapter(adapter)?;
        apply_adapter(&mut summarizer, &adapter_files)
            .with_context(|| format!("applying adapter {adapter} to {model}"))?;
    }
    Ok(summarizer)
}

fn offline_context(e: anyhow::Error, offline: bool) -> anyhow::Error {
    if offline {
        e.context("HF_HUB_OFFLINE is set and the files are not fully in the local cache")
    } else {
        e
    }
}

/// Where `spec` (a directory, else a hub id) fetches files from, and whether the hub is off.
fn source(spec: &str, what: &str, marker: &str) -> Result<(Box<dyn Fetch>, bool)> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok((Box::new(LocalDir(path.to_path_buf())), false));
    }
    if path.exists() {
        bail!("{spec}: --{what} must be a directory holding {marker}, not a file");
    }
    if !looks_like_hub_id(spec) {
        bail!("{spec}: no such {what} directory");
    }
    let offline = matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref(),
        Ok("1")
            | Ok("true")
            | Ok("True")
            | Ok("TRUE")
            | Ok("ON")
            | Ok("on")
            | Ok("YES")
            | Ok("yes")
    );
    let cache = hf_hub::Cache::from_env();
    let cache_repo = cache.model(spec.to_string());
    let api = if offline {
        None
    } else {
        let token = std::env::var("HF_TOKEN").ok().or_else(|| cache.token());
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_token(token)
            .with_progress(true)
            .build()
            .context("cannot set up the Hugging Face hub client")?;
        Some(api.model(spec.to_string()))
    };
    let hub = Hub {
        id: spec.to_string(),
        api,
        cache: cache_repo,
    };
    Ok((Box::new(hub), offline))
}

fn collect(source: &str, f: &dyn Fetch) -> Result<ModelFiles> {
    let config = f
        .fetch("config.json")?
        .ok_or_else(|| anyhow::anyhow!("{source}: no config.json"))?;
    let weights = if let Some(single) = f.fetch("model.safetensors")? {
        vec![single]
    } else if let Some(index) = f.fetch("model.safetensors.index.json")? {
        let text =
            std::fs::read(&index).with_context(|| format!("{}: cannot read", index.display()))?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{}: invalid JSON", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| anyhow::anyhow!("{}: missing \"weight_map\"", index.display()))?;
        let mut files: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
        files.sort();
        files.dedup();
        files
            .into_iter()
            .map(|name| {
                // Shards live inside the model directory (or its hub snapshot): no absolute
                // paths, no `..`.
                let inside = Path::new(name)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !inside || name.is_empty() {
                    bail!(
                        "{}: shard {name:?} is outside the model directory",
                        index.display()
                    );
                }
                f.fetch(name)?.ok_or_else(|| {
                    anyhow::anyhow!("{source}: shard {name} listed in the index is missing")
                })
            })
            .collect::<Result<Vec<_>>>()?
    } else if f.fetch("pytorch_model.bin")?.is_some() {
        bail!("{source}: only pytorch_model.bin is present; Bartleby reads safetensors (convert with transformers: model.save_pretrained(dir, safe_serialization=True))")
    } else {
        bail!("{source}: no model.safetensors or model.safetensors.index.json")
    };
    let tokenizer_json = f.fetch("tokenizer.json")?;
    let vocab_merges = if tokenizer_json.is_none() {
        match (f.fetch("vocab.json")?, f.fetch("merges.txt")?) {
            (Some(v), Some(m)) => Some((v, m)),
            _ => bail!("{source}: no tokenizer.json (or vocab.json + merges.txt)"),
        }
    } else {
        None
    };
    Ok(ModelFiles {
        source: source.to_string(),
        generation_config: f.fetch("generation_config.json")?,
        tokenizer_config: f.fetch("tokenizer_config.json")?,
        chat_template: f.fetch("chat_template.jinja")?,
        tokenizer_model: f.fetch("tokenizer.model")?,
        added_tokens: f.fetch("added_tokens.json")?,
        manifest: f.fetch(bartleby_core::checkpoint::bundle::MANIFEST_FILE)?,
        config,
        weights,
        tokenizer_json,
        vocab_merges,
    })
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))
}

/// Loads config, weights (memory-mapped), tokenizer and generation defaults: the files are
/// read (weights mapped) and handed to the core's one assembler, [`Summarizer::assemble`].
pub fn load(files: &ModelFiles, device: &Device, options: LoadOptions) -> Result<Summarizer> {
    // A bundle's files are checked against its manifest (sha256) on a thread of their own while
    // the model is built from them; its verdict comes first: a file that does not match is the
    // error, whatever building made of it (nothing is written while loading).
    let Some(manifest) = files.manifest.clone() else {
        return load_files(files, device, options);
    };
    let check = std::thread::spawn(move || verify_bundle(&manifest).map(|_| ()));
    let loaded = load_files(files, device, options);
    match check.join() {
        Ok(Ok(())) => loaded,
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("{}: the bundle check stopped unexpectedly", files.source),
    }
}

fn load_files(files: &ModelFiles, device: &Device, options: LoadOptions) -> Result<Summarizer> {
    let name = |p: &Path| p.display().to_string();
    let config = (name(&files.config), read(&files.config)?);
    let generation_config = match &files.generation_config {
        Some(p) => Some((name(p), read(p)?)),
        None => None,
    };
    let tokenizer_config = files.tokenizer_config.as_deref().map(read).transpose()?;
    let chat_template = match &files.chat_template {
        Some(p) => Some((name(p), read(p)?)),
        None => None,
    };
    let tokenizer_files: Vec<(String, Vec<u8>)> = match (&files.tokenizer_json, &files.vocab_merges)
    {
        (Some(t), _) => vec![(name(t), read(t)?)],
        (None, Some((v, m))) => vec![(name(v), read(v)?), (name(m), read(m)?)],
        (None, None) => bail!("{}: no tokenizer files", files.source),
    };
    fn named((name, bytes): &(String, Vec<u8>)) -> NamedBytes<'_> {
        NamedBytes { name, bytes }
    }
    let maps = map_files(&files.weights)?;
    let tokenizer = match tokenizer_files.as_slice() {
        [json] => TokenizerBytes::Json(named(json)),
        [vocab, merges] => TokenizerBytes::VocabMerges(named(vocab), named(merges)),
        _ => unreachable!("one or two tokenizer files"),
    };
    let bytes = ModelBytes {
        config: named(&config),
        generation_config: generation_config.as_ref().map(named),
        weights: maps
            .iter()
            .map(|(n, m)| NamedBytes { name: n, bytes: m })
            .collect(),
        tokenizer,
        tokenizer_config: tokenizer_config.as_deref(),
        chat_template: chat_template.as_ref().map(named),
    };
    // Release each tensor's mapped pages once it is converted: peak memory stays near the
    // model's own size instead of model + file.
    let (summarizer, report) = Summarizer::assemble(&bytes, device, options, &mut |b| {
        release_pages(&maps, b);
    })?;
    for w in summarizer.config.warnings() {
        tracing::warn!("{w}");
    }
    if !report.unused.is_empty() {
        tracing::warn!(
            "{}: {} unused tensors, e.g. {}",
            files.source,
            report.unused.len(),
            report.unused[0]
        );
    }
    Ok(summarizer)
}

/// Checks every file a bundle's manifest lists (size, then sha256): a truncated download or an
/// edited file is an error naming it.
pub fn verify_bundle(manifest_path: &Path) -> Result<bartleby_core::checkpoint::bundle::Manifest> {
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let manifest = bartleby_core::checkpoint::bundle::Manifest::from_json(&read(manifest_path)?)
        .with_context(|| dir.display().to_string())?;
    for entry in &manifest.files {
        let path = dir.join(&entry.path);
        let maps = map_files(std::slice::from_ref(&path))?;
        // The pages behind the hash are dropped as it goes (the loader reads the same file).
        manifest
            .verify_with(&entry.path, &maps[0].1, &mut |part| {
                release_pages(&maps, part)
            })
            .with_context(|| format!("bundle {}", dir.display()))?;
    }
    Ok(manifest)
}

/// Memory-maps weight files read-only, each with its display name.
pub fn map_files(paths: &[PathBuf]) -> Result<Vec<(String, memmap2::Mmap)>> {
    paths
        .iter()
        .map(|p| {
            let file =
                std::fs::File::open(p).with_context(|| format!("{}: cannot open", p.display()))?;
            // SAFETY: the file is opened read-only and only read while the map lives.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .with_context(|| format!("{}: cannot map", p.display()))?;
            Ok((p.display().to_string(), map))
        })
        .collect()
}

/// The model's tokenizer (tokenizer.json, else vocab.json + merges.txt).
pub fn load_tokenizer(files: &ModelFiles) -> Result<BartTokenizer> {
    let tok_config = files.tokenizer_config.as_deref().map(read).transpose()?;
    Ok(match (&files.tokenizer_json, &files.vocab_merges) {
        (Some(t), _) => BartTokenizer::from_tokenizer_json(&read(t)?, tok_config.as_deref())
            .with_context(|| t.display().to_string())?,
        (None, Some((v, m))) => {
            BartTokenizer::from_vocab_merges(&read(v)?, &read(m)?, tok_config.as_deref())
                .with_context(|| format!("{}", v.display()))?
        }
        (None, None) => bail!("{}: no tokenizer files", files.source),
    })
}

#[cfg(not(unix))]
fn release_pages(_maps: &[(String, memmap2::Mmap)], _bytes: &[u8]) {}

/// Drops the pages of `bytes` (inside one of `maps`) from memory: a read-only file mapping's
/// clean pages are simply re-read from the file if touched again.
#[cfg(unix)]
fn release_pages(maps: &[(String, memmap2::Mmap)], bytes: &[u8]) {
    const PAGE: usize = 4096;
    let Some((_, map)) = maps
        .iter()
        .find(|(_, m)| m.as_ptr_range().contains(&bytes.as_ptr()))
    else {
        return;
    };
    let offset = bytes.as_ptr() as usize - map.as_ptr() as usize;
    let start = offset.div_ceil(PAGE) * PAGE;
    let end = (offset + bytes.len()) / PAGE * PAGE;
    if end > start {
        // SAFETY: DontNeed on a private read-only file mapping cannot change what a later
        // read sees (the pages are reloaded from the file); nothing else holds references
        // into these pages past this point except `bytes`, which is not read again.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}
