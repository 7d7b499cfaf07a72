//! The data behind the "Dashboards" view: parsers for the files the CLI writes, the recomputation
//! of ROUGE/BLEU from a predictions file, SVG chart builders and table helpers.
//!
//! Plain Rust (no Leptos, no web-sys): it compiles natively, where it is tested, and for wasm32,
//! where `ui::dashboards` renders it.
//!
//! Files understood (formats as written by `backend-native`):
//!
//! | file | written by | parsed by |
//! |---|---|---|
//! | `NAME_metrics.json` (with the failure report) | `bartleby eval` | [`parse_metrics_json`] |
//! | `NAME_metrics.csv` (`metric,value,low,high`) | `bartleby eval` | [`parse_metrics_csv`] |
//! | `NAME_predictions.csv` | `bartleby eval` | [`parse_predictions`] |
//! | `NAME.json` (`baseline`, `rule`, `runs`, `warnings`) | `bartleby compare` | [`parse_comparison`] |
//! | `runs/NAME/metrics.jsonl` | `bartleby train` | [`parse_train_log`] |
//!
//! The JSON reports are read with their types in bartleby-core (`metrics::report`: the ones the
//! CLI writes them with). `NAME_failures.md` is not read: its categories and worst examples are
//! in `NAME_metrics.json` (`failures`).
//!
//! [`detect`] classifies any of them by name and content. Every error is one line that names the
//! file and the field, line or row at fault.

use bartleby_core::metrics::analysis::Category;
use bartleby_core::metrics::report::{
    self, category_name, rows_from_json, CompareReport, EvalReport, RankingRow, WorstExample,
};
use bartleby_core::metrics::{bleu, rouge};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::fmt::Write as _;

// ---------------------------------------------------------------------------------------------
// Scores

/// The ROUGE keys and labels, and the bootstrap interval (`low`, `mid`, `high`, on the scale of
/// the file: ROUGE 0-1), as the reports define them.
pub use bartleby_core::metrics::report::{Interval, ROUGE_KEYS, ROUGE_LABELS};

/// The headline scores of one evaluated run: what the comparison chart shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunScores {
    pub name: String,
    pub n: Option<u64>,
    /// ROUGE F-measure intervals (0-1) in [`ROUGE_KEYS`] order; `None` when not computed.
    pub rouge: [Option<Interval>; 4],
    /// Corpus BLEU (0-100).
    pub bleu: Option<f64>,
}

/// Where an [`EvalMetrics`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsSource {
    Json,
    Csv,
}

/// `NAME_metrics.json` (or the headline numbers of `NAME_metrics.csv`) of `bartleby eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalMetrics {
    pub file: String,
    pub source: MetricsSource,
    pub scores: RunScores,
    pub model: Option<String>,
    pub data: Option<String>,
    pub split: Option<String>,
    /// `scoring.rouge` of the JSON; `None` for the CSV, or a JSON without ROUGE.
    pub rouge_settings: Option<report::RougeSettings>,
    pub failures_total: Option<u64>,
    pub failures_flagged: Option<u64>,
    /// Examples per failure category (snake_case names), in file order.
    pub failure_counts: Vec<(String, u64)>,
    /// Further numbers: `lengths.*` and `timing.*` of the JSON, the other rows of the CSV.
    pub numbers: Vec<(String, f64)>,
    /// The failure categories and worst examples (`failures` of the JSON).
    pub failure_report: Option<FailureReport>,
}

// ---------------------------------------------------------------------------------------------
// Small JSON helpers for the training log (errors name the file and the field path)

fn num(v: &Value, path: &str, file: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("{file}: field \"{path}\" must be a number"))
}

fn opt_num(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    file: &str,
) -> Result<Option<f64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => num(v, &format!("{at}{key}"), file).map(Some),
    }
}

fn opt_u64(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    file: &str,
) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{file}: field \"{at}{key}\" must be a whole number")),
    }
}

fn parse_json(bytes: &[u8], file: &str) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{file}: invalid JSON: {e}"))
}

/// The last path component of `file` (`a/b/c.json` → `c.json`).
pub fn base_name(file: &str) -> &str {
    file.rsplit(['/', '\\']).next().unwrap_or(file)
}

/// `NAME` of `dir/NAME_suffix` when the base name ends with `suffix`.
fn run_name<'a>(file: &'a str, suffix: &str) -> Option<&'a str> {
    base_name(file)
        .strip_suffix(suffix)
        .filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// NAME_metrics.json / NAME_metrics.csv

/// Parses `NAME_metrics.json` of `bartleby eval`.
pub fn parse_metrics_json(file: &str, bytes: &[u8]) -> Result<EvalMetrics, String> {
    let doc = parse_json(bytes, file)?;
    metrics_from_value(file, &doc)
}

fn metrics_from_value(file: &str, doc: &Value) -> Result<EvalMetrics, String> {
    let r: EvalReport = report::from_value(doc, file, "a NAME_metrics.json of bartleby eval")?;
    let rouge_settings = r.scoring.as_ref().and_then(|s| s.rouge.clone());
    // `lengths.*` and `timing.*`, each section in key order.
    let mut numbers = Vec::new();
    for (section, v) in [
        ("lengths", serde_json::to_value(&r.lengths)),
        ("timing", serde_json::to_value(r.timing)),
    ] {
        if let Ok(Value::Object(map)) = v {
            for (k, v) in map {
                if let Some(x) = v.as_f64() {
                    numbers.push((format!("{section}.{k}"), x));
                }
            }
        }
    }
    let failures = r.failures.as_ref();
    Ok(EvalMetrics {
        file: file.to_string(),
        source: MetricsSource::Json,
        scores: RunScores {
            name: r.name.clone(),
            n: Some(r.n),
            rouge: r.corpus.rouge(),
            bleu: r.corpus.bleu,
        },
        model: Some(r.model.clone()),
        data: Some(r.data.clone()),
        split: Some(r.split.clone()),
        rouge_settings,
        failures_total: failures.map(|f| f.total as u64),
        failures_flagged: failures.map(|f| f.flagged as u64),
        failure_counts: failures.map_or_else(Vec::new, |f| {
            f.counts
                .iter()
                .map(|(c, n)| (category_name(*c), *n as u64))
                .collect()
        }),
        numbers,
        failure_report: failures.map(|f| failure_report(file, &r, f)),
    })
}

/// Parses `NAME_metrics.csv` (`metric,value,low,high`) of `bartleby eval`; the run name is the
/// `NAME` of the file name.
pub fn parse_metrics_csv(file: &str, bytes: &[u8]) -> Result<EvalMetrics, String> {
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| format!("{file}: invalid CSV header: {e}"))?
        .clone();
    let cols: Vec<&str> = header.iter().collect();
    if cols.first().map(|c| c.trim_start_matches('\u{feff}')) != Some("metric")
        || cols.get(1) != Some(&"value")
    {
        return Err(format!(
            "{file}: expected the header metric,value,low,high (a NAME_metrics.csv of bartleby eval)"
        ));
    }
    let name = run_name(file, "_metrics.csv")
        .unwrap_or_else(|| base_name(file).trim_end_matches(".csv"))
        .to_string();
    let mut m = EvalMetrics {
        file: file.to_string(),
        source: MetricsSource::Csv,
        scores: RunScores {
            name,
            n: None,
            rouge: [None; 4],
            bleu: None,
        },
        model: None,
        data: None,
        split: None,
        rouge_settings: None,
        failures_total: None,
        failures_flagged: None,
        failure_counts: Vec::new(),
        numbers: Vec::new(),
        failure_report: None,
    };
    for record in reader.records() {
        let record = record.map_err(|e| format!("{file}: invalid CSV: {e}"))?;
        let line = record.position().map_or(0, |p| p.line());
        let metric = record.get(0).unwrap_or_default();
        let parse = |col: usize, what: &str| -> Result<Option<f64>, String> {
            match record.get(col).map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => s.parse::<f64>().map(Some).map_err(|_| {
                    format!("{file} line {line}: {what} of \"{metric}\" is not a number: {s:?}")
                }),
            }
        };
        let value = parse(1, "value")?
            .ok_or_else(|| format!("{file} line {line}: \"{metric}\" has no value"))?;
        if let Some(k) = ROUGE_KEYS.iter().position(|&k| k == metric) {
            let (low, high) = (parse(2, "low")?, parse(3, "high")?);
            m.scores.rouge[k] = Some(Interval {
                low: low.unwrap_or(value),
                mid: value,
                high: high.unwrap_or(value),
            });
        } else if metric == "bleu" {
            m.scores.bleu = Some(value);
        } else if metric == "n" {
            m.scores.n = Some(whole(value, file, line, metric)?);
        } else if metric == "failures_flagged" {
            m.failures_flagged = Some(whole(value, file, line, metric)?);
        } else if let Some(cat) = metric.strip_prefix("failures_") {
            m.failure_counts
                .push((cat.to_string(), whole(value, file, line, metric)?));
        } else {
            m.numbers.push((metric.to_string(), value));
        }
    }
    sort_categories(&mut m.failure_counts);
    if m.scores.rouge.iter().all(Option::is_none) && m.scores.bleu.is_none() {
        return Err(format!(
            "{file}: no rouge1/rouge2/rougeL/rougeLsum or bleu row"
        ));
    }
    Ok(m)
}

/// Rank of a failure category name in bartleby-core's `Category::ALL` order (unknown last).
fn category_rank(name: &str) -> usize {
    Category::ALL
        .iter()
        .position(|c| category_name(*c) == name)
        .unwrap_or(Category::ALL.len())
}

/// Sorts `(category, count)` pairs in the order `bartleby eval` writes them.
fn sort_categories(counts: &mut [(String, u64)]) {
    counts.sort_by(|a, b| {
        category_rank(&a.0)
            .cmp(&category_rank(&b.0))
            .then(a.0.cmp(&b.0))
    });
}

fn whole(v: f64, file: &str, line: u64, metric: &str) -> Result<u64, String> {
    if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 {
        Ok(v as u64)
    } else {
        Err(format!(
            "{file} line {line}: \"{metric}\" must be a whole number, not {v}"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// NAME_predictions.csv

/// One row of `NAME_predictions.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    pub id: String,
    /// `source_text`.
    pub dialogue: String,
    /// `reference_summary`.
    pub reference: String,
    /// `generated_summary`.
    pub prediction: String,
    /// `rougeL_score`: per-example ROUGE-L F-measure (0-1); `None` when the cell is empty.
    pub rouge_l: Option<f64>,
}

/// `NAME_predictions.csv` of `bartleby eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub file: String,
    /// `NAME` of the file name.
    pub name: String,
    pub rows: Vec<PredictionRow>,
}

/// The columns of `NAME_predictions.csv`, as `bartleby eval` writes them.
pub const PREDICTION_COLUMNS: [&str; 5] = [
    "id",
    "source_text",
    "reference_summary",
    "generated_summary",
    "rougeL_score",
];

/// Parses `NAME_predictions.csv` (columns found by header name, in any order).
pub fn parse_predictions(file: &str, bytes: &[u8]) -> Result<Predictions, String> {
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| format!("{file}: invalid CSV header: {e}"))?
        .clone();
    let mut idx = [0usize; 5];
    for (slot, col) in idx.iter_mut().zip(PREDICTION_COLUMNS) {
        *slot = header
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == col)
            .ok_or_else(|| format!("{file}: missing column \"{col}\""))?;
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("{file}: invalid CSV: {e}"))?;
        let line = record.position().map_or(0, |p| p.line());
        let cell = |k: usize| {
            record.get(idx[k]).ok_or_else(|| {
                format!(
                    "{file} line {line}: missing column \"{}\"",
                    PREDICTION_COLUMNS[k]
                )
            })
        };
        let score = cell(4)?.trim();
        let rouge_l = if score.is_empty() {
            None
        } else {
            Some(score.parse::<f64>().map_err(|_| {
                format!("{file} line {line}: \"rougeL_score\" is not a number: {score:?}")
            })?)
        };
        rows.push(PredictionRow {
            id: cell(0)?.to_string(),
            dialogue: cell(1)?.to_string(),
            reference: cell(2)?.to_string(),
            prediction: cell(3)?.to_string(),
            rouge_l,
        });
    }
    let name = run_name(file, "_predictions.csv")
        .unwrap_or_else(|| base_name(file).trim_end_matches(".csv"))
        .to_string();
    Ok(Predictions {
        file: file.to_string(),
        name,
        rows,
    })
}

// ---------------------------------------------------------------------------------------------
// Failure reports (`failures` of NAME_metrics.json)

/// One failure category's count (the table at the top of `NAME_failures.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryCount {
    /// snake_case name (`too_short`, ...).
    pub category: String,
    pub count: u64,
    /// Share of all examples, in percent (one decimal, as `NAME_failures.md` prints it).
    pub share_pct: f64,
}

/// One of the worst examples listed under a category, as `NAME_failures.md` shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FailureExample {
    pub id: String,
    pub severity: f64,
    pub rouge_l: Option<f64>,
    /// `- Words: ...` as written (generated / reference / dialogue words, input tokens, window).
    pub words: Option<String>,
    /// `- Not in the dialogue: ...`: unsupported numbers and names.
    pub not_in_dialogue: Vec<String>,
    /// `- Repeated: "ngram" ×N`, as written after `Repeated: `.
    pub repeated: Option<String>,
    pub reference: String,
    pub generated: String,
    /// The quoted dialogue (the first 600 characters).
    pub dialogue: String,
    /// Whether the quote was cut (a final `…` line).
    pub dialogue_truncated: bool,
    /// Any other `- Key: value` line.
    pub notes: Vec<String>,
}

/// A failure category with its worst examples.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureCategory {
    pub category: String,
    pub examples: Vec<FailureExample>,
}

/// The failure report of a `bartleby eval` run (what `NAME_failures.md` shows).
#[derive(Debug, Clone, PartialEq)]
pub struct FailureReport {
    pub file: String,
    pub name: String,
    pub model: Option<String>,
    pub data: Option<String>,
    pub split: Option<String>,
    pub total: Option<u64>,
    pub flagged: Option<u64>,
    /// The model's input window (tokens).
    pub input_window: Option<u64>,
    /// Every category (zero counts included), in bartleby-core's order.
    pub counts: Vec<CategoryCount>,
    /// The categories with examples, in bartleby-core's order.
    pub categories: Vec<FailureCategory>,
}

/// The failure report of `failures` in the metrics file `file`.
fn failure_report(file: &str, r: &EvalReport, f: &report::Failures) -> FailureReport {
    let counts = f
        .counts
        .iter()
        .map(|(c, &count)| {
            let share = 100.0 * count as f64 / f.total.max(1) as f64;
            CategoryCount {
                category: category_name(*c),
                count: count as u64,
                share_pct: format!("{share:.1}").parse().unwrap_or(share),
            }
        })
        .collect();
    let categories = f
        .worst
        .iter()
        .filter(|(_, worst)| !worst.is_empty())
        .map(|(c, worst)| FailureCategory {
            category: category_name(*c),
            examples: worst.iter().map(failure_example).collect(),
        })
        .collect();
    FailureReport {
        file: file.to_string(),
        name: r.name.clone(),
        model: Some(r.model.clone()),
        data: Some(r.data.clone()),
        split: Some(r.split.clone()),
        total: Some(f.total as u64),
        flagged: Some(f.flagged as u64),
        input_window: r.max_input_tokens.map(|w| w as u64),
        counts,
        categories,
    }
}

fn failure_example(e: &WorstExample) -> FailureExample {
    FailureExample {
        id: e.id.clone(),
        severity: e.severity,
        rouge_l: e.rouge_l,
        words: Some(format!(
            "generated {}, reference {}, dialogue {}; input tokens {} (window {})",
            e.prediction_words,
            e.reference_words,
            e.dialogue_words,
            e.input_tokens,
            e.max_input_tokens
        )),
        not_in_dialogue: e.not_in_dialogue.clone(),
        repeated: e
            .repeated
            .as_ref()
            .map(|r| format!("\"{}\" ×{}", r.ngram, r.count)),
        reference: e.reference.clone(),
        generated: e.generated.clone(),
        dialogue: e.dialogue.clone(),
        dialogue_truncated: e.dialogue_truncated,
        notes: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// bartleby compare JSON

/// A delta against the baseline (`deltas_vs_baseline` of `bartleby compare`), with its metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// `rouge1`..`rougeLsum` or `bleu`.
    pub metric: String,
    pub delta: f64,
    /// Whether the intervals do not overlap; `None` for BLEU.
    pub significant: Option<bool>,
}

/// One run of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRun {
    pub scores: RunScores,
    /// The metrics file the run was read from.
    pub source_file: Option<String>,
    pub model: Option<String>,
    pub data: Option<String>,
    pub split: Option<String>,
    /// Empty for the baseline.
    pub deltas: Vec<Delta>,
}

/// The JSON `bartleby compare` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub file: String,
    pub baseline: String,
    pub rule: Option<String>,
    pub runs: Vec<CompareRun>,
    pub warnings: Vec<String>,
}

/// Parses the JSON of `bartleby compare`.
pub fn parse_comparison(file: &str, bytes: &[u8]) -> Result<Comparison, String> {
    let doc = parse_json(bytes, file)?;
    comparison_from_value(file, &doc)
}

fn comparison_from_value(file: &str, doc: &Value) -> Result<Comparison, String> {
    let c: CompareReport = report::from_value(doc, file, "a bartleby compare JSON")?;
    let runs = c
        .runs
        .into_iter()
        .map(|r| CompareRun {
            scores: RunScores {
                name: r.name,
                n: r.n,
                rouge: r.scores.rouge(),
                bleu: r.scores.bleu,
            },
            source_file: r.file,
            model: r.model,
            data: r.data,
            split: r.split,
            deltas: r
                .deltas_vs_baseline
                .into_iter()
                .map(|(metric, d)| Delta {
                    metric,
                    delta: d.delta,
                    significant: d.significant,
                })
                .collect(),
        })
        .collect();
    Ok(Comparison {
        file: file.to_string(),
        baseline: c.baseline,
        rule: c.rule,
        runs,
        warnings: c.warnings,
    })
}

// ---------------------------------------------------------------------------------------------
// runs/NAME/metrics.jsonl of bartleby train

/// A logged training step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainStep {
    pub step: u64,
    pub epoch: Option<f64>,
    pub loss: f64,
    pub lr: Option<f64>,
    pub grad_norm: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub elapsed_s: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
}

/// A validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub step: u64,
    pub epoch: Option<f64>,
    pub val_loss: Option<f64>,
    /// Mean ROUGE F-measures (0-1) over the validation subset.
    pub rouge1: Option<f64>,
    pub rouge2: Option<f64>,
    pub rouge_l: Option<f64>,
}

/// `metrics.jsonl` of `bartleby train`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainLog {
    pub file: String,
    /// The run folder's name (`runs/NAME/metrics.jsonl`), else the file name.
    pub name: String,
    pub steps: Vec<TrainStep>,
    pub validations: Vec<Validation>,
    /// Lines with a step but neither `loss` nor validation fields (kept out of the charts).
    pub other_lines: usize,
}

/// The run name of a `runs/NAME/metrics.jsonl` path.
fn train_run_name(file: &str) -> String {
    let parts: Vec<&str> = file.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [.., dir, _] => dir.to_string(),
        [f] => f
            .strip_suffix("_metrics.jsonl")
            .or_else(|| f.strip_suffix(".jsonl"))
            .unwrap_or(f)
            .to_string(),
        [] => file.to_string(),
    }
}

/// Parses `runs/NAME/metrics.jsonl` of `bartleby train` (blank lines skipped).
pub fn parse_train_log(file: &str, bytes: &[u8]) -> Result<TrainLog, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{file}: not UTF-8 text"))?;
    let mut log = TrainLog {
        file: file.to_string(),
        name: train_run_name(file),
        steps: Vec::new(),
        validations: Vec::new(),
        other_lines: 0,
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        let at = format!("{file} line {n}");
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{at}: invalid JSON: {e}"))?;
        let Value::Object(o) = v else {
            return Err(format!("{at}: expected a JSON object"));
        };
        let step =
            opt_u64(&o, "step", "", &at)?.ok_or_else(|| format!("{at}: missing field \"step\""))?;
        let epoch = opt_num(&o, "epoch", "", &at)?;
        if let Some(loss) = opt_num(&o, "loss", "", &at)? {
            log.steps.push(TrainStep {
                step,
                epoch,
                loss,
                lr: opt_num(&o, "lr", "", &at)?,
                grad_norm: opt_num(&o, "grad_norm", "", &at)?,
                tokens_per_s: opt_num(&o, "tokens_per_s", "", &at)?,
                elapsed_s: opt_num(&o, "elapsed_s", "", &at)?,
                peak_rss_bytes: opt_u64(&o, "peak_rss_bytes", "", &at)?,
            });
        } else if ["val_loss", "rouge1", "rouge2", "rougeL"]
            .iter()
            .any(|k| o.contains_key(*k))
        {
            log.validations.push(Validation {
                step,
                epoch,
                val_loss: opt_num(&o, "val_loss", "", &at)?,
                rouge1: opt_num(&o, "rouge1", "", &at)?,
                rouge2: opt_num(&o, "rouge2", "", &at)?,
                rouge_l: opt_num(&o, "rougeL", "", &at)?,
            });
        } else {
            log.other_lines += 1;
        }
    }
    if log.steps.is_empty() && log.validations.is_empty() {
        return Err(format!("{file}: no training step or validation line"));
    }
    Ok(log)
}

// ---------------------------------------------------------------------------------------------
// Detecting a dropped file

/// `final_ranking.json` of `bartleby benchmark`: its rows, best first (core's report type).
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub file: String,
    pub rows: Vec<RankingRow>,
}

/// The composite scores of a ranking as horizontal bars (SVG), best first.
pub fn ranking_svg(r: &Ranking) -> String {
    let bars: Vec<(String, f64)> = r
        .rows
        .iter()
        .filter_map(|row| Some((row.model.clone(), row.composite_score?)))
        .collect();
    report::bar_chart_svg(&bars)
}

/// A file recognised by [`detect`].
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// `NAME_metrics.json` or `NAME_metrics.csv`.
    Metrics(EvalMetrics),
    Predictions(Predictions),
    Comparison(Comparison),
    Train(TrainLog),
    /// `final_ranking.json` of `bartleby benchmark`.
    Ranking(Ranking),
}

impl Loaded {
    /// What the file is, in a few words (for the page).
    pub fn kind(&self) -> &'static str {
        match self {
            Loaded::Metrics(m) if m.source == MetricsSource::Csv => "metrics (CSV)",
            Loaded::Metrics(_) => "metrics",
            Loaded::Predictions(_) => "predictions",
            Loaded::Comparison(_) => "comparison",
            Loaded::Train(_) => "training log",
            Loaded::Ranking(_) => "model ranking",
        }
    }

    /// The file name it was read from.
    pub fn file(&self) -> &str {
        match self {
            Loaded::Metrics(m) => &m.file,
            Loaded::Predictions(p) => &p.file,
            Loaded::Comparison(c) => &c.file,
            Loaded::Train(t) => &t.file,
            Loaded::Ranking(r) => &r.file,
        }
    }
}

const KNOWN_FILES: &str = "NAME_metrics.json, NAME_metrics.csv, NAME_predictions.csv \
(bartleby eval), a bartleby compare JSON or runs/NAME/metrics.jsonl (bartleby train)";

/// Why a `NAME_failures.md` is not loaded.
fn failures_md_error(name: &str) -> String {
    format!(
        "{name}: a failure report in Markdown; load NAME_metrics.json, whose \"failures\" hold \
         the same categories and worst examples"
    )
}

/// Whether the first line is a JSON object with a `step` (a metrics.jsonl line).
fn first_line_has_step(head: &str) -> bool {
    head.lines()
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .is_some_and(|v| v.get("step").is_some())
}

/// Classifies a file by its name and content and parses it. `name` may be a path.
pub fn detect(name: &str, bytes: &[u8]) -> Result<Loaded, String> {
    let base = base_name(name).to_ascii_lowercase();
    let ext = base.rsplit_once('.').map_or("", |(_, e)| e);
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let head = head.trim_start_matches('\u{feff}').trim_start();
    match ext {
        "png" | "svg" | "jpg" | "jpeg" => Err(format!(
            "{name}: a chart image; the dashboards draw their own charts from the JSON/CSV files"
        )),
        "jsonl" => parse_train_log(name, bytes).map(Loaded::Train),
        "md" | "markdown" => Err(failures_md_error(name)),
        "csv" => {
            let first = head.lines().next().unwrap_or("");
            if base.ends_with("_predictions.csv") || first.contains("generated_summary") {
                parse_predictions(name, bytes).map(Loaded::Predictions)
            } else if base.ends_with("_metrics.csv") || first.starts_with("metric,value") {
                parse_metrics_csv(name, bytes).map(Loaded::Metrics)
            } else {
                Err(format!(
                    "{name}: a CSV that is neither NAME_predictions.csv nor NAME_metrics.csv"
                ))
            }
        }
        "json" => {
            let doc = parse_json(bytes, name)?;
            let is_ranking = doc.as_array().is_some_and(|rows| {
                rows.first()
                    .and_then(Value::as_object)
                    .is_some_and(|r| r.contains_key("composite_score"))
            });
            if is_ranking {
                let rows = rows_from_json(bytes, name, "final_ranking.json")?;
                return Ok(Loaded::Ranking(Ranking {
                    file: name.to_string(),
                    rows,
                }));
            }
            let obj = doc.as_object();
            let has = |k: &str| obj.is_some_and(|o| o.contains_key(k));
            if has("runs") && has("baseline") {
                comparison_from_value(name, &doc).map(Loaded::Comparison)
            } else if has("corpus") && has("per_example") && !has("name") {
                Err(format!(
                    "{name}: a bartleby score report; load the NAME_metrics.json of bartleby eval instead"
                ))
            } else if has("corpus") {
                metrics_from_value(name, &doc).map(Loaded::Metrics)
            } else {
                Err(format!(
                    "{name}: a JSON without \"corpus\" (NAME_metrics.json) or \"runs\" (compare JSON)"
                ))
            }
        }
        _ if head.starts_with("# Failure analysis:") => Err(failures_md_error(name)),
        _ if first_line_has_step(head) => parse_train_log(name, bytes).map(Loaded::Train),
        _ if head.starts_with('{') => detect(&format!("{name}.json"), bytes)
            .map_err(|e| e.replacen(&format!("{name}.json"), name, 1)),
        _ => Err(format!(
            "{name}: not a file bartleby writes (expected {KNOWN_FILES})"
        )),
    }
}

/// Everything loaded so far, one entry per run name and kind (a later file of the same run and
/// kind replaces the earlier one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dashboard {
    pub metrics: Vec<EvalMetrics>,
    pub predictions: Vec<Predictions>,
    pub failures: Vec<FailureReport>,
    pub comparisons: Vec<Comparison>,
    pub train: Vec<TrainLog>,
    pub rankings: Vec<Ranking>,
}

fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) {
    match list.iter().position(|x| same(x, &item)) {
        Some(i) => list[i] = item,
        None => list.push(item),
    }
}

impl Dashboard {
    /// Adds a parsed file (a metrics JSON also adds its failure report).
    pub fn add(&mut self, loaded: Loaded) {
        match loaded {
            Loaded::Metrics(m) => {
                if let Some(f) = &m.failure_report {
                    upsert(&mut self.failures, f.clone(), |a, b| a.name == b.name);
                }
                upsert(&mut self.metrics, m, |a, b| {
                    a.scores.name == b.scores.name && a.source == b.source
                })
            }
            Loaded::Predictions(p) => upsert(&mut self.predictions, p, |a, b| a.name == b.name),
            Loaded::Comparison(c) => upsert(&mut self.comparisons, c, |a, b| a.file == b.file),
            Loaded::Train(t) => upsert(&mut self.train, t, |a, b| a.name == b.name),
            Loaded::Ranking(r) => upsert(&mut self.rankings, r, |a, b| a.file == b.file),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
            && self.predictions.is_empty()
            && self.failures.is_empty()
            && self.comparisons.is_empty()
            && self.train.is_empty()
            && self.rankings.is_empty()
    }

    /// The metrics of run `name` (the JSON when both the JSON and the CSV are loaded).
    pub fn metrics_of(&self, name: &str) -> Option<&EvalMetrics> {
        let of = |s| {
            self.metrics
                .iter()
                .find(|m| m.scores.name == name && m.source == s)
        };
        of(MetricsSource::Json).or_else(|| of(MetricsSource::Csv))
    }

    /// The runs of the comparison chart: every metrics file (the JSON over the CSV of the same
    /// run), then the runs of comparisons not loaded otherwise; in load order.
    pub fn chart_runs(&self) -> Vec<RunScores> {
        let mut out: Vec<RunScores> = Vec::new();
        for m in &self.metrics {
            if out.iter().any(|r| r.name == m.scores.name) {
                continue;
            }
            if let Some(best) = self.metrics_of(&m.scores.name) {
                out.push(best.scores.clone());
            }
        }
        for c in &self.comparisons {
            for r in &c.runs {
                if !out.iter().any(|x| x.name == r.scores.name) {
                    out.push(r.scores.clone());
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Recomputing ROUGE/BLEU from a predictions file

/// How [`recompute_with`] scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecomputeOptions {
    /// ROUGE with the Porter stemmer.
    pub stemmer: bool,
    /// Bootstrap resamples of the ROUGE intervals (0: no intervals).
    pub bootstrap_samples: u64,
    pub bootstrap_seed: u32,
}

impl Default for RecomputeOptions {
    /// Stemmed ROUGE, 1000 resamples, seed 0.
    fn default() -> Self {
        RecomputeOptions {
            stemmer: true,
            bootstrap_samples: 1000,
            bootstrap_seed: 0,
        }
    }
}

impl RecomputeOptions {
    /// The settings recorded in a metrics file (the defaults when it records none).
    pub fn from_metrics(m: &EvalMetrics) -> Self {
        m.rouge_settings
            .as_ref()
            .map_or_else(Self::default, |r| RecomputeOptions {
                stemmer: r.stemmer,
                bootstrap_samples: r.bootstrap_samples,
                bootstrap_seed: r.bootstrap_seed,
            })
    }
}

/// ROUGE and BLEU recomputed in the page from the rows of a predictions file.
#[derive(Debug, Clone, PartialEq)]
pub struct Recomputed {
    pub n: usize,
    pub options: RecomputeOptions,
    /// Mean F-measures (0-1) in [`ROUGE_KEYS`] order.
    pub rouge_mean: [f64; 4],
    /// Bootstrap intervals of the F-measures (as `bartleby score`'s `corpus`), when resampled.
    pub rouge: Option<[Interval; 4]>,
    /// sacrebleu-style corpus BLEU (0-100).
    pub bleu: f64,
    /// Per-example ROUGE-L F-measure, in row order.
    pub rouge_l: Vec<f64>,
    /// Rows whose `rougeL_score` differs from the recomputed one by more than 1e-9.
    pub rouge_l_mismatches: usize,
    /// Largest absolute difference to `rougeL_score` (0 when the file has none).
    pub rouge_l_max_diff: f64,
}

impl Recomputed {
    /// As a [`RunScores`] named `name` (intervals when resampled, else the means as points).
    pub fn scores(&self, name: &str) -> RunScores {
        let rouge = match self.rouge {
            Some(r) => r.map(Some),
            None => self.rouge_mean.map(|m| Some(Interval::point(m))),
        };
        RunScores {
            name: name.to_string(),
            n: Some(self.n as u64),
            rouge,
            bleu: Some(self.bleu),
        }
    }
}

/// [`recompute_with`] with the defaults (stemmed ROUGE, 1000 resamples, seed 0).
pub fn recompute(rows: &[PredictionRow]) -> Result<Recomputed, String> {
    recompute_with(rows, &RecomputeOptions::default())
}

/// ROUGE-1/2/L/Lsum (bartleby-core's rouge-score port, with its bootstrap) and corpus BLEU
/// (bartleby-core's sacrebleu port) of `rows`, one reference each, exactly as `bartleby eval`.
pub fn recompute_with(
    rows: &[PredictionRow],
    opts: &RecomputeOptions,
) -> Result<Recomputed, String> {
    if rows.is_empty() {
        return Err("recompute: no rows".into());
    }
    let per: Vec<rouge::RougeScores> = rows
        .iter()
        .map(|r| rouge::score(&r.prediction, &[r.reference.as_str()], opts.stemmer))
        .collect();
    let n = rows.len();
    let mut rouge_mean = [0.0; 4];
    for s in &per {
        for (m, x) in rouge_mean.iter_mut().zip(s.as_array()) {
            *m += x.fmeasure;
        }
    }
    rouge_mean = rouge_mean.map(|s| s / n as f64);
    let intervals = if opts.bootstrap_samples > 0 {
        rouge::aggregate(&per, opts.bootstrap_samples as usize, opts.bootstrap_seed).map(|a| {
            [a.rouge1, a.rouge2, a.rougeL, a.rougeLsum].map(|x| Interval {
                low: x.low.fmeasure,
                mid: x.mid.fmeasure,
                high: x.high.fmeasure,
            })
        })
    } else {
        None
    };
    let hyps: Vec<&str> = rows.iter().map(|r| r.prediction.as_str()).collect();
    let refs: Vec<&str> = rows.iter().map(|r| r.reference.as_str()).collect();
    let bleu = bleu::corpus_bleu(&hyps, &[refs.as_slice()])
        .map_err(|e| format!("recompute: {e}"))?
        .score;
    let rouge_l: Vec<f64> = per.iter().map(|s| s.rougeL.fmeasure).collect();
    let mut mismatches = 0;
    let mut max_diff: f64 = 0.0;
    for (row, here) in rows.iter().zip(&rouge_l) {
        if let Some(file) = row.rouge_l {
            let d = (file - here).abs();
            max_diff = max_diff.max(d);
            if d > 1e-9 {
                mismatches += 1;
            }
        }
    }
    Ok(Recomputed {
        n,
        options: *opts,
        rouge_mean,
        rouge: intervals,
        bleu,
        rouge_l,
        rouge_l_mismatches: mismatches,
        rouge_l_max_diff: max_diff,
    })
}

/// One line of the "file vs recomputed" table.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCheck {
    /// `ROUGE-1` .. `ROUGE-Lsum`, `BLEU`.
    pub label: &'static str,
    /// The file's value (ROUGE: the interval; BLEU: a point).
    pub file: Option<Interval>,
    pub here: Option<Interval>,
    /// Whether every bound agrees to 1e-9 (`None` when a side is missing).
    pub matches: Option<bool>,
}

/// The file's scores next to the recomputed ones.
pub fn check_against(file: &RunScores, here: &Recomputed) -> Vec<MetricCheck> {
    let close = |a: Interval, b: Interval| {
        (a.low - b.low).abs() <= 1e-9
            && (a.mid - b.mid).abs() <= 1e-9
            && (a.high - b.high).abs() <= 1e-9
    };
    let here_scores = here.scores("");
    let mut out: Vec<MetricCheck> = ROUGE_LABELS
        .iter()
        .enumerate()
        .map(|(k, &label)| {
            let (f, h) = (file.rouge[k], here_scores.rouge[k]);
            MetricCheck {
                label,
                file: f,
                here: h,
                matches: f.zip(h).map(|(f, h)| {
                    if here.rouge.is_some() {
                        close(f, h)
                    } else {
                        (f.mid - h.mid).abs() <= 1e-9
                    }
                }),
            }
        })
        .collect();
    let (f, h) = (
        file.bleu.map(Interval::point),
        Some(Interval::point(here.bleu)),
    );
    out.push(MetricCheck {
        label: "BLEU",
        file: f,
        here: h,
        matches: f.zip(h).map(|(f, h)| close(f, h)),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Table helpers

/// Columns the predictions table sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// File order.
    Row,
    /// Natural order (`a2` before `a10`).
    Id,
    RougeL,
    DialogueWords,
    ReferenceWords,
    PredictionWords,
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Natural string order: digit runs compare by value, the rest character by character.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let ea = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                let eb = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                let (da, db) = (
                    a[..ea].trim_start_matches('0'),
                    b[..eb].trim_start_matches('0'),
                );
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[ea..];
                b = &b[eb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
        }
    }
}

/// Indices of the rows whose id, dialogue, reference or prediction contains `query`
/// (case-insensitive; a blank query keeps every row), in row order.
pub fn filter_rows(rows: &[PredictionRow], query: &str) -> Vec<usize> {
    let q = query.trim().to_lowercase();
    if q.is_empty() {
        return (0..rows.len()).collect();
    }
    rows.iter()
        .enumerate()
        .filter(|(_, r)| {
            [&r.id, &r.dialogue, &r.reference, &r.prediction]
                .iter()
                .any(|t| t.to_lowercase().contains(&q))
        })
        .map(|(i, _)| i)
        .collect()
}

/// Sorts `indices` (into `rows`) by `key`; stable, ties in row order. Rows without a
/// ROUGE-L score come last in either direction.
pub fn sort_rows(rows: &[PredictionRow], indices: &mut [usize], key: SortKey, descending: bool) {
    let dir = |o: Ordering| if descending { o.reverse() } else { o };
    indices.sort_by(|&i, &j| {
        let (a, b) = (&rows[i], &rows[j]);
        let ord = match key {
            SortKey::Row => dir(i.cmp(&j)),
            SortKey::Id => dir(natural_cmp(&a.id, &b.id)),
            SortKey::RougeL => match (a.rouge_l, b.rouge_l) {
                (Some(x), Some(y)) => dir(x.total_cmp(&y)),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
            SortKey::DialogueWords => dir(words(&a.dialogue).cmp(&words(&b.dialogue))),
            SortKey::ReferenceWords => dir(words(&a.reference).cmp(&words(&b.reference))),
            SortKey::PredictionWords => dir(words(&a.prediction).cmp(&words(&b.prediction))),
        };
        ord.then(i.cmp(&j))
    });
}

/// [`filter_rows`] then [`sort_rows`].
pub fn table_view(
    rows: &[PredictionRow],
    query: &str,
    key: SortKey,
    descending: bool,
) -> Vec<usize> {
    let mut idx = filter_rows(rows, query);
    sort_rows(rows, &mut idx, key, descending);
    idx
}

// ---------------------------------------------------------------------------------------------
// SVG charts

/// Escapes text for HTML/SVG text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Series colours (colour-blind-safe Okabe–Ito order).
pub const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
];

/// About `target` round tick values covering `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    if !lo.is_finite() || !hi.is_finite() {
        return vec![0.0, 1.0];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let mut out = Vec::new();
    let mut v = start;
    while v < hi + step * 0.5 && out.len() < 50 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    if out.len() < 2 {
        out.push(start + step);
    }
    out
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn svg_open(w: f64, h: f64, class: &str, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\" font-family=\"sans-serif\" font-size=\"12\"><title>{t}</title><text x=\"{:.1}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\" class=\"chart-title\">{t}</text>",
        escape(class),
        w / 2.0,
        t = escape(title),
    )
}

fn empty_chart(class: &str, title: &str, message: &str) -> String {
    let mut s = svg_open(480.0, 80.0, class, title);
    let _ = write!(
        s,
        "<text x=\"240\" y=\"52\" text-anchor=\"middle\" class=\"chart-empty\">{}</text></svg>",
        escape(message)
    );
    s
}

/// Grouped bars: one group per metric (ROUGE-1/2/L/Lsum as F1 × 100, and BLEU when any run
/// has it), one bar per run, with whiskers from `low` to `high` where the run has an interval.
pub fn metrics_bar_chart_svg(runs: &[RunScores]) -> String {
    let title = "ROUGE F1 × 100 (95% bootstrap intervals) and BLEU";
    let mut groups: Vec<(&str, Vec<Option<Interval>>)> = Vec::new();
    for (k, label) in ROUGE_LABELS.iter().enumerate() {
        let vals: Vec<Option<Interval>> = runs
            .iter()
            .map(|r| {
                r.rouge[k].map(|i| Interval {
                    low: 100.0 * i.low,
                    mid: 100.0 * i.mid,
                    high: 100.0 * i.high,
                })
            })
            .collect();
        if vals.iter().any(Option::is_some) {
            groups.push((label, vals));
        }
    }
    let bleu: Vec<Option<Interval>> = runs.iter().map(|r| r.bleu.map(Interval::point)).collect();
    if bleu.iter().any(Option::is_some) {
        groups.push(("BLEU", bleu));
    }
    if groups.is_empty() {
        return empty_chart("dash-bars", title, "No run with ROUGE or BLEU loaded.");
    }
    let (w, h) = (760.0, 380.0);
    let (ml, mr, mt) = (52.0, 16.0, 34.0);
    let legend_rows = runs.len().div_ceil(3) as f64;
    let mb = 40.0 + 18.0 * legend_rows;
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let max = groups
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().map(|i| i.high.max(i.mid)))
        .fold(0.0f64, f64::max);
    let ticks = nice_ticks(0.0, max.max(1e-9), 5);
    let ymax = *ticks.last().unwrap_or(&1.0);
    let y = |v: f64| mt + ph - ph * (v / ymax).clamp(0.0, 1.0);
    let mut s = svg_open(w, h, "dash-bars", title);
    for t in &ticks {
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{ml}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            ml + pw,
            ml - 6.0,
            y(*t) + 4.0,
            tick_label(*t),
            yy = y(*t)
        );
    }
    let gw = pw / groups.len() as f64;
    let bw = (gw * 0.8) / runs.len().max(1) as f64;
    for (g, (label, vals)) in groups.iter().enumerate() {
        let gx = ml + g as f64 * gw + gw * 0.1;
        let _ = write!(
            s,
            "<text class=\"group-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            ml + (g as f64 + 0.5) * gw,
            mt + ph + 16.0,
            escape(label)
        );
        for (r, v) in vals.iter().enumerate() {
            let x = gx + r as f64 * bw;
            let color = PALETTE[r % PALETTE.len()];
            let Some(v) = v else {
                let _ = write!(
                    s,
                    "<text class=\"na\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">n/a</text>",
                    x + bw / 2.0,
                    mt + ph - 4.0
                );
                continue;
            };
            let tip = if v.low != v.high {
                format!(
                    "{}: {label} {:.2} [{:.2}, {:.2}]",
                    runs[r].name, v.mid, v.low, v.high
                )
            } else {
                format!("{}: {label} {:.2}", runs[r].name, v.mid)
            };
            let _ = write!(
                s,
                "<rect class=\"bar run-{r}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}</title></rect>",
                x + bw * 0.05,
                y(v.mid),
                bw * 0.9,
                (mt + ph - y(v.mid)).max(0.0),
                escape(&tip)
            );
            if v.low != v.high {
                let cx = x + bw / 2.0;
                let cap = (bw * 0.25).min(6.0);
                let _ = write!(
                    s,
                    "<g class=\"whisker\" stroke=\"#222\" stroke-width=\"1.2\"><line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{lo:.1}\" y2=\"{lo:.1}\"/><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{hi:.1}\" y2=\"{hi:.1}\"/></g>",
                    y(v.low),
                    y(v.high),
                    cx - cap,
                    cx + cap,
                    cx - cap,
                    cx + cap,
                    lo = y(v.low),
                    hi = y(v.high),
                );
            }
        }
    }
    let _ = write!(
        s,
        "<line x1=\"{ml}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
        ml + pw,
        mt + ph,
        mt + ph
    );
    legend(
        &mut s,
        runs.iter().map(|r| (r.name.as_str(), false)),
        ml,
        mt + ph + 34.0,
        pw,
    );
    s.push_str("</svg>");
    s
}

/// Legend entries laid out three per row.
fn legend<'a>(
    s: &mut String,
    names: impl Iterator<Item = (&'a str, bool)>,
    x0: f64,
    y0: f64,
    width: f64,
) {
    let col = width / 3.0;
    for (i, (name, dashed)) in names.enumerate() {
        let x = x0 + (i % 3) as f64 * col;
        let y = y0 + (i / 3) as f64 * 18.0;
        let color = PALETTE[i % PALETTE.len()];
        let dash = if dashed {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        let _ = write!(
            s,
            "<g class=\"legend-item\"><line x1=\"{x:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"6\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            x + 16.0,
            y - 4.0,
            y - 4.0,
            x + 22.0,
            y,
            escape(name)
        );
    }
}

/// One line of a [`line_chart_svg`].
#[derive(Debug, Clone, PartialEq)]
pub struct LineSeries {
    pub name: String,
    /// `(x, y)` points, drawn in order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A line chart of `series` (markers too when a series has at most 40 points).
pub fn line_chart_svg(
    class: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[LineSeries],
) -> String {
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    if pts().next().is_none() {
        return empty_chart(class, title, "Nothing to plot.");
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let xt = nice_ticks(x0, x1, 6);
    let yt = nice_ticks(y0, y1, 5);
    let (xa, xb) = (xt[0], *xt.last().unwrap());
    let (ya, yb) = (yt[0], *yt.last().unwrap());
    let (w, h) = (760.0, 340.0);
    let (ml, mr, mt) = (64.0, 16.0, 34.0);
    let mb = 52.0 + 18.0 * series.len().div_ceil(3) as f64;
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let px = |x: f64| ml + pw * (x - xa) / (xb - xa);
    let py = |y: f64| mt + ph - ph * (y - ya) / (yb - ya);
    let mut s = svg_open(w, h, class, title);
    for t in &yt {
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{ml}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            ml + pw,
            ml - 6.0,
            py(*t) + 4.0,
            tick_label(*t),
            yy = py(*t)
        );
    }
    for t in &xt {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            px(*t),
            mt + ph + 16.0,
            tick_label(*t)
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{ml}\" x2=\"{:.1}\" y1=\"{b:.1}\" y2=\"{b:.1}\" stroke=\"#333\"/><line x1=\"{ml}\" x2=\"{ml}\" y1=\"{mt}\" y2=\"{b:.1}\" stroke=\"#333\"/><text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text class=\"axis-label\" transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        ml + pw,
        ml + pw / 2.0,
        mt + ph + 34.0,
        escape(x_label),
        mt + ph / 2.0,
        escape(y_label),
        b = mt + ph,
    );
    for (i, ser) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let p: Vec<(f64, f64)> = ser
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if p.is_empty() {
            continue;
        }
        let d: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if ser.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let _ = write!(
            s,
            "<g class=\"series series-{i}\"><title>{}</title><polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\"{dash} points=\"{}\"/>",
            escape(&ser.name),
            d.join(" ")
        );
        if p.len() <= 40 {
            for &(x, y) in &p {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.8\" fill=\"{color}\"><title>{}: {} at {}</title></circle>",
                    px(x),
                    py(y),
                    escape(&ser.name),
                    tick_label(y),
                    tick_label(x)
                );
            }
        }
        s.push_str("</g>");
    }
    legend(
        &mut s,
        series.iter().map(|x| (x.name.as_str(), x.dashed)),
        ml,
        mt + ph + 52.0,
        pw,
    );
    s.push_str("</svg>");
    s
}

/// Training loss (solid) and validation loss (dashed) vs step, every run.
pub fn train_loss_svg(logs: &[TrainLog]) -> String {
    let mut series = Vec::new();
    for log in logs {
        series.push(LineSeries {
            name: format!("{} loss", log.name),
            points: log.steps.iter().map(|s| (s.step as f64, s.loss)).collect(),
            dashed: false,
        });
        let val: Vec<(f64, f64)> = log
            .validations
            .iter()
            .filter_map(|v| Some((v.step as f64, v.val_loss?)))
            .collect();
        if !val.is_empty() {
            series.push(LineSeries {
                name: format!("{} val_loss", log.name),
                points: val,
                dashed: true,
            });
        }
    }
    line_chart_svg(
        "dash-loss",
        "Training loss vs step",
        "step",
        "loss",
        &series,
    )
}

/// Validation ROUGE-1/2/L (F1 × 100) vs step, every run; `None` when no run validated ROUGE.
pub fn train_validation_svg(logs: &[TrainLog]) -> Option<String> {
    let mut series = Vec::new();
    for log in logs {
        type Pick = fn(&Validation) -> Option<f64>;
        let pick: [(&str, Pick); 3] = [
            ("ROUGE-1", |v| v.rouge1),
            ("ROUGE-2", |v| v.rouge2),
            ("ROUGE-L", |v| v.rouge_l),
        ];
        for (label, f) in pick {
            let points: Vec<(f64, f64)> = log
                .validations
                .iter()
                .filter_map(|v| Some((v.step as f64, 100.0 * f(v)?)))
                .collect();
            if !points.is_empty() {
                series.push(LineSeries {
                    name: format!("{} {label}", log.name),
                    points,
                    dashed: false,
                });
            }
        }
    }
    (!series.is_empty()).then(|| {
        line_chart_svg(
            "dash-val",
            "Validation ROUGE F1 × 100 vs step",
            "step",
            "F1 × 100",
            &series,
        )
    })
}

/// Formats a 0-1 score as F1 × 100 with two decimals.
pub fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

#[cfg(test)]
mod tests {
    //! Inputs are written here exactly as `backend-native` writes them (commands/eval.rs,
    //! commands/compare.rs, commands/train.rs), from bartleby-core's own metrics, failure
    //! analysis and report types.
    use super::*;
    use bartleby_core::metrics::analysis::{self, Thresholds};
    use bartleby_core::metrics::report::{
        BleuSettings, CorpusScores, Failures, Lengths, Selection, Settings, Timing,
    };
    use bartleby_core::GenerationConfig;
    use serde_json::json;

    const WINDOW: usize = 64;
    const SAMPLES: u64 = 200;

    fn long_dialogue() -> String {
        let mut d = String::new();
        for i in 0..30 {
            d +=
                &format!("Carl: day {i} of the trip was fine, the hotel was nice.\nDana: great!\n");
        }
        d.trim_end().to_string()
    }

    /// (id, dialogue, reference, prediction)
    fn examples() -> Vec<(String, String, String, String)> {
        [
            (
                "d-2",
                "Anna: Are we still on for lunch at 12?\nBen: Yes, \"the usual\" place, see you there.".to_string(),
                "Anna and Ben will have lunch at 12 at the usual place.",
                "Anna and Ben are meeting for lunch at 12.",
            ),
            (
                "d-10",
                long_dialogue(),
                "Carl tells Dana about the trip, the hotel and the weather.",
                "Carl went to Paris with Erik. Carl went to Paris with Erik. Carl went to Paris with Erik on day 99.",
            ),
            (
                "d-1",
                "Eve: can you bring the cake?\nFrank: sure, which one?\nEve: chocolate, for 5 people".to_string(),
                "Frank will bring a chocolate cake for Eve's party of 5.",
                "",
            ),
            (
                "a,b|c",
                "Gina: I love <b>bold</b> & 'quotes'\nHal: me too, \"really\"".to_string(),
                "Gina and Hal like bold text.",
                "Gina likes <b>bold</b> & quotes.\nHal too, says Ivan.",
            ),
        ]
        .into_iter()
        .map(|(i, d, r, p)| (i.to_string(), d, r.to_string(), p.to_string()))
        .collect()
    }

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn one_line(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    struct EvalFiles {
        predictions_csv: Vec<u8>,
        metrics_json: Vec<u8>,
        metrics_csv: Vec<u8>,
        report: analysis::FailureReport,
        intervals: [Interval; 4],
        bleu: f64,
    }

    /// What `bartleby eval --name NAME [--stemmer] --bootstrap-samples 200` writes for
    /// [`examples`] (commands/eval.rs: predictions_csv, metrics_doc, metrics_csv).
    fn eval_files(name: &str, stemmer: bool) -> EvalFiles {
        let ex = examples();
        let per: Vec<rouge::RougeScores> = ex
            .iter()
            .map(|(_, _, r, p)| rouge::score(p, &[r.as_str()], stemmer))
            .collect();
        let agg = rouge::aggregate(&per, SAMPLES as usize, 0).unwrap();
        let intervals = [agg.rouge1, agg.rouge2, agg.rougeL, agg.rougeLsum].map(|a| Interval {
            low: a.low.fmeasure,
            mid: a.mid.fmeasure,
            high: a.high.fmeasure,
        });
        let hyps: Vec<&str> = ex.iter().map(|e| e.3.as_str()).collect();
        let refs: Vec<&str> = ex.iter().map(|e| e.2.as_str()).collect();
        let bleu = bleu::corpus_bleu(&hyps, &[refs.as_slice()]).unwrap().score;

        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(PREDICTION_COLUMNS).unwrap();
        for ((id, d, r, p), s) in ex.iter().zip(&per) {
            w.write_record([id, d, r, p, &s.rougeL.fmeasure.to_string()])
                .unwrap();
        }
        let predictions_csv = w.into_inner().unwrap();

        let analyses: Vec<analysis::ExampleAnalysis> = ex
            .iter()
            .map(|(id, d, r, p)| {
                analysis::analyze(
                    &analysis::Example {
                        id: id.clone(),
                        dialogue: d,
                        reference: r,
                        prediction: p,
                        input_tokens: words(d) * 4 / 3,
                        max_input_tokens: WINDOW,
                        prediction_tokens: Some(words(p)),
                    },
                    &Thresholds::default(),
                )
            })
            .collect();
        let report = analysis::summarize_failures(&analyses, 5);

        let mean = |f: &dyn Fn(&analysis::ExampleAnalysis) -> f64| {
            analyses.iter().map(f).sum::<f64>() / analyses.len() as f64
        };
        // failure_summary + worst_example of commands/eval.rs.
        let worst = report
            .worst
            .iter()
            .map(|(cat, ranked)| {
                let examples = ranked
                    .iter()
                    .map(|r| {
                        let i = ex.iter().position(|e| e.0 == r.id).unwrap();
                        let (row, a) = (&ex[i], &analyses[i]);
                        let texts = [row.1.as_str(), row.2.as_str(), row.3.as_str()];
                        let rouge_l = Some(per[i].rougeL.fmeasure);
                        WorstExample::new(a, r.severity, rouge_l, texts, 600)
                    })
                    .collect();
                (*cat, examples)
            })
            .collect();
        let mut corpus = CorpusScores {
            bleu: Some(bleu),
            ..CorpusScores::default()
        };
        corpus.set_rouge(intervals.map(Some));
        let doc = EvalReport {
            name: name.into(),
            model: "tests/fixtures/models/tiny-gelu".into(),
            data: "data/x.jsonl".into(),
            split: "validation".into(),
            n: ex.len() as u64,
            selection: Some(Selection {
                rows_in_split: 10,
                limit: Some(4),
                seed: None,
                rule: "first N rows".into(),
            }),
            generation: Some(GenerationConfig {
                max_length: 20,
                num_beams: 2,
                ..GenerationConfig::default()
            }),
            max_input_tokens: Some(WINDOW),
            long: None,
            batch_size: Some(4),
            device: Some("cpu".into()),
            corpus,
            scoring: Some(Settings {
                metrics: vec!["rouge".into(), "bleu".into()],
                pairs: ex.len(),
                rouge: Some(report::RougeSettings {
                    implementation: "rouge_score 0.1.2".into(),
                    stemmer,
                    bootstrap_seed: 0,
                    bootstrap_samples: SAMPLES,
                    confidence_interval: 0.95,
                    hf_evaluate: false,
                }),
                bleu: Some(BleuSettings {
                    implementation: "sacrebleu 2.6.0".into(),
                    padding: "none".into(),
                    signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0".into(),
                }),
                bertscore: None,
            }),
            lengths: Some(Lengths {
                mean_prediction_words: mean(&|a| a.words.prediction as f64),
                mean_reference_words: mean(&|a| a.words.reference as f64),
                mean_dialogue_words: mean(&|a| a.words.dialogue as f64),
                mean_input_tokens: mean(&|a| a.input_tokens as f64),
                mean_generated_tokens: mean(&|a| a.prediction_tokens.unwrap_or(0) as f64),
            }),
            failures: Some(Failures {
                total: report.total,
                flagged: report.flagged,
                counts: report.counts.clone(),
                thresholds: Thresholds::default(),
                worst,
            }),
            timing: Some(Timing {
                load_seconds: 0.5,
                generation_seconds: 2.0,
                examples_per_second: 2.0,
                scoring_seconds: 0.1,
                total_seconds: 2.6,
            }),
            bartleby_version: Some("0.1.0".into()),
        };
        let metrics_json = (serde_json::to_string_pretty(&doc).unwrap() + "\n").into_bytes();

        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["metric", "value", "low", "high"]).unwrap();
        w.write_record(["n", &ex.len().to_string(), "", ""])
            .unwrap();
        for (label, i) in ROUGE_KEYS.into_iter().zip(intervals) {
            w.write_record([
                label,
                &i.mid.to_string(),
                &i.low.to_string(),
                &i.high.to_string(),
            ])
            .unwrap();
        }
        w.write_record(["bleu", &bleu.to_string(), "", ""]).unwrap();
        w.write_record(["mean_prediction_words", "7.25", "", ""])
            .unwrap();
        w.write_record(["examples_per_second", "2", "", ""])
            .unwrap();
        w.write_record(["failures_flagged", &report.flagged.to_string(), "", ""])
            .unwrap();
        for (cat, count) in &report.counts {
            let label = format!("failures_{}", category_name(*cat));
            w.write_record([&label, &count.to_string(), "", ""])
                .unwrap();
        }
        let metrics_csv = w.into_inner().unwrap();

        EvalFiles {
            predictions_csv,
            metrics_json,
            metrics_csv,
            report,
            intervals,
            bleu,
        }
    }

    /// commands/compare.rs `comparison()` for two runs.
    fn compare_json() -> Vec<u8> {
        let ci = |m: f64| json!({"low": m - 0.02, "mid": m, "high": m + 0.02});
        let doc = json!({
            "baseline": "base",
            "rule": "A ROUGE delta is marked significant (*) when ...",
            "runs": [
                {"name": "base", "file": "m/base_metrics.json", "model": "m", "data": "d",
                 "split": "validation", "n": 10, "bleu": 5.0,
                 "scores": {"rouge1": ci(0.30), "rouge2": ci(0.10), "rougeL": ci(0.25),
                            "rougeLsum": ci(0.25), "bleu": 5.0},
                 "deltas_vs_baseline": {}},
                {"name": "lora <v2>", "file": "m/lora_metrics.json", "model": "m2", "data": "d",
                 "split": "validation", "n": 10, "bleu": 7.5,
                 "scores": {"rouge1": ci(0.35), "rouge2": ci(0.13), "rougeL": ci(0.25),
                            "rougeLsum": ci(0.20), "bleu": 7.5},
                 "deltas_vs_baseline": {
                    "rouge1": {"delta": 0.05, "significant": true},
                    "rouge2": {"delta": 0.03, "significant": false},
                    "rougeL": {"delta": 0.0, "significant": false},
                    "rougeLsum": {"delta": -0.05, "significant": true},
                    "bleu": {"delta": 2.5, "significant": null}}}
            ],
            "warnings": []
        });
        (serde_json::to_string_pretty(&doc).unwrap() + "\n").into_bytes()
    }

    /// commands/train.rs `log` lines: steps every 2, validations at 4 and 6.
    fn train_jsonl() -> Vec<u8> {
        let mut out = String::new();
        for step in (2..=6).step_by(2) {
            let line = json!({
                "step": step, "epoch": step as f64 / 6.0, "loss": 3.0 / step as f64, "lr": 1e-4,
                "grad_norm": 1.5, "tokens_per_s": 1234.5, "elapsed_s": step as f64 * 0.5,
                "peak_rss_bytes": if step == 2 { Value::Null } else { json!(123456789u64) },
            });
            out += &format!("{line}\n");
            if step >= 4 {
                let v = json!({"step": step, "epoch": step as f64 / 6.0, "val_loss": 2.0 / step as f64,
                               "rouge1": 0.2 + step as f64 / 100.0, "rouge2": 0.05, "rougeL": 0.18});
                out += &format!("{v}\n");
            }
        }
        out.into_bytes()
    }

    #[test]
    fn metrics_json_parses() {
        let f = eval_files("base", true);
        let m = parse_metrics_json("out/base_metrics.json", &f.metrics_json).unwrap();
        assert_eq!(m.source, MetricsSource::Json);
        assert_eq!(m.scores.name, "base");
        assert_eq!(m.scores.n, Some(4));
        assert_eq!(m.scores.rouge, f.intervals.map(Some));
        assert_eq!(m.scores.bleu, Some(f.bleu));
        assert_eq!(m.model.as_deref(), Some("tests/fixtures/models/tiny-gelu"));
        assert_eq!(m.split.as_deref(), Some("validation"));
        let r = m.rouge_settings.as_ref().unwrap();
        assert_eq!(
            (r.stemmer, r.bootstrap_seed, r.bootstrap_samples),
            (true, 0, SAMPLES)
        );
        assert_eq!(m.failures_total, Some(4));
        assert_eq!(m.failures_flagged, Some(f.report.flagged as u64));
        assert_eq!(m.failure_counts.len(), 6);
        assert!(m
            .numbers
            .iter()
            .any(|(k, v)| k == "timing.examples_per_second" && *v == 2.0));
        assert!(m
            .numbers
            .iter()
            .any(|(k, _)| k == "lengths.mean_input_tokens"));
    }

    #[test]
    fn metrics_json_errors_name_file_and_field() {
        let head = r#""name": "x", "model": "m", "data": "d", "split": "s""#;
        let e = parse_metrics_json("x_metrics.json", format!("{{{head}, \"n\": 1}}").as_bytes())
            .unwrap_err();
        assert_eq!(e, "x_metrics.json: missing field \"corpus\"");
        let bad = format!(
            r#"{{{head}, "n": 1, "corpus": {{"rouge1": {{"low": "a", "mid": 0.1, "high": 0.2}}}}}}"#
        );
        let bad = bad.as_bytes();
        let e = parse_metrics_json("x_metrics.json", bad).unwrap_err();
        assert_eq!(
            e,
            "x_metrics.json: field \"corpus.rouge1.low\" must be a number"
        );
        let e = parse_metrics_json(
            "x_metrics.json",
            format!(r#"{{{head}, "corpus": {{}}}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e, "x_metrics.json: missing field \"n\"");
        let e = parse_metrics_json("x_metrics.json", b"{oops").unwrap_err();
        assert!(e.starts_with("x_metrics.json: invalid JSON: "), "{e}");
        assert!(!e.contains('\n'));
        let e = parse_metrics_json("x_metrics.json", b"[1]").unwrap_err();
        assert!(
            e.starts_with("x_metrics.json: expected a JSON object"),
            "{e}"
        );
    }

    #[test]
    fn metrics_csv_matches_json() {
        let f = eval_files("base", true);
        let j = parse_metrics_json("base_metrics.json", &f.metrics_json).unwrap();
        let c = parse_metrics_csv("dir/base_metrics.csv", &f.metrics_csv).unwrap();
        assert_eq!(c.source, MetricsSource::Csv);
        assert_eq!(c.scores, j.scores);
        assert_eq!(c.failures_flagged, j.failures_flagged);
        assert_eq!(c.failure_counts, j.failure_counts);
        assert!(c
            .numbers
            .contains(&("mean_prediction_words".to_string(), 7.25)));

        let bad = b"metric,value,low,high\nn,4,,\nrouge1,0.5,zero,0.6\n";
        let e = parse_metrics_csv("r_metrics.csv", bad).unwrap_err();
        assert_eq!(
            e,
            "r_metrics.csv line 3: low of \"rouge1\" is not a number: \"zero\""
        );
        let e = parse_metrics_csv("r_metrics.csv", b"a,b\n1,2\n").unwrap_err();
        assert!(
            e.starts_with("r_metrics.csv: expected the header metric,value,low,high"),
            "{e}"
        );
        let e = parse_metrics_csv("r_metrics.csv", b"metric,value,low,high\nn,4,,\n").unwrap_err();
        assert_eq!(
            e,
            "r_metrics.csv: no rouge1/rouge2/rougeL/rougeLsum or bleu row"
        );
    }

    #[test]
    fn predictions_parse() {
        let f = eval_files("base", true);
        let p = parse_predictions("m/base_predictions.csv", &f.predictions_csv).unwrap();
        assert_eq!(p.name, "base");
        let ex = examples();
        assert_eq!(p.rows.len(), ex.len());
        for (row, (id, d, r, pr)) in p.rows.iter().zip(&ex) {
            assert_eq!(
                (&row.id, &row.dialogue, &row.reference, &row.prediction),
                (id, d, r, pr)
            );
            let want = rouge::score(pr, &[r.as_str()], true).rougeL.fmeasure;
            assert_eq!(row.rouge_l, Some(want));
        }
        // An empty score (eval without rouge) is None; columns in another order are found.
        let csv = "rougeL_score,generated_summary,reference_summary,source_text,id\n,p,r,d,7\n";
        let p = parse_predictions("x_predictions.csv", csv.as_bytes()).unwrap();
        assert_eq!(
            p.rows,
            vec![PredictionRow {
                id: "7".into(),
                dialogue: "d".into(),
                reference: "r".into(),
                prediction: "p".into(),
                rouge_l: None
            }]
        );
        let e = parse_predictions("x_predictions.csv", b"id,source_text\n1,2\n").unwrap_err();
        assert_eq!(e, "x_predictions.csv: missing column \"reference_summary\"");
        let csv = format!(
            "{}\n1,d,r,p,0.5\n2,d,r,p,high\n",
            PREDICTION_COLUMNS.join(",")
        );
        let e = parse_predictions("x_predictions.csv", csv.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            "x_predictions.csv line 3: \"rougeL_score\" is not a number: \"high\""
        );
    }

    #[test]
    fn failures_read_from_metrics_json() {
        let f = eval_files("base", true);
        let m = parse_metrics_json("out/base_metrics.json", &f.metrics_json).unwrap();
        let r = m.failure_report.unwrap();
        assert_eq!(r.file, "out/base_metrics.json");
        assert_eq!(r.name, "base");
        assert_eq!(r.model.as_deref(), Some("tests/fixtures/models/tiny-gelu"));
        assert_eq!(r.data.as_deref(), Some("data/x.jsonl"));
        assert_eq!(r.split.as_deref(), Some("validation"));
        assert_eq!(r.total, Some(4));
        assert_eq!(r.flagged, Some(f.report.flagged as u64));
        assert_eq!(r.input_window, Some(WINDOW as u64));
        let counts: Vec<(String, u64)> = r
            .counts
            .iter()
            .map(|c| (c.category.clone(), c.count))
            .collect();
        let want: Vec<(String, u64)> = f
            .report
            .counts
            .iter()
            .map(|(c, n)| (category_name(*c), *n as u64))
            .collect();
        assert_eq!(counts, want);
        let want: Vec<(String, Vec<(String, f64)>)> = f
            .report
            .worst
            .iter()
            .filter(|(_, w)| !w.is_empty())
            .map(|(c, w)| {
                (
                    category_name(*c),
                    w.iter().map(|x| (x.id.clone(), x.severity)).collect(),
                )
            })
            .collect();
        assert!(
            want.len() >= 4,
            "the examples should flag several categories: {want:?}"
        );
        assert_eq!(r.categories.len(), want.len());
        for (got, (cat, list)) in r.categories.iter().zip(&want) {
            assert_eq!(&got.category, cat);
            assert_eq!(got.examples.len(), list.len());
            for (e, (id, sev)) in got.examples.iter().zip(list) {
                assert_eq!(&e.id, id);
                assert!((e.severity - sev).abs() <= 5e-4, "{} vs {sev}", e.severity);
                assert!(e.rouge_l.is_some());
                assert!(e.words.as_deref().unwrap().starts_with("generated "));
            }
        }
        let ex = examples();
        let all: Vec<&FailureExample> = r.categories.iter().flat_map(|c| &c.examples).collect();
        let long = all
            .iter()
            .find(|e| e.id == "d-10")
            .expect("d-10 is flagged");
        assert!(long.dialogue_truncated);
        assert_eq!(long.dialogue, ex[1].1.chars().take(600).collect::<String>());
        assert_eq!(long.generated, ex[1].3);
        assert!(
            long.not_in_dialogue.contains(&"Paris".to_string()),
            "{long:?}"
        );
        assert!(long.repeated.as_deref().unwrap().contains('×'));
        let short = all.iter().find(|e| e.id == "a,b|c").unwrap();
        assert!(!short.dialogue_truncated);
        assert_eq!(short.dialogue, ex[3].1);
        assert_eq!(short.generated, one_line(&ex[3].3));
        assert_eq!(short.not_in_dialogue, ["Ivan"]);
        let empty = all.iter().find(|e| e.id == "d-1").unwrap();
        assert_eq!(empty.generated, "");
        assert_eq!(empty.reference, ex[2].2);
        assert_eq!(empty.dialogue, ex[2].1);

        let shares: Vec<f64> = r.counts.iter().map(|c| c.share_pct).collect();
        let want: Vec<f64> = f
            .report
            .counts
            .values()
            .map(|&n| (1000.0 * n as f64 / 4.0).round() / 10.0)
            .collect();
        assert_eq!(shares, want);
    }

    #[test]
    fn comparison_parses() {
        let c = parse_comparison("compare.json", &compare_json()).unwrap();
        assert_eq!(c.baseline, "base");
        assert_eq!(c.runs.len(), 2);
        assert!(c.runs[0].deltas.is_empty());
        let lora = &c.runs[1];
        assert_eq!(lora.scores.name, "lora <v2>");
        assert_eq!(lora.scores.n, Some(10));
        assert_eq!(lora.scores.bleu, Some(7.5));
        assert_eq!(
            lora.scores.rouge[0],
            Some(Interval {
                low: 0.35 - 0.02,
                mid: 0.35,
                high: 0.35 + 0.02
            })
        );
        assert_eq!(lora.source_file.as_deref(), Some("m/lora_metrics.json"));
        let d = |m: &str| lora.deltas.iter().find(|d| d.metric == m).unwrap();
        assert_eq!(d("rouge1").significant, Some(true));
        assert_eq!(d("bleu").significant, None);
        assert_eq!(d("bleu").delta, 2.5);
        let e = parse_comparison("c.json", br#"{"baseline": "a", "runs": [{"name": "a"}]}"#)
            .unwrap_err();
        assert_eq!(e, "c.json: missing field \"runs[0].scores\"");
        let e = parse_comparison("c.json", br#"{"baseline": "a", "runs": 3}"#).unwrap_err();
        assert_eq!(e, "c.json: field \"runs\" must be a list");
    }

    #[test]
    fn train_log_parses() {
        let t = parse_train_log("runs/lora-a/metrics.jsonl", &train_jsonl()).unwrap();
        assert_eq!(t.name, "lora-a");
        assert_eq!(
            t.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
            [2, 4, 6]
        );
        assert_eq!(t.steps[0].loss, 1.5);
        assert_eq!(t.steps[0].peak_rss_bytes, None);
        assert_eq!(t.steps[1].peak_rss_bytes, Some(123456789));
        assert_eq!(t.steps[2].tokens_per_s, Some(1234.5));
        assert_eq!(t.validations.len(), 2);
        assert_eq!(t.validations[1].val_loss, Some(2.0 / 6.0));
        assert_eq!(t.validations[1].rouge_l, Some(0.18));
        assert_eq!(
            parse_train_log("metrics.jsonl", &train_jsonl())
                .unwrap()
                .name,
            "metrics"
        );
        let e = parse_train_log("m.jsonl", b"{\"step\": 1, \"loss\": 2}\n\n{\"loss\": 1}\n")
            .unwrap_err();
        assert_eq!(e, "m.jsonl line 3: missing field \"step\"");
        let e = parse_train_log("m.jsonl", b"{\"step\": 1, \"loss\": \"x\"}\n").unwrap_err();
        assert_eq!(e, "m.jsonl line 1: field \"loss\" must be a number");
        let e = parse_train_log("m.jsonl", b"{\"step\": 1,\n").unwrap_err();
        assert!(e.starts_with("m.jsonl line 1: invalid JSON"), "{e}");
        let e = parse_train_log("m.jsonl", b"\n").unwrap_err();
        assert_eq!(e, "m.jsonl: no training step or validation line");
    }

    #[test]
    fn detect_classifies_every_file() {
        let f = eval_files("base", true);
        let kinds = |name: &str, bytes: &[u8]| detect(name, bytes).map(|l| l.kind());
        assert_eq!(kinds("base_metrics.json", &f.metrics_json), Ok("metrics"));
        assert_eq!(
            kinds("base_metrics.csv", &f.metrics_csv),
            Ok("metrics (CSV)")
        );
        assert_eq!(
            kinds("base_predictions.csv", &f.predictions_csv),
            Ok("predictions")
        );
        assert_eq!(kinds("compare.json", &compare_json()), Ok("comparison"));
        assert_eq!(
            kinds("runs/a/metrics.jsonl", &train_jsonl()),
            Ok("training log")
        );
        // By content when the name says little.
        assert_eq!(kinds("download.csv", &f.predictions_csv), Ok("predictions"));
        assert_eq!(kinds("download.csv", &f.metrics_csv), Ok("metrics (CSV)"));
        assert_eq!(kinds("log", &train_jsonl()), Ok("training log"));
        assert_eq!(kinds("blob", &f.metrics_json), Ok("metrics"));
        let l = detect("x/base_metrics.json", &f.metrics_json).unwrap();
        assert_eq!(l.file(), "x/base_metrics.json");
        // NAME_failures.md: its content is in NAME_metrics.json.
        let md = b"# Failure analysis: base\n\nModel `m`, data `d` (split `s`), 4 examples.\n";
        for name in ["base_failures.md", "report.txt"] {
            let e = detect(name, md).unwrap_err();
            assert!(e.starts_with(&format!("{name}: ")), "{e}");
            assert!(e.contains("NAME_metrics.json"), "{e}");
        }
        // Errors are one line and name the file.
        for (name, bytes) in [
            ("base_rouge.png", &b"\x89PNG"[..]),
            (
                "score.json",
                &br#"{"per_example": [], "corpus": {}, "settings": {}}"#[..],
            ),
            ("other.json", &b"{\"a\": 1}"[..]),
            ("notes.txt", &b"hello"[..]),
            ("x.csv", &b"a,b\n"[..]),
        ] {
            let e = detect(name, bytes).unwrap_err();
            assert!(e.starts_with(&format!("{name}: ")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = detect("score.json", br#"{"per_example": [], "corpus": {}}"#).unwrap_err();
        assert!(e.contains("bartleby score report"), "{e}");
    }

    /// The example results the page offers (`public/results/`, real CLI output) all load, and
    /// the metrics files carry their failure reports.
    #[test]
    fn example_results_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../public/results/");
        let index = std::fs::read(format!("{dir}index.json")).unwrap();
        let files: Vec<String> = serde_json::from_slice(&index).unwrap();
        let mut d = Dashboard::default();
        for f in &files {
            let bytes = std::fs::read(format!("{dir}{f}")).unwrap();
            d.add(detect(f, &bytes).unwrap_or_else(|e| panic!("{e}")));
        }
        assert_eq!(d.metrics.len(), 2);
        assert_eq!(d.comparisons.len(), 1);
        assert_eq!(d.failures.len(), 2);
        for f in &d.failures {
            assert!(!f.categories.is_empty(), "{}", f.name);
            assert_eq!(f.counts.len(), Category::ALL.len());
        }
    }

    #[test]
    fn dashboard_merges_runs() {
        let f = eval_files("base", true);
        let mut d = Dashboard::default();
        assert!(d.is_empty());
        d.add(detect("base_metrics.csv", &f.metrics_csv).unwrap());
        d.add(detect("compare.json", &compare_json()).unwrap());
        d.add(detect("base_metrics.json", &f.metrics_json).unwrap());
        d.add(detect("base_metrics.json", &f.metrics_json).unwrap());
        assert_eq!(d.metrics.len(), 2);
        assert_eq!(d.metrics_of("base").unwrap().source, MetricsSource::Json);
        assert_eq!(d.failures.len(), 1);
        assert_eq!(d.failures[0].name, "base");
        let runs = d.chart_runs();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["base", "lora <v2>"]);
        assert_eq!(runs[0].rouge[0], Some(f.intervals[0]));
    }

    fn row(id: &str, text: &str, rouge_l: Option<f64>) -> PredictionRow {
        PredictionRow {
            id: id.into(),
            dialogue: format!("dialogue {text}"),
            reference: "ref".into(),
            prediction: text.into(),
            rouge_l,
        }
    }

    #[test]
    fn sort_and_filter() {
        let rows = vec![
            row("a10", "one two three", Some(0.5)),
            row("a2", "One", None),
            row("a1", "one two", Some(0.2)),
            row("b", "Zebra crossing", Some(0.9)),
        ];
        let ids = |idx: &[usize]| idx.iter().map(|&i| rows[i].id.as_str()).collect::<Vec<_>>();
        assert_eq!(
            ids(&table_view(&rows, "", SortKey::Id, false)),
            ["a1", "a2", "a10", "b"]
        );
        assert_eq!(
            ids(&table_view(&rows, "", SortKey::Id, true)),
            ["b", "a10", "a2", "a1"]
        );
        assert_eq!(
            ids(&table_view(&rows, "", SortKey::RougeL, false)),
            ["a1", "a10", "b", "a2"]
        );
        assert_eq!(
            ids(&table_view(&rows, "", SortKey::RougeL, true)),
            ["b", "a10", "a1", "a2"]
        );
        assert_eq!(
            ids(&table_view(&rows, "", SortKey::PredictionWords, true)),
            ["a10", "a1", "b", "a2"]
        );
        assert_eq!(
            ids(&table_view(&rows, "", SortKey::Row, true)),
            ["b", "a1", "a2", "a10"]
        );
        assert_eq!(
            ids(&table_view(&rows, "  ONE ", SortKey::Row, false)),
            ["a10", "a2", "a1"]
        );
        assert_eq!(ids(&table_view(&rows, "zebra", SortKey::Row, false)), ["b"]);
        assert_eq!(ids(&filter_rows(&rows, "DIALOGUE z")), ["b"]);
        assert_eq!(ids(&filter_rows(&rows, "A1")), ["a10", "a1"]);
        assert!(filter_rows(&rows, "nothing").is_empty());
        assert_eq!(natural_cmp("x007", "x7"), Ordering::Equal);
        assert_eq!(natural_cmp("x9", "x10"), Ordering::Less);
        assert_eq!(natural_cmp("é2", "é10"), Ordering::Less);
    }

    #[test]
    fn recompute_equals_bartleby_core() {
        let f = eval_files("base", true);
        let p = parse_predictions("base_predictions.csv", &f.predictions_csv).unwrap();
        let opts = RecomputeOptions {
            stemmer: true,
            bootstrap_samples: SAMPLES,
            bootstrap_seed: 0,
        };
        let re = recompute_with(&p.rows, &opts).unwrap();
        // bartleby-core directly on the same rows.
        let per: Vec<rouge::RougeScores> = p
            .rows
            .iter()
            .map(|r| rouge::score(&r.prediction, &[r.reference.as_str()], true))
            .collect();
        let agg = rouge::aggregate(&per, SAMPLES as usize, 0).unwrap();
        let core = [agg.rouge1, agg.rouge2, agg.rougeL, agg.rougeLsum];
        let got = re.rouge.unwrap();
        for k in 0..4 {
            assert_eq!(got[k].low, core[k].low.fmeasure);
            assert_eq!(got[k].mid, core[k].mid.fmeasure);
            assert_eq!(got[k].high, core[k].high.fmeasure);
            let mean = per.iter().map(|s| s.as_array()[k].fmeasure).sum::<f64>() / per.len() as f64;
            assert_eq!(re.rouge_mean[k], mean);
        }
        let hyps: Vec<&str> = p.rows.iter().map(|r| r.prediction.as_str()).collect();
        let refs: Vec<&str> = p.rows.iter().map(|r| r.reference.as_str()).collect();
        assert_eq!(
            re.bleu,
            bleu::corpus_bleu(&hyps, &[refs.as_slice()]).unwrap().score
        );
        assert_eq!(
            re.rouge_l,
            per.iter().map(|s| s.rougeL.fmeasure).collect::<Vec<_>>()
        );
        assert_eq!(re.rouge_l_mismatches, 0);
        assert_eq!(re.n, 4);

        // The file's settings reproduce the file's numbers.
        let m = parse_metrics_json("base_metrics.json", &f.metrics_json).unwrap();
        assert_eq!(RecomputeOptions::from_metrics(&m), opts);
        let checks = check_against(&m.scores, &re);
        assert_eq!(checks.len(), 5);
        assert!(checks.iter().all(|c| c.matches == Some(true)), "{checks:?}");

        // Defaults: stemmed, 1000 samples, seed 0.
        let d = recompute(&p.rows).unwrap();
        assert_eq!(d.options, RecomputeOptions::default());
        assert!(d.options.stemmer);
        let agg = rouge::aggregate(&per, 1000, 0).unwrap();
        assert_eq!(d.rouge.unwrap()[2].mid, agg.rougeL.mid.fmeasure);

        // A different score in the file is reported.
        let mut rows = p.rows.clone();
        rows[0].rouge_l = Some(0.123);
        let mut scores = m.scores.clone();
        scores.bleu = Some(1.0);
        let re = recompute_with(
            &rows,
            &RecomputeOptions {
                bootstrap_samples: 0,
                ..opts
            },
        )
        .unwrap();
        assert_eq!(re.rouge_l_mismatches, 1);
        assert!(re.rouge.is_none());
        let checks = check_against(&scores, &re);
        assert_eq!(checks[4].matches, Some(false));
        assert!(recompute(&[]).is_err());
    }

    #[test]
    fn svg_escapes_text() {
        let evil = "<script>alert('x')</script> & \"q\"";
        assert_eq!(
            escape(evil),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let runs = vec![
            RunScores {
                name: evil.into(),
                n: Some(4),
                rouge: [Some(Interval {
                    low: 0.2,
                    mid: 0.3,
                    high: 0.4,
                }); 4],
                bleu: Some(12.0),
            },
            RunScores {
                name: "b".into(),
                n: None,
                rouge: [None; 4],
                bleu: Some(3.0),
            },
        ];
        let svg = metrics_bar_chart_svg(&runs);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(
            svg.matches("class=\"whisker\"").count(),
            4,
            "whiskers for the 4 ROUGE bars"
        );
        assert_eq!(svg.matches("<rect class=\"bar").count(), 6);
        assert!(svg.contains(">n/a<"));
        assert!(metrics_bar_chart_svg(&[]).contains("No run"));

        let mut log = parse_train_log("runs/x/metrics.jsonl", &train_jsonl()).unwrap();
        log.name = evil.into();
        let svg = train_loss_svg(std::slice::from_ref(&log));
        assert!(svg.ends_with("</svg>") && !svg.contains("<script"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("stroke-dasharray"));
        let val = train_validation_svg(std::slice::from_ref(&log)).unwrap();
        assert_eq!(val.matches("<polyline").count(), 3);
        log.validations.clear();
        assert!(train_validation_svg(&[log]).is_none());
        let svg = line_chart_svg("c", "t<", "x&", "y\"", &[]);
        assert!(svg.contains("t&lt;") && svg.contains("Nothing to plot"));
    }

    #[test]
    fn ticks_cover_range() {
        let t = nice_ticks(0.0, 47.3, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 47.3 && t.len() <= 8, "{t:?}");
        let t = nice_ticks(0.31, 0.33, 5);
        assert!(t[0] <= 0.31 && *t.last().unwrap() >= 0.33, "{t:?}");
        assert!(nice_ticks(2.0, 2.0, 5).len() >= 2);
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(20.0), "20");
    }

    /// `final_ranking.json` of `bartleby benchmark` is recognised and read with core's types;
    /// its chart has a bar per ranked model.
    #[test]
    fn ranking_json_is_detected() {
        let row = |rank: Option<usize>, model: &str, composite: Option<f64>| RankingRow {
            rank,
            model: model.into(),
            model_id: format!("dir/{model}"),
            architecture: Some("bart".into()),
            rouge1: None,
            rouge2: None,
            rouge_l: Some(18.0),
            rouge_lsum: None,
            bleu: None,
            time: Some(10.0),
            load_time: None,
            throughput: Some(20.0),
            efficiency: Some(1.8),
            composite_score: composite,
            peak_memory_mb: None,
            parameters: Some(7),
            device: "cpu".into(),
            n: 200,
            p_first: Some(0.9),
            rank_low: Some(1),
            rank_high: Some(2),
            error: None,
        };
        let rows = vec![
            row(Some(1), "a", Some(0.7)),
            row(Some(2), "b", Some(-0.7)),
            row(None, "c<x>", None),
        ];
        let bytes = serde_json::to_vec(&rows).unwrap();
        match detect("final_ranking.json", &bytes).unwrap() {
            Loaded::Ranking(r) => {
                assert_eq!(r.rows, rows);
                let svg = ranking_svg(&r);
                assert_eq!(svg.matches("<rect").count(), 2);
                assert!(svg.contains("-0.700"));
            }
            other => panic!("{}", other.kind()),
        }
        let err = detect("r.json", b"[{\"composite_score\": \"x\"}]").unwrap_err();
        assert!(err.starts_with("r.json"), "{err}");
    }
}
