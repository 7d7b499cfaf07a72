//! The reports the command line writes, as serde types: one definition each, serialized by the
//! CLI (`bartleby score`, `eval`, `compare`) and deserialized by whoever reads them back
//! (`bartleby compare`, the web app's dashboards).
//!
//! | type | file | written by |
//! |---|---|---|
//! | [`ScoreReport`] | `--output` of `score` | `bartleby score` |
//! | [`EvalReport`] | `NAME_metrics.json` | `bartleby eval` |
//! | [`CompareReport`] | `NAME.json` | `bartleby compare` |
//! | [`RankingRow`] (an array, best first) | `final_ranking.json` | `bartleby benchmark` |
//!
//! Field order is output order. [`from_json`] reads any of them with one-line errors that name
//! the file and the field path (`missing field "corpus.rouge2.low"`). Pure: no I/O here.

use super::analysis::{Category, ExampleAnalysis, Thresholds};
use super::bertscore::Prf;
use super::rouge;
use crate::GenerationConfig;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The `corpus` keys of the ROUGE types, in report and chart order.
pub const ROUGE_KEYS: [&str; 4] = ["rouge1", "rouge2", "rougeL", "rougeLsum"];
/// Display labels of [`ROUGE_KEYS`].
pub const ROUGE_LABELS: [&str; 4] = ["ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum"];

// ---------------------------------------------------------------------------------------------
// bartleby score

/// A bootstrap interval (`low`, `mid`, `high`), e.g. of a ROUGE type's F-measure (0-1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub mid: f64,
    pub high: f64,
}

impl Interval {
    /// A value without interval (`low == mid == high`).
    pub fn point(v: f64) -> Self {
        Interval {
            low: v,
            mid: v,
            high: v,
        }
    }

    /// The bounds multiplied by `factor` (e.g. 100 for percent).
    pub fn scaled(self, factor: f64) -> Self {
        Interval {
            low: factor * self.low,
            mid: factor * self.mid,
            high: factor * self.high,
        }
    }

    /// The F-measure intervals of a ROUGE bootstrap, in [`ROUGE_KEYS`] order.
    pub fn of_aggregate(agg: &rouge::RougeAggregate) -> [Interval; 4] {
        [agg.rouge1, agg.rouge2, agg.rougeL, agg.rougeLsum].map(|a| Interval {
            low: a.low.fmeasure,
            mid: a.mid.fmeasure,
            high: a.high.fmeasure,
        })
    }
}

/// One row of `per_example` (fields in output order).
#[allow(non_snake_case)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleScores {
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rouge1: Option<rouge::Score>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rouge2: Option<rouge::Score>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rougeL: Option<rouge::Score>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rougeLsum: Option<rouge::Score>,
    /// sacrebleu `sentence_bleu(prediction, references).score`, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bleu: Option<f64>,
    /// bert_score's P/R/F (rescaled with --rescale).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_prf"
    )]
    pub bertscore: Option<Prf>,
}

/// `corpus` (score, eval) and `scores` (compare): bootstrap intervals of the ROUGE F-measures,
/// corpus BLEU and the mean BERTScore; a metric not computed is left out.
#[allow(non_snake_case)]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CorpusScores {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rouge1: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rouge2: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rougeL: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rougeLsum: Option<Interval>,
    /// sacrebleu `corpus_bleu(predictions, reference_streams).score`, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bleu: Option<f64>,
    /// The means of the per-example BERTScores.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_prf"
    )]
    pub bertscore: Option<Prf>,
}

impl CorpusScores {
    /// The ROUGE intervals in [`ROUGE_KEYS`] order.
    pub fn rouge(&self) -> [Option<Interval>; 4] {
        [self.rouge1, self.rouge2, self.rougeL, self.rougeLsum]
    }

    /// Sets the ROUGE intervals from [`ROUGE_KEYS`] order.
    pub fn set_rouge(&mut self, [r1, r2, rl, rlsum]: [Option<Interval>; 4]) {
        (self.rouge1, self.rouge2, self.rougeL, self.rougeLsum) = (r1, r2, rl, rlsum);
    }
}

/// What `evaluate.load("rouge").compute(...)` returns.
#[allow(non_snake_case)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfEvaluateRouge {
    pub rouge1: f64,
    pub rouge2: f64,
    pub rougeL: f64,
    pub rougeLsum: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RougeSettings {
    pub implementation: String,
    pub stemmer: bool,
    pub bootstrap_seed: u32,
    pub bootstrap_samples: u64,
    pub confidence_interval: f64,
    pub hf_evaluate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BleuSettings {
    pub implementation: String,
    pub padding: String,
    /// sacrebleu's signature for these settings.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertScoreSettings {
    pub implementation: String,
    pub model: String,
    pub layer: usize,
    pub idf: bool,
    /// The baseline file of --rescale.
    pub rescale: Option<String>,
    pub batch_size: u64,
}

/// `settings` of score (`scoring` of eval): the metrics and how they were computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub metrics: Vec<String>,
    pub pairs: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rouge: Option<RougeSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bleu: Option<BleuSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bertscore: Option<BertScoreSettings>,
}

/// The output document of `bartleby score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReport {
    pub per_example: Vec<ExampleScores>,
    pub corpus: CorpusScores,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_evaluate: Option<HfEvaluateRouge>,
    pub settings: Settings,
}

// ---------------------------------------------------------------------------------------------
// bartleby eval

/// Which rows of the split were evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub rows_in_split: usize,
    pub limit: Option<usize>,
    pub seed: Option<u64>,
    pub rule: String,
}

/// Mean lengths over the evaluated examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lengths {
    pub mean_prediction_words: f64,
    pub mean_reference_words: f64,
    pub mean_dialogue_words: f64,
    pub mean_input_tokens: f64,
    pub mean_generated_tokens: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub load_seconds: f64,
    pub generation_seconds: f64,
    /// Examples per second of generation.
    pub examples_per_second: f64,
    pub scoring_seconds: f64,
    pub total_seconds: f64,
}

/// A repeated n-gram of a prediction and how often it occurs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repeated {
    pub ngram: String,
    pub count: usize,
}

/// One of the worst examples of a failure category: what `NAME_failures.md` shows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorstExample {
    pub id: String,
    pub severity: f64,
    /// Per-example ROUGE-L F-measure (0-1), when ROUGE was computed.
    pub rouge_l: Option<f64>,
    pub prediction_words: usize,
    pub reference_words: usize,
    pub dialogue_words: usize,
    pub input_tokens: usize,
    /// The model's input window (tokens).
    pub max_input_tokens: usize,
    /// Numbers and names of the prediction that the dialogue never mentions.
    pub not_in_dialogue: Vec<String>,
    /// The most repeated n-gram of the prediction, if any.
    pub repeated: Option<Repeated>,
    /// The reference and the generated summary, whitespace collapsed to single spaces.
    pub reference: String,
    pub generated: String,
    /// The start of the dialogue (its first characters, as quoted in `NAME_failures.md`).
    pub dialogue: String,
    /// Whether `dialogue` was cut.
    pub dialogue_truncated: bool,
}

impl WorstExample {
    /// Example `a` (analysed from `dialogue`, `reference` and `prediction`) as a report lists it:
    /// the summaries on one line, the dialogue cut to its first `excerpt` characters.
    pub fn new(
        a: &ExampleAnalysis,
        severity: f64,
        rouge_l: Option<f64>,
        [dialogue, reference, prediction]: [&str; 3],
        excerpt: usize,
    ) -> Self {
        let quoted: String = dialogue.chars().take(excerpt).collect();
        WorstExample {
            id: a.id.clone(),
            severity,
            rouge_l,
            prediction_words: a.words.prediction,
            reference_words: a.words.reference,
            dialogue_words: a.words.dialogue,
            input_tokens: a.input_tokens,
            max_input_tokens: a.max_input_tokens,
            not_in_dialogue: a
                .unsupported_numbers
                .iter()
                .chain(&a.unsupported_names)
                .cloned()
                .collect(),
            repeated: a.repeated_ngrams.first().map(|r| Repeated {
                ngram: r.ngram.clone(),
                count: r.count,
            }),
            reference: one_line(reference),
            generated: one_line(prediction),
            dialogue_truncated: quoted.len() < dialogue.len(),
            dialogue: quoted,
        }
    }
}

/// `text` with every run of whitespace as one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The name the reports give a failure category (snake_case: `too_short`, ...).
pub fn category_name(c: Category) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{c:?}"))
}

/// `failures`: failure analysis counts (bartleby-core `metrics::analysis`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failures {
    pub total: usize,
    pub flagged: usize,
    pub counts: BTreeMap<Category, usize>,
    #[serde(deserialize_with = "thresholds")]
    pub thresholds: Thresholds,
    /// Per category, its worst examples, highest severity first (what `NAME_failures.md` lists).
    #[serde(default)]
    pub worst: BTreeMap<Category, Vec<WorstExample>>,
}

/// `NAME_metrics.json` of `bartleby eval`. The sections after `n` are left out by nothing that
/// `eval` writes; they are optional so that readers (`compare`, the dashboards) also accept
/// files with only the run description and `corpus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub name: String,
    pub model: String,
    pub data: String,
    pub split: String,
    pub n: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<usize>,
    /// How inputs longer than `max_input_tokens` were handled (`--long`; absent: truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long: Option<crate::long::LongOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// As `bartleby score`'s `corpus`: ROUGE F-measure intervals (0-1) and corpus BLEU (0-100).
    pub corpus: CorpusScores,
    /// As `bartleby score`'s `settings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<Settings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lengths: Option<Lengths>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<Failures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bartleby_version: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// bartleby benchmark

/// One row of `final_ranking.json` (an array, best first) and `final_ranking.csv` of
/// `bartleby benchmark`: the pipeline's columns (`model`, `model_id`, `rouge1`, `rouge2`,
/// `rougeL` — mid F-measures × 100 —, `time`, `throughput`, `efficiency`, `composite_score`)
/// and more. A model that failed has `error` set, no scores and no rank (listed last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingRow {
    /// 1 = best composite; `None` for a model that failed.
    pub rank: Option<usize>,
    /// A short name (the last path component of the id).
    pub model: String,
    /// What `--model` said: a directory or a hub id.
    pub model_id: String,
    pub architecture: Option<String>,
    pub rouge1: Option<f64>,
    pub rouge2: Option<f64>,
    #[serde(rename = "rougeL")]
    pub rouge_l: Option<f64>,
    #[serde(rename = "rougeLsum")]
    pub rouge_lsum: Option<f64>,
    pub bleu: Option<f64>,
    /// Wall seconds to summarize the `n` examples (loading excluded).
    pub time: Option<f64>,
    /// Seconds to load the model (not in `time`).
    pub load_time: Option<f64>,
    /// `n / time`.
    pub throughput: Option<f64>,
    /// `rougeL / time`.
    pub efficiency: Option<f64>,
    pub composite_score: Option<f64>,
    /// The process's peak resident memory after this model ran (MB; models run one after
    /// another in one process, so this is a running maximum).
    pub peak_memory_mb: Option<f64>,
    pub parameters: Option<u64>,
    pub device: String,
    pub n: usize,
    /// Share of bootstrap resamples of the examples in which the model ranks first, and its
    /// 95% rank interval there.
    pub p_first: Option<f64>,
    pub rank_low: Option<usize>,
    pub rank_high: Option<usize>,
    /// Why the model has no scores (it failed to load or to run).
    pub error: Option<String>,
}

/// Horizontal bars (one `<rect>` each, value printed beside it) as an inline SVG, for the
/// ranking's page (`final_ranking.html`) and the web dashboards: bars grow right from the label
/// column, or from the middle when a value is negative.
pub fn bar_chart_svg(bars: &[(String, f64)]) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let max = bars
        .iter()
        .map(|b| b.1.abs())
        .fold(0.0, f64::max)
        .max(1e-12);
    let (width, row, label) = (640.0, 24.0, 200.0);
    let height = row * bars.len() as f64 + 20.0;
    let negative = bars.iter().any(|b| b.1 < 0.0);
    let span = if negative {
        (width - label - 60.0) / 2.0
    } else {
        width - label - 60.0
    };
    let zero = if negative { label + span } else { label };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\">"
    );
    for (i, (name, v)) in bars.iter().enumerate() {
        let y = 10.0 + row * i as f64;
        let len = span * v.abs() / max;
        let x = if *v < 0.0 { zero - len } else { zero };
        svg += &format!(
            "<text x=\"0\" y=\"{:.1}\" font-size=\"12\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{len:.1}\" height=\"{:.1}\" fill=\"#4a7bd0\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{v:.3}</text>",
            y + 14.0,
            escape(name),
            row - 6.0,
            (x + len + 4.0).min(width - 56.0),
            y + 14.0
        );
    }
    svg + "</svg>"
}

/// The columns of `final_ranking.csv`, in order (the JSON keys of [`RankingRow`]).
pub const RANKING_COLUMNS: [&str; 22] = [
    "rank",
    "model",
    "model_id",
    "architecture",
    "rouge1",
    "rouge2",
    "rougeL",
    "rougeLsum",
    "bleu",
    "time",
    "load_time",
    "throughput",
    "efficiency",
    "composite_score",
    "peak_memory_mb",
    "parameters",
    "device",
    "n",
    "p_first",
    "rank_low",
    "rank_high",
    "error",
];

// ---------------------------------------------------------------------------------------------
// bartleby compare

/// The significance rule of `bartleby compare`, as written into its outputs.
pub const COMPARE_RULE: &str = "A ROUGE delta is marked significant (*) when the two runs' 95% \
bootstrap intervals do not overlap: this run's low > the baseline's high, or this run's high < \
the baseline's low. The intervals are computed separately for each run (not paired), so the rule \
is conservative: overlapping intervals do not prove that there is no difference. BLEU has no \
interval; its delta is never marked.";

/// A difference against the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub delta: f64,
    /// Whether the intervals do not overlap ([`COMPARE_RULE`]); `None` for a metric without
    /// interval.
    pub significant: Option<bool>,
}

/// One run of a comparison: its description and scores as read from its `NAME_metrics.json`,
/// and its deltas against the baseline (none for the baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRun {
    pub name: String,
    pub scores: CorpusScores,
    #[serde(default)]
    pub deltas_vs_baseline: BTreeMap<String, Delta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// The metrics file the run was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Corpus BLEU again (as in `scores`), `null` when not computed.
    #[serde(default)]
    pub bleu: Option<f64>,
}

/// `NAME.json` of `bartleby compare`. Written with its keys sorted (as a `serde_json::Value`
/// prints them): [`CompareReport::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub baseline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub runs: Vec<CompareRun>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl CompareReport {
    /// Pretty JSON with every object's keys in sorted order, and a final newline.
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("serializable");
        serde_json::to_string_pretty(&value).expect("serializable") + "\n"
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Reads a report (any JSON object type of this module) from `bytes`. Errors are one line naming
/// `file` and the field path: `FILE: invalid JSON: ...`, `FILE: expected a JSON object (WHAT)`,
/// `FILE: missing field "a.b"`, `FILE: field "a.b" must be a number`, ...
pub fn from_json<T: DeserializeOwned>(bytes: &[u8], file: &str, what: &str) -> Result<T, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{file}: invalid JSON: {e}"))?;
    from_value(&value, file, what)
}

/// A report that is a JSON array of rows (`final_ranking.json`), read as [`from_json`] reads
/// objects: one-line errors naming the file and the field path (`[1].rougeL`).
pub fn rows_from_json<T: DeserializeOwned>(
    bytes: &[u8],
    file: &str,
    what: &str,
) -> Result<Vec<T>, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{file}: invalid JSON: {e}"))?;
    if !value.is_array() {
        return Err(format!("{file}: expected a JSON array ({what})"));
    }
    Vec::<T>::deserialize(At {
        value: &value,
        path: String::new(),
    })
    .map_err(|e| e.message(file))
}

/// [`from_json`] of an already parsed document.
pub fn from_value<T: DeserializeOwned>(value: &Value, file: &str, what: &str) -> Result<T, String> {
    if !value.is_object() {
        return Err(format!("{file}: expected a JSON object ({what})"));
    }
    T::deserialize(At {
        value,
        path: String::new(),
    })
    .map_err(|e| e.message(file))
}

fn optional_prf<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Prf>, D::Error> {
    #[derive(Deserialize)]
    struct P {
        precision: f64,
        recall: f64,
        f1: f64,
    }
    Ok(Option::<P>::deserialize(d)?.map(|p| Prf {
        precision: p.precision,
        recall: p.recall,
        f1: p.f1,
    }))
}

fn thresholds<'de, D: Deserializer<'de>>(d: D) -> Result<Thresholds, D::Error> {
    #[derive(Deserialize)]
    struct T {
        too_short_ratio: f64,
        too_long_ratio: f64,
        repeat_ngram: usize,
        repeat_min: usize,
        min_unsupported: usize,
        ignore_capitalized: Vec<String>,
    }
    let t = T::deserialize(d)?;
    Ok(Thresholds {
        too_short_ratio: t.too_short_ratio,
        too_long_ratio: t.too_long_ratio,
        repeat_ngram: t.repeat_ngram,
        repeat_min: t.repeat_min,
        min_unsupported: t.min_unsupported,
        ignore_capitalized: t.ignore_capitalized,
    })
}

/// A deserialization error and the field path where it happened.
#[derive(Debug)]
struct FieldError {
    kind: ErrorKind,
    /// The full path, set by the innermost value that saw the error.
    path: Option<String>,
}

#[derive(Debug)]
enum ErrorKind {
    /// The name of the missing field.
    Missing(String),
    /// What was expected (serde's `Expected` text).
    Type(String),
    Range,
    Other(String),
}

impl FieldError {
    fn new(kind: ErrorKind) -> Self {
        FieldError { kind, path: None }
    }

    fn message(&self, file: &str) -> String {
        let path = self.path.as_deref().unwrap_or("");
        match &self.kind {
            ErrorKind::Missing(_) => format!("{file}: missing field \"{path}\""),
            ErrorKind::Type(expected) => {
                format!("{file}: field \"{path}\" must be {}", noun(expected))
            }
            ErrorKind::Range => format!("{file}: field \"{path}\" is out of range"),
            ErrorKind::Other(m) if path.is_empty() => format!("{file}: {m}"),
            ErrorKind::Other(m) => format!("{file}: field \"{path}\": {m}"),
        }
    }
}

/// serde's name of an expected type, as the JSON it takes.
fn noun(expected: &str) -> String {
    match expected {
        "f64" | "f32" => "a number".into(),
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            "a whole number".into()
        }
        "a boolean" => "true or false".into(),
        "a sequence" => "a list".into(),
        "a map" => "an object".into(),
        e if e.starts_with("struct ") => "an object".into(),
        e => e.to_string(),
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message("JSON"))
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        FieldError::new(ErrorKind::Other(msg.to_string()))
    }

    fn invalid_type(_: de::Unexpected, expected: &dyn de::Expected) -> Self {
        FieldError::new(ErrorKind::Type(expected.to_string()))
    }

    fn invalid_value(_: de::Unexpected, _: &dyn de::Expected) -> Self {
        FieldError::new(ErrorKind::Range)
    }

    fn missing_field(field: &'static str) -> Self {
        FieldError::new(ErrorKind::Missing(field.to_string()))
    }
}

/// A JSON value at a field path: deserializes like `serde_json::Value` does, recording where an
/// error happened.
struct At<'de> {
    value: &'de Value,
    path: String,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl At<'_> {
    /// Gives an error not located yet this value's path (a missing field: the path of the
    /// field inside this object).
    fn locate<T>(&self, result: Result<T, FieldError>) -> Result<T, FieldError> {
        result.map_err(|mut e| {
            if e.path.is_none() {
                e.path = Some(match &e.kind {
                    ErrorKind::Missing(field) => join(&self.path, field),
                    _ => self.path.clone(),
                });
            }
            e
        })
    }
}

impl<'de> Deserializer<'de> for At<'de> {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        let result = match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter(),
                index: 0,
                path: &self.path,
            }),
            Value::Object(map) => visitor.visit_map(Entries {
                entries: map.iter(),
                value: None,
                path: &self.path,
            }),
        };
        self.locate(result)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        let result = match self.value {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(FieldError::new(ErrorKind::Type("a string".into()))),
        };
        self.locate(result)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct Items<'a, 'de> {
    items: std::slice::Iter<'de, Value>,
    index: usize,
    path: &'a str,
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = FieldError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, FieldError> {
        let Some(value) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{}]", self.path, self.index);
        self.index += 1;
        seed.deserialize(At { value, path }).map(Some)
    }
}

struct Entries<'a, 'de> {
    entries: serde_json::map::Iter<'de>,
    value: Option<(&'de String, &'de Value)>,
    path: &'a str,
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = FieldError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, FieldError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        let key: de::value::BorrowedStrDeserializer<'de, FieldError> =
            de::value::BorrowedStrDeserializer::new(key);
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, FieldError> {
        let (key, value) = self.value.take().expect("a key before its value");
        seed.deserialize(At {
            value,
            path: join(self.path, key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: DeserializeOwned>(json: &str) -> Result<T, String> {
        from_json(json.as_bytes(), "f.json", "a test report")
    }

    #[test]
    fn errors_name_the_field_path() {
        let e = read::<CompareReport>(r#"{"baseline": "a", "runs": [{"name": "a"}]}"#);
        assert_eq!(e.unwrap_err(), "f.json: missing field \"runs[0].scores\"");
        let e = read::<CompareReport>(r#"{"baseline": "a", "runs": 3}"#);
        assert_eq!(e.unwrap_err(), "f.json: field \"runs\" must be a list");
        let e = read::<EvalReport>(
            r#"{"name": "x", "model": "m", "data": "d", "split": "s", "n": 1,
                "corpus": {"rouge1": {"low": "a", "mid": 0.1, "high": 0.2}}}"#,
        );
        assert_eq!(
            e.unwrap_err(),
            "f.json: field \"corpus.rouge1.low\" must be a number"
        );
        let e = read::<EvalReport>(
            r#"{"name": "x", "model": "m", "data": "d", "split": "s", "n": 1,
                "corpus": {"rouge2": {"mid": 0.1, "high": 0.2}}}"#,
        );
        assert_eq!(
            e.unwrap_err(),
            "f.json: missing field \"corpus.rouge2.low\""
        );
        let e = read::<EvalReport>(r#"{"name": "x", "model": "m", "data": "d", "split": "s"}"#);
        assert_eq!(e.unwrap_err(), "f.json: missing field \"n\"");
        let e = read::<EvalReport>(
            r#"{"name": "x", "model": "m", "data": "d", "split": "s", "n": 1.5, "corpus": {}}"#,
        );
        assert_eq!(e.unwrap_err(), "f.json: field \"n\" must be a whole number");
        assert_eq!(
            read::<EvalReport>("[1]").unwrap_err(),
            "f.json: expected a JSON object (a test report)"
        );
        assert!(read::<EvalReport>("{oops")
            .unwrap_err()
            .starts_with("f.json: invalid JSON: "));
    }

    #[test]
    fn reports_round_trip() {
        let mut corpus = CorpusScores {
            bleu: Some(12.5),
            bertscore: Some(Prf {
                precision: 0.9,
                recall: 0.8,
                f1: 0.85,
            }),
            ..CorpusScores::default()
        };
        corpus.set_rouge([Some(Interval::point(0.25)), None, None, None]);
        let mut counts = BTreeMap::new();
        counts.insert(Category::TooShort, 2);
        let report = EvalReport {
            name: "r".into(),
            model: "m".into(),
            data: "d".into(),
            split: "validation".into(),
            n: 4,
            selection: None,
            generation: Some(GenerationConfig::default()),
            max_input_tokens: Some(64),
            long: None,
            batch_size: Some(8),
            device: Some("cpu".into()),
            corpus,
            scoring: None,
            lengths: None,
            failures: Some(Failures {
                total: 4,
                flagged: 2,
                counts,
                thresholds: Thresholds::default(),
                worst: BTreeMap::new(),
            }),
            timing: None,
            bartleby_version: Some("0.1.0".into()),
        };
        let json = serde_json::to_string_pretty(&report).unwrap();
        assert_eq!(read::<EvalReport>(&json).unwrap(), report);
        let compare = CompareReport {
            baseline: "r".into(),
            rule: Some(COMPARE_RULE.into()),
            runs: vec![CompareRun {
                name: "r".into(),
                scores: report.corpus.clone(),
                deltas_vs_baseline: BTreeMap::new(),
                n: Some(4),
                file: Some("r_metrics.json".into()),
                model: Some("m".into()),
                data: Some("d".into()),
                split: Some("validation".into()),
                bleu: None,
            }],
            warnings: vec![],
        };
        let json = compare.to_json();
        assert!(json.contains("\"bleu\": null"), "{json}");
        assert_eq!(read::<CompareReport>(&json).unwrap(), compare);
    }
}
