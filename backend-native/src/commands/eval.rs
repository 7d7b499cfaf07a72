//! `bartleby eval`: summarize a dataset split with a model, score the summaries against the
//! references, analyse failures, and write predictions, metrics, a failure report and charts.
//!
//! The evaluation itself is [`crate::evaluation`] (shared with `benchmark`).

use crate::device;
use crate::evaluation::{self, print_summary, Spec};
use crate::output::{check_name, prepare_out_dir};
use crate::scoring::{parse_metrics, Metric, MetricArgs};
use crate::summarizer::RunArgs;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_long_help = EVAL_HELP)]
pub struct EvalArgs {
    /// Model directory (config.json, model.safetensors, tokenizer) or Hugging Face hub id;
    /// without it, the shipped default model bartleby-small (models/bartleby-small).
    #[arg(long)]
    pub model: Option<String>,
    /// Data: a .jsonl/.json/.csv file with `dialogue` and `summary` (optional `id`), a folder
    /// holding <split>.jsonl/.json/.csv, or a Hugging Face hub dataset id.
    #[arg(long)]
    pub data: String,
    /// Split to evaluate when --data is a folder or a hub dataset.
    #[arg(long, default_value = "validation")]
    pub split: String,
    /// Evaluate at most N rows: the first N, or with --seed a seeded random sample.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the --limit sample (SplitMix64 + Fisher–Yates; the same rows on every machine).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run name: the prefix of every output file (letters, digits, `-`, `_`, `.`).
    #[arg(long)]
    pub name: String,
    /// Output folder (created if missing).
    #[arg(long, default_value = "metrics")]
    pub out: PathBuf,
    #[command(flatten)]
    pub metric: MetricArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

const EVAL_HELP: &str = "\
Outputs (in --out, each written to a temporary file and renamed once everything succeeded):
  NAME_predictions.csv  id, source_text, reference_summary, generated_summary, rougeL_score
                        (per-example ROUGE-L F-measure; empty without the rouge metric)
  NAME_metrics.json     run description, generation settings used, corpus scores exactly as
                        `bartleby score` computes them (ROUGE {low, mid, high} bootstrap intervals,
                        corpus BLEU), mean lengths, failure counts, timing
  NAME_metrics.csv      the headline numbers as metric,value,low,high
  NAME_failures.md      failure categories (bartleby-core metrics::analysis) and worst examples
  NAME_rouge.png        ROUGE-1/2/L/Lsum F-measures with their bootstrap intervals
  NAME_rougeL_hist.png  histogram of the per-example ROUGE-L F-measure
  NAME_lengths.png      generated vs reference summary length (words)

Row selection: without --limit every row of the split; --limit N alone takes the first N rows;
--limit N --seed S takes a uniform sample of N rows (partial Fisher-Yates driven by SplitMix64
seeded with S), kept in file order. A limit above the number of rows takes every row.
";

/// Checks the arguments that need no file access.
fn check_args(args: &EvalArgs) -> Result<()> {
    check_name(&args.name)?;
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    if args.seed.is_some() && args.limit.is_none() {
        bail!("--seed selects a --limit sample: give --limit too");
    }
    Ok(())
}

pub fn run(args: EvalArgs) -> Result<()> {
    check_args(&args)?;
    let metrics = parse_metrics(&args.metric.metrics)?;
    if metrics.contains(&Metric::BertScore) {
        bail!(
            "--metrics: bertscore is not available yet in eval; score the predictions with \
             `bartleby score --metrics rouge,bleu,bertscore`"
        );
    }
    let spec = Spec {
        data: &args.data,
        split: &args.split,
        limit: args.limit,
        seed: args.seed,
        metrics: &metrics,
        metric: &args.metric,
        run: &args.run,
        input_cap: None,
        bars: None,
        command: "eval",
    };
    let (rows, rows_in_split) = evaluation::load_data(&spec)?;
    let _out = prepare_out_dir(&args.out)?;
    let model = crate::model_files::model_or_default(args.model.as_deref())?;
    let target = device::init_inference(args.run.device, args.run.f32_matmul)?;
    let outcome = evaluation::evaluate(
        &model,
        &args.name,
        &args.out,
        &spec,
        &target,
        &rows,
        rows_in_split,
    )?;
    print_summary(&args.name, &outcome.scores, &outcome.written);
    Ok(())
}
