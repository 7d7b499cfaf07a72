//! `bartleby summarize`: a thin shell over [`bartleby_core::Summarizer`].

use crate::device::{self, DeviceArg};
use crate::input::{read_documents, Document};
use crate::model_files;
use crate::output::Sink;
use anyhow::{bail, Context, Result};
use bartleby_core::{EarlyStopping, GenerationConfig, Summarizer, Summary};
use burn::tensor::Device;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// Model directory (config.json, model.safetensors, tokenizer) or Hugging Face hub id.
    #[arg(long)]
    pub model: String,
    /// Input: .jsonl (`dialogue` or `text`, optional `id`), .csv with those columns, or plain
    /// text (one document). `-` reads stdin.
    #[arg(long, default_value = "-")]
    pub input: PathBuf,
    /// Output JSONL (`-` = stdout). Written to a temp file and renamed when complete.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// How a model generates: the flags `summarize` and `eval` share.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// LoRA adapter (PEFT format: adapter_config.json + adapter_model.safetensors), a directory
    /// or hub id, applied unmerged on top of --model.
    #[arg(long)]
    pub adapter: Option<String>,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Truncate inputs to this many tokens (default: the model's max_position_embeddings).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,
    /// Documents per batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: u64,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Compute a q8/q4 bundle's projections in f32 (its weights expanded at load) instead of
    /// int8 × int8 with per-row activation scales, the default on --device cpu (as in the web
    /// app's CPU path; other devices always compute in f32).
    #[arg(long)]
    pub f32_matmul: bool,
}

/// Generation settings; each overrides the model's generation_config.json when given.
#[derive(Args, Debug, Default)]
pub struct GenerationArgs {
    #[arg(long)]
    pub num_beams: Option<usize>,
    #[arg(long)]
    pub max_length: Option<usize>,
    #[arg(long)]
    pub min_length: Option<usize>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long, allow_hyphen_values = true)]
    pub length_penalty: Option<f64>,
    #[arg(long)]
    pub no_repeat_ngram_size: Option<usize>,
    /// true, false or never.
    #[arg(long, value_parser = parse_early_stopping)]
    pub early_stopping: Option<EarlyStopping>,
}

fn parse_early_stopping(s: &str) -> Result<EarlyStopping, String> {
    match s {
        "true" => Ok(EarlyStopping::True),
        "false" => Ok(EarlyStopping::False),
        "never" => Ok(EarlyStopping::Never),
        _ => Err(format!("expected true, false or never, got {s:?}")),
    }
}

impl GenerationArgs {
    /// The flags as `generate(**kwargs)` keyword arguments (generation_config.json names).
    pub fn kwargs(&self) -> serde_json::Value {
        let mut kw = serde_json::Map::new();
        let mut set = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                kw.insert(k.to_string(), v);
            }
        };
        set("num_beams", self.num_beams.map(Into::into));
        set("max_length", self.max_length.map(Into::into));
        set("min_length", self.min_length.map(Into::into));
        set("max_new_tokens", self.max_new_tokens.map(Into::into));
        set(
            "length_penalty",
            self.length_penalty.map(|p| serde_json::json!(p)),
        );
        set(
            "no_repeat_ngram_size",
            self.no_repeat_ngram_size.map(Into::into),
        );
        set(
            "early_stopping",
            self.early_stopping
                .map(|e| serde_json::to_value(e).expect("serializable")),
        );
        serde_json::Value::Object(kw)
    }

    /// Overrides `base` with the flags that were given, exactly as `generate(**kwargs)` would.
    pub fn apply(&self, base: &GenerationConfig) -> Result<GenerationConfig> {
        if self.num_beams == Some(0) {
            bail!("--num-beams must be at least 1");
        }
        if self.length_penalty.is_some_and(|p| !p.is_finite()) {
            bail!("--length-penalty must be a finite number");
        }
        let mut base = base.clone();
        if self.max_length.is_some() && self.max_new_tokens.is_none() {
            // --max-length replaces a max_new_tokens that came from the model's config.
            base.max_new_tokens = None;
        }
        let mut gen = base.with_overrides(&self.kwargs())?;
        if gen.num_return_sequences > gen.num_beams {
            gen.num_return_sequences = gen.num_beams;
        }
        Ok(gen)
    }
}

/// Loads the model named by `--model` (a directory or a hub id) with `--adapter` applied when
/// given: the one place where models are loaded for generation.
pub fn load_summarizer(model: &str, adapter: Option<&str>, device: &Device) -> Result<Summarizer> {
    let started = Instant::now();
    let summarizer = model_files::load_model(model, adapter, device)?;
    tracing::info!("loaded {model} in {:.3}s", started.elapsed().as_secs_f64());
    Ok(summarizer)
}

/// A loaded model with the generation settings and input window it will use.
pub struct Generator {
    pub summarizer: Summarizer,
    pub gen: GenerationConfig,
    pub max_input: usize,
}

impl Generator {
    /// Loads `model` and resolves its summarization settings with the flags on top.
    pub fn new(model: &str, run: &RunArgs, device: &Device) -> Result<Self> {
        let summarizer = load_summarizer(model, run.adapter.as_deref(), device)?;
        let (defaults, from_task_params) = summarizer.summarization_generation()?;
        if from_task_params {
            tracing::info!(
                "no generation_config.json: using config.json task_specific_params.summarization"
            );
        }
        let gen = run.generation.apply(&defaults)?;
        let max_input = run
            .max_input_tokens
            .unwrap_or_else(|| summarizer.max_input_tokens());
        summarizer.validate(&gen, max_input)?;
        Ok(Self {
            summarizer,
            gen,
            max_input,
        })
    }

    /// Checks every document before any work, so an error names the document.
    pub fn check_documents(&self, docs: &[Document], source: &str) -> Result<()> {
        for doc in docs {
            self.summarizer
                .check_input(&doc.text, self.max_input)
                .with_context(|| format!("{source}: document id {}", doc.id))?;
        }
        Ok(())
    }

    /// Summarizes `docs` in batches of `batch_size`, in order, handing each document's summaries
    /// (best first) to `each`; `bar` advances per batch.
    pub fn summarize_all(
        &self,
        docs: &[Document],
        batch_size: usize,
        source: &str,
        bar: &indicatif::ProgressBar,
        mut each: impl FnMut(&Document, Vec<Summary>) -> Result<()>,
    ) -> Result<()> {
        for chunk in docs.chunks(batch_size) {
            let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
            let results = self
                .summarizer
                .summarize(&texts, &self.gen, self.max_input, &mut |_, _| {})
                .with_context(|| format!("{source}: documents from id {}", chunk[0].id))?;
            for (doc, summaries) in chunk.iter().zip(results) {
                each(doc, summaries)?;
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }
}

pub fn run(args: SummarizeArgs) -> Result<()> {
    let docs = read_documents(&args.input)?;
    let device = device::init_inference(args.run.device, args.run.f32_matmul)?;
    let started = Instant::now();
    let generator = Generator::new(&args.model, &args.run, &device)?;
    let input_name = args.input.display().to_string();
    generator.check_documents(&docs, &input_name)?;

    let mut sink = Sink::open(args.output.as_deref())?;
    let bar = progress_bar(docs.len(), "summarizing", "docs");
    let gen_started = Instant::now();
    let batch_size = args.run.batch_size as usize;
    generator.summarize_all(&docs, batch_size, &input_name, &bar, |doc, summaries| {
        let best = &summaries[0];
        let mut line = serde_json::json!({
            "id": doc.id,
            "summary": best.summary,
            "token_ids": best.token_ids,
        });
        if summaries.len() > 1 {
            line["candidates"] = serde_json::to_value(&summaries)?;
        }
        sink.write_line(&line.to_string())
    })?;
    sink.finish()?;
    tracing::info!(
        "generated {} summaries in {:.3}s ({:.3}s in all)",
        docs.len(),
        gen_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A progress bar with rate and ETA over `n` items (hidden for 3 or fewer).
pub fn progress_bar(n: usize, action: &str, items: &str) -> indicatif::ProgressBar {
    if n <= 3 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {action} [{{bar:30}}] {{pos}}/{{len}} {items} ({{per_sec}}, ETA {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
