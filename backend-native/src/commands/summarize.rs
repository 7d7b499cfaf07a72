//! `bartleby summarize`: a thin shell over [`bartleby_core::Summarizer`] (through
//! [`crate::summarizer::Generator`]).

use crate::device;
use crate::input::read_documents;
use crate::output::Sink;
use crate::summarizer::{Generator, RunArgs};
use anyhow::Result;
use bartleby_core::LongMode;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// Model directory (config.json, model.safetensors, tokenizer) or Hugging Face hub id;
    /// without it, the shipped default model bartleby-small (models/bartleby-small).
    #[arg(long)]
    pub model: Option<String>,
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

pub fn run(args: SummarizeArgs) -> Result<()> {
    crate::output::check_not_input(args.output.as_deref(), &args.input, "--input")?;
    let docs = read_documents(&args.input)?;
    let target = device::init_inference(args.run.device, args.run.f32_matmul)?;
    let started = Instant::now();
    let model = crate::model_files::model_or_default(args.model.as_deref())?;
    let generator = Generator::new(&model, &args.run, &target)?;
    let input_name = args.input.display().to_string();
    generator.check_documents(&docs, &input_name)?;

    let mut sink = Sink::open(args.output.as_deref())?;
    let bar = generator.progress_bar(docs.len(), "summarizing", "docs");
    let gen_started = Instant::now();
    let batch_size = args.run.batch_size as usize;
    generator.summarize_all(
        &docs,
        batch_size,
        &input_name,
        &bar,
        |doc, summaries, info| {
            let best = &summaries[0];
            let mut line = serde_json::json!({
                "id": doc.id,
                "summary": best.summary,
                "token_ids": best.token_ids,
                "input_tokens": info.input_tokens,
            });
            // How it was made: cut at the window, or from how many windows in how many levels.
            match generator.long.mode {
                LongMode::Truncate => line["truncated"] = info.truncated.into(),
                LongMode::Chunk => {
                    line["chunks"] = info.chunks.into();
                    line["levels"] = info.levels.into();
                }
            }
            if summaries.len() > 1 {
                line["candidates"] = serde_json::to_value(&summaries)?;
            }
            sink.write_line(&line.to_string())
        },
    )?;
    sink.finish()?;
    tracing::info!(
        "generated {} summaries in {:.3}s ({:.3}s in all)",
        docs.len(),
        gen_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
