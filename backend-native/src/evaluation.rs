//! One evaluation — summarize a dataset split with a model, score the summaries against the
//! references, analyse failures, write predictions, metrics, a failure report and charts — as
//! `bartleby eval` runs it for one model and `bartleby benchmark` for each candidate.
//!
//! Generation is `summarize`'s ([`Generator`], same flags), scoring is `score`'s
//! ([`score_pairs`], same flags), failure analysis is [`bartleby_core::metrics::analysis`]; the
//! metrics file is a [`bartleby_core::metrics::report::EvalReport`].

use crate::dataset::{self, Row};
use crate::device::Target;
use crate::input::{Document, Pair};
use crate::output::write_atomically;
use crate::plots::{self, Series};
use crate::scoring::{score_pairs, Metric, MetricArgs};
use crate::summarizer::{Generator, RunArgs};
use anyhow::Result;
use bartleby_core::metrics::analysis::{
    self, Category, ExampleAnalysis, FailureReport, Thresholds,
};
use bartleby_core::metrics::report::{
    category_name, CorpusScores, EvalReport, Failures, Lengths, ScoreReport, Selection, Timing,
    WorstExample, ROUGE_KEYS, ROUGE_LABELS,
};
use bartleby_core::{GenerationConfig, LongInfo, LongMode, LongOptions, Summary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Examples listed per failure category in `NAME_failures.md`.
const WORST_K: usize = 5;
/// Characters of a dialogue quoted in `NAME_failures.md`.
const DIALOGUE_EXCERPT: usize = 600;

/// What an evaluation reads and how it generates and scores: every `eval` flag but the model,
/// the run name and the output folder.
pub struct Spec<'a> {
    pub data: &'a str,
    pub split: &'a str,
    pub limit: Option<usize>,
    pub seed: Option<u64>,
    pub metrics: &'a [Metric],
    pub metric: &'a MetricArgs,
    pub run: &'a RunArgs,
    /// Without `--max-input-tokens`: cut inputs here when the model reads more.
    pub input_cap: Option<usize>,
    /// Where the examples bar goes when another bar (benchmark's, over models) is on screen.
    pub bars: Option<&'a indicatif::MultiProgress>,
    /// The command (`eval`, `benchmark`): the MLflow experiment's default name.
    pub command: &'a str,
}

impl Spec<'_> {
    /// `--device` as the flag spells it.
    pub fn device_name(&self) -> String {
        clap::ValueEnum::to_possible_value(&self.run.device)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// What an evaluation produced besides the files it wrote.
pub struct Outcome {
    /// The metrics file's contents.
    pub report: EvalReport,
    /// The scores of each example (ROUGE-L F among them).
    pub scores: ScoreReport,
    pub architecture: String,
    pub parameters: u64,
    pub written: Vec<PathBuf>,
}

/// Loads `model` (timed apart), summarizes `rows` (the selected rows of a split of
/// `rows_in_split`), scores and analyses them, and writes the `eval` outputs named `name` into
/// `out` (atomically: all of them or none).
pub fn evaluate(
    model: &str,
    name: &str,
    out: &Path,
    spec: &Spec<'_>,
    target: &Target,
    rows: &[Row],
    rows_in_split: usize,
) -> Result<Outcome> {
    let started = Instant::now();
    let generator = Generator::with_input_cap(model, spec.run, target, spec.input_cap)?;
    let load_seconds = started.elapsed().as_secs_f64();

    let gen_started = Instant::now();
    let (predictions, infos) = generate(&generator, rows, spec)?;
    let generation_seconds = gen_started.elapsed().as_secs_f64();

    let score_started = Instant::now();
    let report = score(rows, &predictions, spec.metrics, spec.metric)?;
    let analyses = analyze(&generator, rows, &predictions, &infos)?;
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
        "{name}: generation {generation_seconds:.3}s ({:.2} examples/s), scoring and analysis {scoring_seconds:.3}s",
        timing.examples_per_second
    );
    let run = EvalRun {
        name,
        model,
        spec,
        rows,
        predictions: &predictions,
        infos: &infos,
        report: &report,
        analyses: &analyses,
        failures: &failures,
        gen: &generator.gen,
        max_input: generator.max_input,
        long: &generator.long,
    };
    let (metrics, files) = run.files(rows_in_split, timing)?;
    let written = write_atomically(out, files)?;
    track(&metrics, &written, spec.command);
    let config = &generator.summarizer.config;
    Ok(Outcome {
        report: metrics,
        scores: report,
        architecture: config.architecture().to_string(),
        parameters: config.num_parameters() as u64,
        written,
    })
}

/// The selected rows of the split and the number of rows the split has.
pub fn load_data(spec: &Spec<'_>) -> Result<(Vec<Row>, usize)> {
    let all = dataset::load_rows(spec.data, spec.split)?;
    let rows_in_split = all.len();
    let rows = dataset::select(all, spec.limit, spec.seed);
    tracing::info!(
        "{} ({}): {rows_in_split} rows, evaluating {}",
        spec.data,
        spec.split,
        rows.len()
    );
    Ok((rows, rows_in_split))
}

/// Checks every dialogue, then summarizes them (best summary of each, and how it was made), with
/// a progress bar.
fn generate(
    generator: &Generator,
    rows: &[Row],
    spec: &Spec<'_>,
) -> Result<(Vec<Summary>, Vec<LongInfo>)> {
    let docs: Vec<Document> = rows
        .iter()
        .map(|r| Document {
            id: r.id.clone().into(),
            text: r.dialogue.clone(),
        })
        .collect();
    generator.check_documents(&docs, spec.data)?;
    let bar = generator.progress_bar(docs.len(), "evaluating", "examples");
    let bar = match spec.bars {
        Some(bars) => bars.add(bar),
        None => bar,
    };
    let mut out = Vec::with_capacity(docs.len());
    let mut infos = Vec::with_capacity(docs.len());
    generator.summarize_all(
        &docs,
        spec.run.batch_size as usize,
        spec.data,
        &bar,
        |_, mut summaries, info| {
            out.push(summaries.swap_remove(0));
            infos.push(info);
            Ok(())
        },
    )?;
    tracing::info!("generated {} summaries", out.len());
    Ok((out, infos))
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

/// Failure analysis of every example; input lengths from the model's tokenizer (what it reads:
/// the prefix, e.g. T5's "summarize: ", and the dialogue, untruncated).
fn analyze(
    generator: &Generator,
    rows: &[Row],
    predictions: &[Summary],
    infos: &[LongInfo],
) -> Result<Vec<ExampleAnalysis>> {
    let thresholds = Thresholds::default();
    rows.iter()
        .zip(predictions)
        .zip(infos)
        .map(|((row, pred), info)| {
            let example = analysis::Example {
                id: row.id.clone(),
                dialogue: &row.dialogue,
                reference: &row.summary,
                prediction: &pred.summary,
                input_tokens: info.input_tokens,
                // Tokens kept: with --long chunk every token is read (no TruncatedInput).
                max_input_tokens: match generator.long.mode {
                    LongMode::Truncate => generator.max_input,
                    LongMode::Chunk => generator.max_input.max(info.input_tokens),
                },
                // Everything after the decoder start token.
                prediction_tokens: Some(pred.token_ids.len().saturating_sub(1)),
            };
            Ok(analysis::analyze(&example, &thresholds))
        })
        .collect()
}

/// Predictions shown as text in the TensorBoard event file.
const TEXT_SAMPLE: usize = 8;

/// Everything one evaluation produced, ready to be written.
struct EvalRun<'a> {
    name: &'a str,
    model: &'a str,
    spec: &'a Spec<'a>,
    rows: &'a [Row],
    predictions: &'a [Summary],
    infos: &'a [LongInfo],
    report: &'a ScoreReport,
    analyses: &'a [ExampleAnalysis],
    failures: &'a FailureReport,
    gen: &'a GenerationConfig,
    max_input: usize,
    long: &'a LongOptions,
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
    /// The metrics report and every output file: (file name, contents).
    fn files(
        &self,
        rows_in_split: usize,
        timing: Timing,
    ) -> Result<(EvalReport, Vec<(String, Vec<u8>)>)> {
        let name = self.name;
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
        files.push((
            format!("{name}_{}", crate::tensorboard::FILE_NAME),
            self.events(&metrics)?,
        ));
        Ok((metrics, files))
    }

    /// The corpus scores (mid F-measures, BLEU) and the speed as TensorBoard scalars (step 0),
    /// for `tensorboard --logdir` over eval folders and `wandb sync`.
    fn events(&self, metrics: &EvalReport) -> Result<Vec<u8>> {
        let now = crate::tensorboard::now();
        let corpus = serde_json::to_value(&metrics.corpus)?;
        let mut line = serde_json::Map::new();
        for (k, v) in corpus.as_object().into_iter().flatten() {
            if let Some(x) = v.get("mid").and_then(|m| m.as_f64()).or(v.as_f64()) {
                line.insert(k.clone(), x.into());
            }
        }
        if let Some(t) = &metrics.timing {
            line.insert("examples_per_second".into(), t.examples_per_second.into());
        }
        line.insert("time".into(), now.into());
        let scalars = crate::tensorboard::scalars_of(&serde_json::Value::Object(line), "eval", &[]);
        // The first predictions as a Markdown table (TensorBoard's text plugin).
        let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
        let mut table = String::from("| id | reference | prediction |\n|---|---|---|\n");
        for (row, pred) in self.rows.iter().zip(self.predictions).take(TEXT_SAMPLE) {
            table += &format!(
                "| {} | {} | {} |\n",
                cell(&row.id),
                cell(&row.summary),
                cell(&pred.summary)
            );
        }
        let texts = [crate::tensorboard::Text {
            tag: "eval/predictions".into(),
            step: 0,
            text: table,
            wall_time: now,
        }];
        // The settings on TensorBoard's HParams dashboard (trial: the eval's name).
        let doc = serde_json::to_value(metrics)?;
        let mut settings = serde_json::Map::new();
        for key in SETTINGS {
            if !doc[key].is_null() {
                settings.insert(key.to_string(), doc[key].clone());
            }
        }
        let hparams = crate::tensorboard::HParams::from_json(
            &metrics.name,
            now,
            &serde_json::Value::Object(settings),
        );
        Ok(crate::tensorboard::event_file_full(
            now,
            Some(&hparams),
            &scalars,
            &texts,
        ))
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
            "input_tokens",
            "truncated",
            "chunks",
            "levels",
        ])?;
        for (i, (row, pred)) in self.rows.iter().zip(self.predictions).enumerate() {
            let score = self.rouge_l(i).map(|f| f.to_string()).unwrap_or_default();
            let info = &self.infos[i];
            w.write_record([
                &row.id,
                &row.dialogue,
                &row.summary,
                &pred.summary,
                &score,
                &info.input_tokens.to_string(),
                &info.truncated.to_string(),
                &info.chunks.to_string(),
                &info.levels.to_string(),
            ])?;
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
        let spec = self.spec;
        EvalReport {
            name: self.name.to_string(),
            model: self.model.to_string(),
            data: spec.data.to_string(),
            split: spec.split.to_string(),
            n: self.rows.len() as u64,
            selection: Some(Selection {
                rows_in_split,
                limit: spec.limit,
                seed: spec.seed,
                rule: match (spec.limit, spec.seed) {
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
            long: Some(self.long.clone()),
            batch_size: Some(spec.run.batch_size),
            device: Some(spec.device_name()),
            corpus: self.report.corpus.clone(),
            scoring: Some(self.report.settings.clone()),
            lengths: Some(lengths.clone()),
            failures: Some(failures.clone()),
            timing: Some(timing),
            bartleby_version: Some(env!("CARGO_PKG_VERSION").into()),
        }
    }

    fn failures_md(&self, f: &Failures) -> String {
        let spec = self.spec;
        let mut md = format!(
            "# Failure analysis: {}\n\nModel `{}`, data `{}` (split `{}`), {} examples; {} flagged \
             with at least one category. Rules and thresholds: bartleby-core `metrics::analysis` \
             (defaults; input window {} tokens).\n\n| category | examples | share |\n|---|---:|---:|\n",
            self.name, self.model, spec.data, spec.split, f.total, f.flagged, self.max_input
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
        let name = self.name;
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

/// One line of the corpus scores, then the files written.
pub fn print_summary(name: &str, report: &ScoreReport, written: &[PathBuf]) {
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

/// The fields of a metrics file that describe how it was made (MLflow params, TensorBoard hparams).
const SETTINGS: [&str; 11] = [
    "model",
    "data",
    "split",
    "n",
    "selection",
    "generation",
    "max_input_tokens",
    "long",
    "batch_size",
    "device",
    "scoring",
];

/// With MLFLOW_TRACKING_URI set: one MLflow run per evaluation (`eval`, each `benchmark`
/// candidate) in `MLFLOW_EXPERIMENT_NAME` (default: the command's name): the settings of the
/// metrics file as params, its corpus scores and speed as metrics (step 0), every output file
/// as an artifact. A server that is down is a warning.
fn track(report: &EvalReport, written: &[PathBuf], command: &str) {
    if crate::mlflow::tracking_uri().is_none() {
        return;
    }
    let mut tags = vec![
        (
            "mlflow.source.name".to_string(),
            format!("bartleby {command}"),
        ),
        ("mlflow.source.type".to_string(), "LOCAL".to_string()),
        ("bartleby.command".to_string(), command.to_string()),
        ("model".to_string(), report.model.clone()),
        (
            "data".to_string(),
            format!("{} ({})", report.data, report.split),
        ),
    ];
    if let Some(commit) = crate::mlflow::git_commit() {
        tags.push(("mlflow.source.git.commit".to_string(), commit));
    }
    let Some(mut run) = crate::mlflow::Run::start(command, &report.name, &tags, None) else {
        return;
    };
    let Ok(doc) = serde_json::to_value(report) else {
        return;
    };
    let mut params = Vec::new();
    for key in SETTINGS {
        crate::mlflow::flatten(key, &doc[key], &mut params);
    }
    run.log_params(&params);
    let mut metrics = Vec::new();
    for (k, v) in doc["corpus"].as_object().into_iter().flatten() {
        if let Some(x) = v.get("mid").and_then(|m| m.as_f64()).or(v.as_f64()) {
            metrics.push((k.clone(), x));
        }
    }
    if let Some(t) = doc["timing"].as_object() {
        for (k, v) in t {
            if let Some(x) = v.as_f64() {
                metrics.push((format!("timing/{k}"), x));
            }
        }
    }
    let ms = (crate::tensorboard::now() * 1e3) as i64;
    run.log_metrics(0, ms, &metrics);
    for f in written {
        run.log_artifact(f, "");
    }
    run.finish(true);
}
