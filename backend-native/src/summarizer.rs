//! A loaded model ready to summarize with the flags `summarize` and `eval` share: [`RunArgs`]
//! and the [`Generator`] they resolve to.

use crate::device::{DeviceArg, Target};
use crate::generation_args::GenerationArgs;
use crate::input::Document;
use crate::model_files;
use anyhow::{Context, Result};
use bartleby_core::{GenerationConfig, LongInfo, LongMode, LongOptions, Summarizer, Summary};
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
    #[command(flatten)]
    pub prompting: PromptArgs,
    /// Inputs longer than the window: `truncate` (cut them, as transformers does) or `chunk`
    /// (summarize windows of whole turns, then their joined summaries, until one fits; inputs that
    /// fit are summarized exactly as with `truncate`).
    #[arg(long, default_value = "truncate", value_parser = parse_long)]
    pub long: LongMode,
    /// With --long chunk: repeat the last whole turns of a window at the start of the next, as
    /// many as fit in N tokens (default 0: no overlap).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub chunk_overlap: usize,
    /// With --long chunk: max_new_tokens of the partial summaries (default: the same settings as
    /// the final summary).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub partial_max_new_tokens: Option<usize>,
    /// Documents per batch (with --long chunk: windows per batch).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: u64,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Compute a q8/q4 bundle's projections in f32 (its weights expanded at load) instead of
    /// int8 × int8 with per-row activation scales, the default on --device cpu (as in the web
    /// app's CPU path; other devices always compute in f32); and take an f32/f16/bf16
    /// checkpoint's products with burn's f32 matrix product (half weights widened at load)
    /// instead of the CPU's own kernels over the weights held as stored (the default on --device
    /// cpu: the same values; half checkpoints in half the memory).
    #[arg(long)]
    pub f32_matmul: bool,
}

/// How a decoder-only model is prompted: the flags `summarize`, `eval` and `serve` share.
#[derive(Args, Debug, Default)]
pub struct PromptArgs {
    /// Decoder-only models (Llama, Phi-3, Qwen2): the prompt, a text with `{dialogue}` where
    /// each input goes (default: "Summarize the following dialogue in one or two
    /// sentences.\n\n{dialogue}"). With the model's chat template it is the user message.
    #[arg(long, value_name = "TEMPLATE")]
    pub prompt: Option<String>,
    /// Decoder-only models: a system message before the prompt.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Decoder-only models: tokenize the filled prompt as plain text (with the special tokens
    /// the tokenizer adds, e.g. BOS) instead of rendering the model's chat template.
    #[arg(long)]
    pub no_chat_template: bool,
    /// Decoder-only models: more variables for the chat template, as a JSON object (e.g.
    /// '{"date_string": "26 Jul 2024"}' for Llama 3.2's, which otherwise shows today's date).
    #[arg(long, value_name = "JSON")]
    pub chat_template_kwargs: Option<String>,
}

fn parse_long(s: &str) -> Result<LongMode, String> {
    s.parse()
        .map_err(|_| format!("expected truncate or chunk, got {s:?}"))
}

/// Loads the model named by `--model` (a directory or a hub id) with `--adapter` applied when
/// given: the one place where models are loaded for generation.
pub fn load_summarizer(model: &str, adapter: Option<&str>, target: &Target) -> Result<Summarizer> {
    let started = Instant::now();
    let summarizer = model_files::load_model(model, adapter, &target.device, target.options)?;
    tracing::info!("loaded {model} in {:.3}s", started.elapsed().as_secs_f64());
    Ok(summarizer)
}

/// `--prefix` (encoder-decoders) and `--prompt`, `--system`, `--no-chat-template`,
/// `--chat-template-kwargs` (decoder-only models), each refused where it does not apply.
pub fn apply_prompting(
    summarizer: &mut Summarizer,
    run: &PromptArgs,
    prefix: Option<&str>,
    do_sample: bool,
) -> Result<()> {
    let kind = summarizer.config.model_type();
    let Some(prompting) = summarizer.prompting.as_mut() else {
        let given = [
            ("--prompt", run.prompt.is_some()),
            ("--system", run.system.is_some()),
            ("--no-chat-template", run.no_chat_template),
            ("--chat-template-kwargs", run.chat_template_kwargs.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
            anyhow::bail!("{flag} is for decoder-only models; this one is {kind} (use --prefix)");
        }
        if let Some(prefix) = prefix {
            summarizer.prefix = prefix.to_string();
        }
        return Ok(());
    };
    if prefix.is_some() {
        anyhow::bail!("--prefix is for encoder-decoder models; {kind} is prompted: use --prompt");
    }
    if let Some(template) = &run.prompt {
        bartleby_core::pipeline::Prompting::check_template(template).map_err(|e| {
            anyhow::anyhow!("--prompt: {}", e.to_string().trim_start_matches("input: "))
        })?;
        prompting.template = template.clone();
    }
    prompting.system = run.system.clone();
    prompting.use_chat = !run.no_chat_template;
    if let Some(json) = &run.chat_template_kwargs {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| anyhow::anyhow!("--chat-template-kwargs: not valid JSON: {e}"))?;
        match value {
            serde_json::Value::Object(map) => prompting.chat_kwargs = map,
            other => anyhow::bail!("--chat-template-kwargs: expected a JSON object, got {other}"),
        }
    }
    prompting.now_unix_seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64);
    if prompting.use_chat && prompting.chat.is_none() {
        tracing::info!(
            "{kind}: the model has no chat template; the prompt is tokenized as plain text"
        );
    }
    if summarizer.config_asks_sampling && !do_sample {
        eprintln!(
            "note: the model's generation_config.json asks for sampling (do_sample); Bartleby decodes \
             deterministically (greedy / beam search); --do-sample samples"
        );
    }
    Ok(())
}

/// A loaded model with the generation settings and input window it will use.
pub struct Generator {
    pub summarizer: Summarizer,
    pub gen: GenerationConfig,
    pub max_input: usize,
    pub long: LongOptions,
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
        apply_prompting(
            &mut summarizer,
            &run.prompting,
            run.prefix.as_deref(),
            run.generation.do_sample,
        )?;
        let (defaults, from_task_params) = summarizer.summarization_generation()?;
        if from_task_params {
            tracing::info!(
                "no generation_config.json: using config.json task_specific_params.summarization"
            );
        }
        let mut gen = run.generation.apply(&defaults)?;
        gen.sampling = run.generation.sampling(summarizer.sampling_defaults);
        let max_input = run.max_input_tokens.unwrap_or_else(|| {
            let window = summarizer.max_input_tokens();
            cap.map_or(window, |c| c.min(window))
        });
        summarizer.validate(&gen, max_input).with_context(|| {
            format!(
                "{model}: the generation settings (generation_config.json with the flags on top)"
            )
        })?;
        if run.long == LongMode::Truncate
            && (run.chunk_overlap > 0 || run.partial_max_new_tokens.is_some())
        {
            anyhow::bail!("--chunk-overlap and --partial-max-new-tokens need --long chunk");
        }
        let long = LongOptions {
            mode: run.long,
            overlap_tokens: run.chunk_overlap,
            partial_max_new_tokens: run.partial_max_new_tokens,
        };
        long.validate(max_input).map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string().replace("chunk overlap", "--chunk-overlap")
            )
        })?;
        Ok(Self {
            summarizer,
            gen,
            max_input,
            long,
        })
    }

    /// Checks every document before any work, so an error names the document. (With
    /// `--long chunk` the whole text is checked: every token of it is read.)
    pub fn check_documents(&self, docs: &[Document], source: &str) -> Result<()> {
        let window = match self.long.mode {
            LongMode::Truncate => self.max_input,
            LongMode::Chunk => usize::MAX,
        };
        for doc in docs {
            self.summarizer
                .check_input(&doc.text, window)
                .with_context(|| format!("{source}: document id {}", doc.id))?;
        }
        Ok(())
    }

    /// The progress bar of [`Self::summarize_all`] over `n` documents: hidden for a few of them,
    /// except with `--long chunk` where a long one takes many windows (shown as its message).
    pub fn progress_bar(&self, n: usize, action: &str, items: &str) -> indicatif::ProgressBar {
        match self.long.mode {
            LongMode::Truncate => crate::progress::bar_over(n, 3, action, items),
            LongMode::Chunk => crate::progress::bar_with_message(n as u64, 0, action, items),
        }
    }

    /// Summarizes `docs` in batches of `batch_size`, in order, handing each document's summaries
    /// (best first) and how they were made to `each`; `bar` advances per batch (with `--long
    /// chunk`, its message shows the windows of the level in progress).
    pub fn summarize_all(
        &self,
        docs: &[Document],
        batch_size: usize,
        source: &str,
        bar: &indicatif::ProgressBar,
        mut each: impl FnMut(&Document, Vec<Summary>, LongInfo) -> Result<()>,
    ) -> Result<()> {
        // Truncate: batches of documents. Chunk: the windows of a group of documents are
        // batched together, so a group is as many documents as a batch.
        for chunk in docs.chunks(batch_size) {
            let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
            let mut on_event = |event: bartleby_core::LongEvent<'_>| {
                if let bartleby_core::LongEvent::Windows { level, done, total } = event {
                    if self.long.mode == LongMode::Chunk {
                        bar.set_message(format!("level {level}: {done}/{total} windows"));
                    }
                }
            };
            let results = self
                .summarizer
                .summarize_long(
                    &texts,
                    &self.gen,
                    self.max_input,
                    &self.long,
                    batch_size,
                    &mut on_event,
                )
                .map_err(|e| {
                    // Name the document when the core says which one failed.
                    let doc = match &e {
                        bartleby_core::Error::InputAt { index, .. } => chunk.get(*index),
                        _ => None,
                    };
                    let what = match doc {
                        Some(d) => format!("{source}: document id {}", d.id),
                        None => format!("{source}: documents from id {}", chunk[0].id),
                    };
                    anyhow::Error::new(e).context(what)
                })?;
            for (doc, (summaries, info)) in chunk.iter().zip(results) {
                each(doc, summaries, info)?;
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }
}
