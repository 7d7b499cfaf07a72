//! A loaded model ready to summarize with the flags `summarize` and `eval` share: [`RunArgs`]
//! and the [`Generator`] they resolve to.

use crate::device::{DeviceArg, Target};
use crate::generation_args::GenerationArgs;
use crate::input::Document;
use crate::model_files;
use anyhow::{Context, Result};
use bartleby_core::{GenerationConfig, Summarizer, Summary};
use clap::Args;
use std::time::Instant;

/// How a model generates: the flags `summarize` and `eval` share.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// LoRA adapter (PEFT format: adapter_config.json + adapter_model.safetensors), a directory
    /// or hub id, applied unmerged on top of --model.
    #[arg(long)]
    pub adapter: Option<String>,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Truncate inputs to this many tokens (default: the model's max_position_embeddings; T5:
    /// the tokenizer's model_max_length, else 512).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,
    /// Text put before every input (default: config.json's
    /// task_specific_params.summarization.prefix, e.g. "summarize: " for T5, as transformers'
    /// summarization pipeline does; --prefix '' removes it).
    #[arg(long)]
    pub prefix: Option<String>,
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

/// Loads the model named by `--model` (a directory or a hub id) with `--adapter` applied when
/// given: the one place where models are loaded for generation.
pub fn load_summarizer(model: &str, adapter: Option<&str>, target: &Target) -> Result<Summarizer> {
    let started = Instant::now();
    let summarizer = model_files::load_model(model, adapter, &target.device, target.options)?;
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
    pub fn new(model: &str, run: &RunArgs, target: &Target) -> Result<Self> {
        Self::with_input_cap(model, run, target, None)
    }

    /// [`Generator::new`] where, without `--max-input-tokens`, inputs are cut at `cap` tokens
    /// when the model reads more (the summarization pipeline benchmarks at 768).
    pub fn with_input_cap(
        model: &str,
        run: &RunArgs,
        target: &Target,
        cap: Option<usize>,
    ) -> Result<Self> {
        let mut summarizer = load_summarizer(model, run.adapter.as_deref(), target)?;
        if let Some(prefix) = &run.prefix {
            summarizer.prefix = prefix.clone();
        }
        let (defaults, from_task_params) = summarizer.summarization_generation()?;
        if from_task_params {
            tracing::info!(
                "no generation_config.json: using config.json task_specific_params.summarization"
            );
        }
        let gen = run.generation.apply(&defaults)?;
        let max_input = run.max_input_tokens.unwrap_or_else(|| {
            let window = summarizer.max_input_tokens();
            cap.map_or(window, |c| c.min(window))
        });
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
