//! `bartleby summarize`: a thin shell over [`bartleby_core::Summarizer`].

use crate::device::{self, DeviceArg};
use crate::input::read_documents;
use crate::model_files;
use crate::output::Sink;
use anyhow::{bail, Context, Result};
use bartleby_core::{EarlyStopping, GenerationConfig};
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
    pub generation: GenerationArgs,
    /// Truncate inputs to this many tokens (default: the model's max_position_embeddings).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,
    /// Documents per batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: u64,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
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
    pub length_penalty: Option<f32>,
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
    pub fn apply(&self, mut g: GenerationConfig) -> Result<GenerationConfig> {
        if let Some(n) = self.num_beams {
            if n == 0 {
                bail!("--num-beams must be at least 1");
            }
            g.num_beams = n;
            g.num_return_sequences = g.num_return_sequences.min(n);
        }
        if let Some(n) = self.max_length {
            g.max_length = n;
            g.max_new_tokens = None;
        }
        if let Some(n) = self.min_length {
            g.min_length = n;
        }
        if let Some(n) = self.max_new_tokens {
            g.max_new_tokens = Some(n);
        }
        if let Some(p) = self.length_penalty {
            if !p.is_finite() {
                bail!("--length-penalty must be a finite number");
            }
            g.length_penalty = p;
        }
        if let Some(n) = self.no_repeat_ngram_size {
            g.no_repeat_ngram_size = n;
        }
        if let Some(e) = self.early_stopping {
            g.early_stopping = e;
        }
        Ok(g)
    }
}

pub fn run(args: SummarizeArgs) -> Result<()> {
    let docs = read_documents(&args.input)?;
    let device = device::init(args.device)?;
    let started = Instant::now();
    let files = model_files::resolve(&args.model)?;
    let summarizer = model_files::load(&files, &device).with_context(|| format!("loading {}", args.model))?;
    tracing::info!("loaded {} in {:.1}s", args.model, started.elapsed().as_secs_f64());
    let gen = args.generation.apply(summarizer.generation.clone())?;
    let max_input = args.max_input_tokens.unwrap_or_else(|| summarizer.max_input_tokens());
    summarizer.validate(&gen, max_input)?;

    let mut sink = Sink::open(args.output.as_deref())?;
    let bar = progress_bar(docs.len());
    for chunk in docs.chunks(args.batch_size as usize) {
        let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
        let results = summarizer.summarize(&texts, &gen, max_input, &mut |_| {})?;
        for (doc, summaries) in chunk.iter().zip(results) {
            let best = &summaries[0];
            let mut line = serde_json::json!({
                "id": doc.id,
                "summary": best.summary,
                "token_ids": best.token_ids,
            });
            if summaries.len() > 1 {
                line["candidates"] = serde_json::to_value(&summaries)?;
            }
            sink.write_line(&line.to_string())?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    sink.finish()?;
    tracing::info!("summarized {} documents in {:.1}s", docs.len(), started.elapsed().as_secs_f64());
    Ok(())
}

fn progress_bar(n: usize) -> indicatif::ProgressBar {
    if n <= 3 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} summarizing [{bar:30}] {pos}/{len} docs ({per_sec}, ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
