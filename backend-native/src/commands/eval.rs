//! `bartleby eval`: summarize a dataset split with a model, score the summaries against the
//! references, analyse failures, and write predictions, metrics, a failure report and charts.
//!
//! Generation is `summarize`'s ([`Generator`], same flags), scoring is `score`'s
//! ([`score_pairs`], same flags), failure analysis is [`bartleby_core::metrics::analysis`]; the
//! metrics file is a [`bartleby_core::metrics::report::EvalReport`].

use crate::dataset::{self, Row};
use crate::device;
use crate::input::{Document, Pair};
use crate::output::{check_name, prepare_out_dir, write_atomically};
use crate::plots::{self, Series};
use crate::progress;
use crate::scoring::{parse_metrics, score_pairs, Metric, MetricArgs};
use crate::summarizer::{Generator, RunArgs};
use anyhow::{bail, Result};
use bartleby_core::metrics::analysis::{
    self, Category, ExampleAnalysis, FailureReport, Thresholds,
};
use bartleby_core::metrics::report::{
    category_name, CorpusScores, EvalReport, Failures, Lengths, ScoreReport, Selection, Timing,
    WorstExample, ROUGE_KEYS, ROUGE_LABELS,
};
use bartleby_core::{GenerationConfig, Summary};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
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

    let target = device::init_inference(args.run.device, args.run.f32_matmul)?;
    let generator = Generator::new(&args.model, &args.run, &target)?;
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
    let bar = progress::bar_over(docs.len(), 3, "evaluating", "examples");
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
            // What the model reads: the prefix (T5: "summarize: ") and the dialogue, untruncated.
            let input = format!("{}{}", generator.summarizer.prefix, row.dialogue);
            let input_tokens = generator.summarizer.tokenizer.encode(&input, None)?.len();
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
        let lengths = self.lengths();
        let failures = self.failure_summary();
        let metrics = self.metrics_doc(rows_in_split, &lengths, &failures, timing);
        let mut files = vec![
            (format!("{name}_predictions.csv"), self.predictions_csv()?),
            (
                format!("{name}_metrics.json"),
                (serde_json::to_string_pretty(&metrics)? + "\n").into_bytes(),
            ),
            (
                format!("{name}_metrics.csv"),
                metrics_csv(metrics.n, &metrics.corpus, &lengths, &timing, &failures)?,
            ),
            (
                format!("{name}_failures.md"),
                self.failures_md(&failures).into_bytes(),
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

    fn lengths(&self) -> Lengths {
        let a = self.analyses;
        Lengths {
            mean_prediction_words: mean(a.iter().map(|x| x.words.prediction as f64)),
            mean_reference_words: mean(a.iter().map(|x| x.words.reference as f64)),
            mean_dialogue_words: mean(a.iter().map(|x| x.words.dialogue as f64)),
            mean_input_tokens: mean(a.iter().map(|x| x.input_tokens as f64)),
            mean_generated_tokens: mean(a.iter().map(|x| x.prediction_tokens.unwrap_or(0) as f64)),
        }
    }

    /// The failure counts and, per category, its worst examples as the report lists them.
    fn failure_summary(&self) -> Failures {
        let f = self.failures;
        let worst: BTreeMap<Category, Vec<WorstExample>> = f
            .worst
            .iter()
            .map(|(cat, ranked)| {
                let examples = ranked
                    .iter()
                    .filter_map(|r| self.worst_example(&r.id, r.severity))
                    .collect();
                (*cat, examples)
            })
            .collect();
        Failures {
            total: f.total,
            flagged: f.flagged,
            counts: f.counts.clone(),
            thresholds: Thresholds::default(),
            worst,
        }
    }

    fn worst_example(&self, id: &str, severity: f64) -> Option<WorstExample> {
        let i = self.rows.iter().position(|r| r.id == id)?;
        let row = &self.rows[i];
        let texts = [
            row.dialogue.as_str(),
            row.summary.as_str(),
            self.predictions[i].summary.as_str(),
        ];
        Some(WorstExample::new(
            &self.analyses[i],
            severity,
            self.rouge_l(i),
            texts,
            DIALOGUE_EXCERPT,
        ))
    }

    fn metrics_doc(
        &self,
        rows_in_split: usize,
        lengths: &Lengths,
        failures: &Failures,
        timing: Timing,
    ) -> EvalReport {
        let args = self.args;
        let device = clap::ValueEnum::to_possible_value(&args.run.device)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        EvalReport {
            name: args.name.clone(),
            model: args.model.clone(),
            data: args.data.clone(),
            split: args.split.clone(),
            n: self.rows.len() as u64,
            selection: Some(Selection {
                rows_in_split,
                limit: args.limit,
                seed: args.seed,
                rule: match (args.limit, args.seed) {
                    (None, _) => "all rows",
                    (Some(_), None) => "first N rows",
                    (Some(_), Some(_)) => {
                        "seeded sample (SplitMix64 + partial Fisher-Yates), file order"
                    }
                }
                .into(),
            }),
            generation: Some(self.gen.clone()),
            max_input_tokens: Some(self.max_input),
            batch_size: Some(args.run.batch_size),
            device: Some(device),
            corpus: self.report.corpus.clone(),
            scoring: Some(self.report.settings.clone()),
            lengths: Some(lengths.clone()),
            failures: Some(failures.clone()),
            timing: Some(timing),
            bartleby_version: Some(env!("CARGO_PKG_VERSION").into()),
        }
    }

    fn failures_md(&self, f: &Failures) -> String {
        let args = self.args;
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
            for example in worst {
                md += &example_md(example);
            }
        }
        md
    }

    /// The PNG charts (ROUGE charts only when ROUGE was computed).
    fn charts(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let name = &self.args.name;
        let mut out = Vec::new();
        if let [Some(r1), Some(r2), Some(rl), Some(rlsum)] = self.report.corpus.rouge() {
            let series = [Series {
                name,
                values: [r1, r2, rl, rlsum].map(|i| i.scaled(100.0)).to_vec(),
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

/// One worst example in `NAME_failures.md`.
fn example_md(e: &WorstExample) -> String {
    let rouge = e
        .rouge_l
        .map(|f| format!(", ROUGE-L F {f:.3}"))
        .unwrap_or_default();
    let mut extra = String::new();
    if !e.not_in_dialogue.is_empty() {
        extra += &format!("- Not in the dialogue: {}\n", e.not_in_dialogue.join(", "));
    }
    if let Some(r) = &e.repeated {
        extra += &format!("- Repeated: \"{}\" ×{}\n", r.ngram, r.count);
    }
    let cut = if e.dialogue_truncated { "\n…" } else { "" };
    format!(
        "\n### `{}`: severity {:.3}{rouge}\n\n- Words: generated {}, reference {}, \
         dialogue {}; input tokens {} (window {})\n{extra}- Reference: {}\n- Generated: {}\n\n\
         ````text\n{}{cut}\n````\n",
        e.id,
        e.severity,
        e.prediction_words,
        e.reference_words,
        e.dialogue_words,
        e.input_tokens,
        e.max_input_tokens,
        e.reference,
        e.generated,
        e.dialogue,
    )
}

/// `metric,value,low,high` rows of the headline numbers.
fn metrics_csv(
    n: u64,
    corpus: &CorpusScores,
    lengths: &Lengths,
    timing: &Timing,
    failures: &Failures,
) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["metric", "value", "low", "high"])?;
    let num = |v: f64| v.to_string();
    w.write_record(["n", &n.to_string(), "", ""])?;
    for (label, i) in ROUGE_KEYS.into_iter().zip(corpus.rouge()) {
        if let Some(i) = i {
            w.write_record([label, &num(i.mid), &num(i.low), &num(i.high)])?;
        }
    }
    if let Some(b) = corpus.bleu {
        w.write_record(["bleu", &num(b), "", ""])?;
    }
    let l = lengths;
    for (label, v) in [
        ("mean_prediction_words", l.mean_prediction_words),
        ("mean_reference_words", l.mean_reference_words),
        ("mean_dialogue_words", l.mean_dialogue_words),
        ("mean_input_tokens", l.mean_input_tokens),
        ("mean_generated_tokens", l.mean_generated_tokens),
        ("examples_per_second", timing.examples_per_second),
    ] {
        w.write_record([label, &num(v), "", ""])?;
    }
    w.write_record(["failures_flagged", &failures.flagged.to_string(), "", ""])?;
    for (cat, count) in &failures.counts {
        let label = format!("failures_{}", category_name(*cat));
        w.write_record([&label, &count.to_string(), "", ""])?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

fn print_summary(name: &str, report: &ScoreReport, written: &[PathBuf]) {
    let c = &report.corpus;
    let mut parts = Vec::new();
    for (label, i) in ROUGE_LABELS.iter().zip(c.rouge()) {
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
