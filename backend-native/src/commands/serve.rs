//! `bartleby serve`: loads the model (and its adapters) and runs [`crate::server`].

use crate::device::{self, DeviceArg};
use crate::generation_args::GenerationArgs;
use crate::server::{self, batcher::Served};
use crate::summarizer::load_summarizer;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model directory (config.json, model.safetensors, tokenizer), web bundle or hub id;
    /// without it, the shipped default model bartleby-small (models/bartleby-small).
    #[arg(long)]
    pub model: Option<String>,
    /// A LoRA adapter a request can pick with `parameters.adapter_id`: NAME=DIR (or NAME=HUB_ID);
    /// repeat for several. Each is held applied (unmerged) to its own copy of the base.
    #[arg(long, value_name = "NAME=DIR")]
    pub adapter: Vec<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Compute a q8/q4 bundle's projections in f32 instead of int8, and f32/f16/bf16 weights
    /// with burn's f32 matrix product instead of the CPU's own kernels (see `summarize`).
    #[arg(long)]
    pub f32_matmul: bool,
    /// A batch's token budget: the sum over its inputs of (input tokens + max sequence length) ×
    /// beams. An input that alone needs more is refused (422).
    #[arg(long, default_value_t = 32768, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch_tokens: u64,
    /// Inputs per batch at most.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_batch_size: u64,
    /// How long the first input of a batch waits for others to join it.
    #[arg(long, default_value_t = 10)]
    pub max_batch_wait_ms: u64,
    /// Requests admitted at once (queued or running); more are answered 429.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_concurrent_requests: u64,
    /// Larger request bodies are answered 413.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Require `Authorization: Bearer KEY` (every route but /health and --web files). Also read
    /// from BARTLEBY_API_KEY.
    #[arg(long)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub prompting: crate::summarizer::PromptArgs,
    /// Allow cross-origin requests from this origin (repeat; `*` for any). Default: none.
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// Also serve the built web app (trunk's dist/) from this directory; its "server" backend
    /// calls this API.
    #[arg(long)]
    pub web: Option<PathBuf>,
    /// Server-wide defaults over the model's generation_config.json (requests override them).
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Default input window (requests: `max_input_tokens`).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,
    /// Default text put before every input (requests: `prefix`; see `summarize --prefix`).
    #[arg(long)]
    pub prefix: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if let Some(web) = &args.web {
        if !web.join("index.html").is_file() {
            bail!(
                "{}: --web must be a built web app folder with index.html (run `trunk build --release`)",
                web.display()
            );
        }
    }
    let mut args = args;
    if args.api_key.is_none() {
        args.api_key = std::env::var("BARTLEBY_API_KEY").ok();
    }
    if args.api_key.as_deref() == Some("") {
        bail!("--api-key is empty");
    }
    let mut adapters: Vec<(String, String)> = Vec::new();
    for spec in &args.adapter {
        let Some((name, dir)) = spec.split_once('=') else {
            bail!("--adapter {spec:?}: expected NAME=DIR");
        };
        if name.is_empty() || dir.is_empty() {
            bail!("--adapter {spec:?}: expected NAME=DIR");
        }
        if adapters.iter().any(|(n, _)| n == name) {
            bail!("--adapter {name}: given twice");
        }
        adapters.push((name.to_string(), dir.to_string()));
    }
    let model = crate::model_files::model_or_default(args.model.as_deref())?;
    let target = device::init_inference(args.device, args.f32_matmul)?;
    let mut models = Vec::new();
    let specs = std::iter::once((None, None)).chain(
        adapters
            .iter()
            .map(|(n, d)| (Some(n.clone()), Some(d.as_str()))),
    );
    for (name, dir) in specs {
        let mut summarizer = load_summarizer(&model, dir, &target)?;
        // --prompt, --system, ... for a decoder-only model (refused for the others); --prefix
        // for an encoder-decoder (refused for a decoder-only one).
        crate::summarizer::apply_prompting(
            &mut summarizer,
            &args.prompting,
            args.prefix.as_deref(),
            false,
        )?;
        let (defaults, _) = summarizer.summarization_generation()?;
        let defaults = args.generation.apply(&defaults)?;
        let max_input = args
            .max_input_tokens
            .unwrap_or_else(|| summarizer.max_input_tokens());
        summarizer.validate(&defaults, max_input).with_context(|| {
            format!(
                "{}: the generation settings (generation_config.json with the flags on top)",
                model
            )
        })?;
        // The prefix is applied per request (it can change it), not by the summarizer.
        let prefix = args
            .prefix
            .clone()
            .unwrap_or_else(|| std::mem::take(&mut summarizer.prefix));
        summarizer.prefix = String::new();
        models.push(Served {
            adapter: name,
            summarizer,
            defaults,
            prefix,
            max_input,
        });
    }
    let base = &models[0];
    let dtype = weights_dtype(&model);
    let int8 = args.device == DeviceArg::Cpu && !args.f32_matmul && dtype.starts_with('q');
    let info = serde_json::json!({
        "model_id": model,
        "model_type": base.summarizer.config.model_type(),
        "architecture": base.summarizer.config.architecture(),
        "parameters": base.summarizer.config.num_parameters(),
        "dtype": dtype,
        "compute_dtype": if int8 { "int8" } else { "float32" },
        "device": format!("{:?}", args.device).to_lowercase(),
        "adapters": models.iter().filter_map(|m| m.adapter.clone()).collect::<Vec<_>>(),
        "generation": serde_json::to_value(&base.defaults)?,
        "max_input_tokens": base.max_input,
        "prefix": base.prefix,
        "limits": {
            "max_batch_tokens": args.max_batch_tokens,
            "max_batch_size": args.max_batch_size,
            "max_batch_wait_ms": args.max_batch_wait_ms,
            "max_concurrent_requests": args.max_concurrent_requests,
            "max_body_bytes": args.max_body_bytes,
        },
        "version": env!("CARGO_PKG_VERSION"),
    });
    let config = server::Config {
        host: args.host,
        port: args.port,
        max_batch_tokens: args.max_batch_tokens as usize,
        max_batch_size: args.max_batch_size as usize,
        max_batch_wait: Duration::from_millis(args.max_batch_wait_ms),
        max_concurrent_requests: args.max_concurrent_requests as usize,
        max_body_bytes: args.max_body_bytes,
        api_key: args.api_key,
        cors_origins: args.cors_origin,
        web: args.web,
        info,
    };
    server::run(config, models)
}

/// How the weights are stored: a bundle's quantization (f32, f16, q8, q4), else the dtype of the
/// checkpoint's first tensor as its safetensors header names it (F32, F16, BF16).
fn weights_dtype(model: &str) -> String {
    let Ok(files) = crate::model_files::resolve(model) else {
        return "unknown".into();
    };
    if let Some(manifest) = &files.manifest {
        // Its `quantization` only: the files were verified when the model loaded.
        return std::fs::read(manifest)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|m| m["quantization"].as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
    }
    let header = || -> Option<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(files.weights.first()?).ok()?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).ok()?;
        let len = u64::from_le_bytes(len).min(100 << 20) as usize;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&buf).ok()?;
        v.as_object()?
            .iter()
            .find(|(k, _)| *k != "__metadata__")
            .and_then(|(_, t)| t["dtype"].as_str().map(str::to_lowercase))
    };
    header().unwrap_or_else(|| "unknown".into())
}
