//! `bartleby eval`: summarize a dataset split with a model, score the summaries against the
//! references, analyse failures, and write predictions, metrics, a failure report and charts.
//!
//! Generation is `summarize`'s ([`Generator`], same flags), scoring is `score`'s
//! ([`score_pairs`], same flags), failure analysis is [`bartleby_core::metrics::analysis`].

use crate::dataset::{self, Row};
use crate::device;
use crate::input::Document;
use crate::output::Sink;
use crate::plots::{self, Ci, Series};
use crate::score_cmd::{parse_metrics, score_pairs, Metric, MetricArgs, Pair, ScoreReport};
use crate::summarize_cmd::{progress_bar, Generator, RunArgs};
use anyhow::{bail, Context, Result};
use bartleby_core::metrics::analysis::{
    self, Category, ExampleAnalysis, FailureReport, Thresholds,
};
use bartleby_core::{GenerationConfig, Summary};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Examples listed per failure category in `NAME_failures.md`.
const WORST_K: usize = 5;
/// Characters of a dialogue quoted in `NAME_failures.md`.
const DIALOGUE_EXCERPT: usize = 600;

#[derive(Args, Debug)]
#[command(after_long_help = EVAL_HELP)]
pub struct EvalArgs {
    /// Model directory (config.json, model.safetensors, tokenizer) or Hugging Face hub id.
    #[arg(long)]
    pub model: String,
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

/// Checks a run name used as a file-name prefix.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("--name {name:?}: use letters, digits, '-', '_' or '.' (not first), it prefixes file names");
    }
    Ok(())
}

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
    let started = Instant::now();
    check_args(&args)?;
    let metrics = parse_metrics(&args.metric.metrics)?;
    if metrics.contains(&Metric::BertScore) {
        bail!(
            "--metrics: bertscore is not available yet in eval; score the predictions with \
             `bartleby score --metrics rouge,bleu,bertscore`"
        );
    }
    let (rows, rows_in_split) = load_data(&args)?;
    prepare_out_dir(&args.out)?;

    let device = device::init_inference(args.run.device, args.run.f32_matmul)?;
    let generator = Generator::new(&args.model, &args.run, &device)?;
    let load_seconds = started.elapsed().as_secs_f64();

    let gen_started = Instant::now();
    let predictions = generate(&generator, &rows, &args)?;
    let generation_seconds = gen_started.elapsed().as_secs_f64();

    let score_started = Instant::now();
    let report = score(&rows, &predictions, &metrics, &args.metric)?;
    let analyses = analyze(&generator, &rows, &predictions)?;
    let failures = analysis::summarize_failures(&analyses, WORST_K);
    let scoring_seconds = score_started.elapsed().as_secs_f64();
    let timing = Timing {
        load_seconds,
        generation_seconds,
        examples_per_second: rows.len() as f64 / generation_seconds.max(1e-9),
        scoring_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        "generation {generation_seconds:.3}s ({:.2} examples/s), scoring and analysis {scoring_seconds:.3}s",
        timing.examples_per_second
    );

    let run = EvalRun {
        args: &args,
        rows: &rows,
        predictions: &predictions,
        report: &report,
        analyses: &analyses,
        failures: &failures,
        gen: &generator.gen,
        max_input: generator.max_input,
    };
    let files = run.files(rows_in_split, timing)?;
    let written = write_atomically(&args.out, files)?;
    print_summary(&args.name, &report, &written);
    Ok(())
}

/// The selected rows of the split and the number of rows the split has.
fn load_data(args: &EvalArgs) -> Result<(Vec<Row>, usize)> {
    let all = dataset::load_rows(&args.data, &args.split)?;
    let rows_in_split = all.len();
    let rows = dataset::select(all, args.limit, args.seed);
    tracing::info!(
        "{} ({}): {rows_in_split} rows, evaluating {}",
        args.data,
        args.split,
        rows.len()
    );
    Ok((rows, rows_in_split))
}

/// Checks every dialogue, then summarizes them (best summary of each), with a progress bar.
fn generate(generator: &Generator, rows: &[Row], args: &EvalArgs) -> Result<Vec<Summary>> {
    let docs: Vec<Document> = rows
        .iter()
        .map(|r| Document {
            id: r.id.clone().into(),
            text: r.dialogue.clone(),
        })
        .collect();
    generator.check_documents(&docs, &args.data)?;
    let bar = progress_bar(docs.len(), "evaluating", "examples");
    let mut out = Vec::with_capacity(docs.len());
    generator.summarize_all(
        &docs,
        args.run.batch_size as usize,
        &args.data,
        &bar,
        |_, mut summaries| {
            out.push(summaries.swap_remove(0));
            Ok(())
        },
    )?;
    tracing::info!("generated {} summaries", out.len());
    Ok(out)
}

/// Scores the predictions against the references exactly as `bartleby score` would.
fn score(
    rows: &[Row],
    predictions: &[Summary],
    metrics: &[Metric],
    metric_args: &MetricArgs,
) -> Result<ScoreReport> {
    let pairs: Vec<Pair> = rows
        .iter()
        .zip(predictions)
        .map(|(r, p)| Pair {
            id: r.id.clone().into(),
            prediction: p.summary.clone(),
            references: vec![r.summary.clone()],
        })
        .collect();
    score_pairs(&pairs, metrics, &metric_args.options())
}

/// Failure analysis of every example; input lengths from the model's tokenizer.
fn analyze(
    generator: &Generator,
    rows: &[Row],
    predictions: &[Summary],
) -> Result<Vec<ExampleAnalysis>> {
    let thresholds = Thresholds::default();
    rows.iter()
        .zip(predictions)
        .map(|(row, pred)| {
            let input_tokens = generator
                .summarizer
                .tokenizer
                .encode(&row.dialogue, None)?
                .len();
            let example = analysis::Example {
                id: row.id.clone(),
                dialogue: &row.dialogue,
                reference: &row.summary,
                prediction: &pred.summary,
                input_tokens,
                max_input_tokens: generator.max_input,
                // Everything after the decoder start token.
                prediction_tokens: Some(pred.token_ids.len().saturating_sub(1)),
            };
            Ok(analysis::analyze(&example, &thresholds))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Timing {
    load_seconds: f64,
    generation_seconds: f64,
    /// Examples per second of generation.
    examples_per_second: f64,
    scoring_seconds: f64,
    total_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Selection {
    rows_in_split: usize,
    limit: Option<usize>,
    seed: Option<u64>,
    rule: &'static str,
}

#[derive(Debug, Serialize)]
struct Lengths {
    mean_prediction_words: f64,
    mean_reference_words: f64,
    mean_dialogue_words: f64,
    mean_input_tokens: f64,
    mean_generated_tokens: f64,
}

#[derive(Debug, Serialize)]
struct Failures<'a> {
    total: usize,
    flagged: usize,
    counts: &'a std::collections::BTreeMap<Category, usize>,
    thresholds: Thresholds,
}

/// The `NAME_metrics.json` document.
#[derive(Debug, Serialize)]
struct MetricsDoc<'a> {
    name: &'a str,
    model: &'a str,
    data: &'a str,
    split: &'a str,
    n: usize,
    selection: Selection,
    generation: &'a GenerationConfig,
    max_input_tokens: usize,
    batch_size: u64,
    device: String,
    /// As `bartleby score`'s `corpus`: ROUGE F-measure intervals (0-1) and corpus BLEU (0-100).
    corpus: &'a crate::score_cmd::CorpusScores,
    /// As `bartleby score`'s `settings`.
    scoring: &'a crate::score_cmd::Settings,
    lengths: Lengths,
    failures: Failures<'a>,
    timing: Timing,
    bartleby_version: &'static str,
}

/// Everything one evaluation produced, ready to be written.
struct EvalRun<'a> {
    args: &'a EvalArgs,
    rows: &'a [Row],
    predictions: &'a [Summary],
    report: &'a ScoreReport,
    analyses: &'a [ExampleAnalysis],
    failures: &'a FailureReport,
    gen: &'a GenerationConfig,
    max_input: usize,
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

impl EvalRun<'_> {
    /// Every output file: (file name, contents).
    fn files(&self, rows_in_split: usize, timing: Timing) -> Result<Vec<(String, Vec<u8>)>> {
        let name = &self.args.name;
        let metrics = self.metrics_doc(rows_in_split, timing);
        let mut files = vec![
            (format!("{name}_predictions.csv"), self.predictions_csv()?),
            (
                format!("{name}_metrics.json"),
                (serde_json::to_string_pretty(&metrics)? + "\n").into_bytes(),
            ),
            (format!("{name}_metrics.csv"), metrics_csv(&metrics)?),
            (
                format!("{name}_failures.md"),
                self.failures_md().into_bytes(),
            ),
        ];
        files.extend(self.charts()?);
        Ok(files)
    }

    fn rouge_l(&self, i: usize) -> Option<f64> {
        self.report.per_example[i].rougeL.map(|s| s.fmeasure)
    }

    fn predictions_csv(&self) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "id",
            "source_text",
            "reference_summary",
            "generated_summary",
            "rougeL_score",
        ])?;
        for (i, (row, pred)) in self.rows.iter().zip(self.predictions).enumerate() {
            let score = self.rouge_l(i).map(|f| f.to_string()).unwrap_or_default();
            w.write_record([&row.id, &row.dialogue, &row.summary, &pred.summary, &score])?;
        }
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn metrics_doc(&self, rows_in_split: usize, timing: Timing) -> MetricsDoc<'_> {
        let a = self.analyses;
        let args = self.args;
        let device = clap::ValueEnum::to_possible_value(&args.run.device)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        MetricsDoc {
            name: &args.name,
            model: &args.model,
            data: &args.data,
            split: &args.split,
            n: self.rows.len(),
            selection: Selection {
                rows_in_split,
                limit: args.limit,
                seed: args.seed,
                rule: match (args.limit, args.seed) {
                    (None, _) => "all rows",
                    (Some(_), None) => "first N rows",
                    (Some(_), Some(_)) => {
                        "seeded sample (SplitMix64 + partial Fisher-Yates), file order"
                    }
                },
            },
            generation: self.gen,
            max_input_tokens: self.max_input,
            batch_size: args.run.batch_size,
            device,
            corpus: &self.report.corpus,
            scoring: &self.report.settings,
            lengths: Lengths {
                mean_prediction_words: mean(a.iter().map(|x| x.words.prediction as f64)),
                mean_reference_words: mean(a.iter().map(|x| x.words.reference as f64)),
                mean_dialogue_words: mean(a.iter().map(|x| x.words.dialogue as f64)),
                mean_input_tokens: mean(a.iter().map(|x| x.input_tokens as f64)),
                mean_generated_tokens: mean(
                    a.iter().map(|x| x.prediction_tokens.unwrap_or(0) as f64),
                ),
            },
            failures: Failures {
                total: self.failures.total,
                flagged: self.failures.flagged,
                counts: &self.failures.counts,
                thresholds: Thresholds::default(),
            },
            timing,
            bartleby_version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn failures_md(&self) -> String {
        let args = self.args;
        let f = self.failures;
        let mut md = format!(
            "# Failure analysis: {}\n\nModel `{}`, data `{}` (split `{}`), {} examples; {} flagged \
             with at least one category. Rules and thresholds: bartleby-core `metrics::analysis` \
             (defaults; input window {} tokens).\n\n| category | examples | share |\n|---|---:|---:|\n",
            args.name, args.model, args.data, args.split, f.total, f.flagged, self.max_input
        );
        for (cat, count) in &f.counts {
            let share = 100.0 * *count as f64 / f.total.max(1) as f64;
            md += &format!("| {} | {count} | {share:.1}% |\n", category_name(*cat));
        }
        for (cat, worst) in &f.worst {
            if worst.is_empty() {
                continue;
            }
            md += &format!("\n## {} (worst {})\n", category_name(*cat), worst.len());
            for ranked in worst {
                md += &self.example_md(&ranked.id, ranked.severity);
            }
        }
        md
    }

    fn example_md(&self, id: &str, severity: f64) -> String {
        let Some(i) = self.rows.iter().position(|r| r.id == id) else {
            return String::new();
        };
        let (row, a) = (&self.rows[i], &self.analyses[i]);
        let rouge = self
            .rouge_l(i)
            .map(|f| format!(", ROUGE-L F {f:.3}"))
            .unwrap_or_default();
        let mut extra = String::new();
        if !a.unsupported_numbers.is_empty() || !a.unsupported_names.is_empty() {
            let all: Vec<&str> = a
                .unsupported_numbers
                .iter()
                .chain(&a.unsupported_names)
                .map(String::as_str)
                .collect();
            extra += &format!("- Not in the dialogue: {}\n", all.join(", "));
        }
        if let Some(r) = a.repeated_ngrams.first() {
            extra += &format!("- Repeated: \"{}\" ×{}\n", r.ngram, r.count);
        }
        let dialogue: String = row.dialogue.chars().take(DIALOGUE_EXCERPT).collect();
        let cut = if dialogue.len() < row.dialogue.len() {
            "\n…"
        } else {
            ""
        };
        format!(
            "\n### `{id}`: severity {severity:.3}{rouge}\n\n- Words: generated {}, reference {}, \
             dialogue {}; input tokens {} (window {})\n{extra}- Reference: {}\n- Generated: {}\n\n\
             ````text\n{dialogue}{cut}\n````\n",
            a.words.prediction,
            a.words.reference,
            a.words.dialogue,
            a.input_tokens,
            a.max_input_tokens,
            one_line(&row.summary),
            one_line(&self.predictions[i].summary),
        )
    }

    /// The PNG charts (ROUGE charts only when ROUGE was computed).
    fn charts(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let name = &self.args.name;
        let mut out = Vec::new();
        let c = &self.report.corpus;
        if let (Some(r1), Some(r2), Some(rl), Some(rlsum)) =
            (c.rouge1, c.rouge2, c.rougeL, c.rougeLsum)
        {
            let pct = |i: crate::score_cmd::Interval| Ci {
                low: 100.0 * i.low,
                mid: 100.0 * i.mid,
                high: 100.0 * i.high,
            };
            let series = [Series {
                name,
                values: vec![pct(r1), pct(r2), pct(rl), pct(rlsum)],
            }];
            let title = format!(
                "{name}: ROUGE F1 with 95% bootstrap intervals (n = {})",
                self.rows.len()
            );
            let png = plots::interval_bars(&title, "F1 (%)", &ROUGE_LABELS, &series)?;
            out.push((format!("{name}_rouge.png"), png));
            let scores: Vec<f64> = (0..self.rows.len())
                .filter_map(|i| self.rouge_l(i))
                .collect();
            let title = format!("{name}: per-example ROUGE-L F1");
            let png = plots::histogram(&title, "ROUGE-L F1", &scores, 1.0, 20)?;
            out.push((format!("{name}_rougeL_hist.png"), png));
        }
        let points: Vec<(f64, f64)> = self
            .analyses
            .iter()
            .map(|a| (a.words.reference as f64, a.words.prediction as f64))
            .collect();
        let title = format!("{name}: summary length (words)");
        let png = plots::scatter(&title, "reference words", "generated words", &points)?;
        out.push((format!("{name}_lengths.png"), png));
        Ok(out)
    }
}

/// Chart labels of the four ROUGE types.
pub const ROUGE_LABELS: [&str; 4] = ["ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum"];

fn category_name(c: Category) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{c:?}"))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `metric,value,low,high` rows of the headline numbers.
fn metrics_csv(doc: &MetricsDoc) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["metric", "value", "low", "high"])?;
    let num = |v: f64| v.to_string();
    w.write_record(["n", &doc.n.to_string(), "", ""])?;
    let c = doc.corpus;
    for (label, i) in [
        ("rouge1", c.rouge1),
        ("rouge2", c.rouge2),
        ("rougeL", c.rougeL),
        ("rougeLsum", c.rougeLsum),
    ] {
        if let Some(i) = i {
            w.write_record([label, &num(i.mid), &num(i.low), &num(i.high)])?;
        }
    }
    if let Some(b) = c.bleu {
        w.write_record(["bleu", &num(b), "", ""])?;
    }
    let l = &doc.lengths;
    for (label, v) in [
        ("mean_prediction_words", l.mean_prediction_words),
        ("mean_reference_words", l.mean_reference_words),
        ("mean_dialogue_words", l.mean_dialogue_words),
        ("mean_input_tokens", l.mean_input_tokens),
        ("mean_generated_tokens", l.mean_generated_tokens),
        ("examples_per_second", doc.timing.examples_per_second),
    ] {
        w.write_record([label, &num(v), "", ""])?;
    }
    w.write_record([
        "failures_flagged",
        &doc.failures.flagged.to_string(),
        "",
        "",
    ])?;
    for (cat, count) in doc.failures.counts {
        let label = format!("failures_{}", category_name(*cat));
        w.write_record([&label, &count.to_string(), "", ""])?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

fn print_summary(name: &str, report: &ScoreReport, written: &[PathBuf]) {
    let c = &report.corpus;
    let mut parts = Vec::new();
    for (label, i) in ROUGE_LABELS
        .iter()
        .zip([c.rouge1, c.rouge2, c.rougeL, c.rougeLsum])
    {
        if let Some(i) = i {
            parts.push(format!(
                "{label} {:.2} [{:.2}, {:.2}]",
                100.0 * i.mid,
                100.0 * i.low,
                100.0 * i.high
            ));
        }
    }
    if let Some(b) = c.bleu {
        parts.push(format!("BLEU {b:.2}"));
    }
    println!("{name}: {}", parts.join(", "));
    for p in written {
        println!("wrote {}", p.display());
    }
}

/// Creates the output folder and checks that files can be created in it, before any work.
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    let name = dir.display();
    std::fs::create_dir_all(dir).with_context(|| format!("{name}: cannot create output folder"))?;
    if !dir.is_dir() {
        bail!("{name}: output folder is not a folder");
    }
    tempfile::Builder::new()
        .prefix(".bartleby-")
        .tempfile_in(dir)
        .with_context(|| format!("{name}: output folder is not writable"))?;
    Ok(())
}

/// Writes every `(file name, contents)` into `dir` through [`Sink`]: all contents go to
/// temporary files first and are renamed into place only once all were written, so a failure
/// leaves no partial output. Returns the paths written.
pub fn write_atomically(dir: &Path, files: Vec<(String, Vec<u8>)>) -> Result<Vec<PathBuf>> {
    let mut staged = Vec::with_capacity(files.len());
    for (file, bytes) in &files {
        let path = dir.join(file);
        let mut sink = Sink::open(Some(&path))?;
        let Sink::File { tmp, .. } = &mut sink else {
            unreachable!("a file path opens a file sink");
        };
        tmp.write_all(bytes)
            .with_context(|| format!("{}: write failed", path.display()))?;
        staged.push((path, sink));
    }
    staged
        .into_iter()
        .map(|(path, sink)| sink.finish().map(|()| path))
        .collect()
}
