//! `bartleby score`: ROUGE, BLEU and BERTScore of predictions against references, a thin shell
//! over [`bartleby_core::metrics`] (rouge-score 0.1.2, sacrebleu 2.6.0 and bert_score 0.3.13
//! reproduced exactly).

use crate::device::{self, DeviceArg};
use crate::model_files;
use crate::output::Sink;
use anyhow::{anyhow, bail, Context, Result};
use bartleby_core::metrics::bertscore::{self, Baseline, BertScorer, Prf};
use bartleby_core::metrics::{bleu, rouge};
use bartleby_core::models::bert::BertConfig;
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The reference implementations the scores reproduce.
pub const ROUGE_REFERENCE: &str = "rouge_score 0.1.2";
pub const BLEU_REFERENCE: &str = "sacrebleu 2.6.0";
pub const BERTSCORE_REFERENCE: &str = "bert_score 0.3.13";
/// bert_score's default model (`lang="en"`).
const BERTSCORE_DEFAULT_MODEL: &str = "roberta-large";
/// The bootstrap samples of evaluate's rouge metric (`BootstrapAggregator()`'s default, fixed).
const HF_EVALUATE_SAMPLES: u64 = 1000;

#[derive(Args, Debug)]
#[command(after_long_help = SCORE_HELP)]
pub struct ScoreArgs {
    /// Input JSONL, one pair per line: {"id": ..., "prediction": "...", "references": ["...", ...]}
    /// (or "reference": "..."); `id` is optional (default: 0-based position). `-` reads stdin.
    #[arg(long)]
    pub input: PathBuf,
    /// Output JSON (`-` = stdout). Written to a temp file and renamed when complete.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub metric: MetricArgs,
    /// How corpus BLEU pads the reference streams of pairs with fewer references than the most:
    /// `none` (missing references are ignored, as sacrebleu does with None) or `empty` (padded
    /// with "", which sacrebleu counts as a 0-token reference). See below.
    #[arg(long, value_enum, default_value_t = BleuPad::None)]
    pub bleu_pad: BleuPad,
    /// Also output what Hugging Face `evaluate.load("rouge", seed=N).compute(predictions=...,
    /// references=..., use_stemmer=S)` returns (mid F-measures, 1000 samples), as "hf_evaluate".
    #[arg(long)]
    pub hf_evaluate: bool,
    /// BERTScore encoder: a local directory or a Hugging Face hub id (a BERT or RoBERTa
    /// checkpoint with config.json, safetensors and tokenizer.json).
    #[arg(long, default_value = BERTSCORE_DEFAULT_MODEL)]
    pub bertscore_model: String,
    /// The encoder layer whose states BERTScore compares (0 = embeddings). Default: bert_score's
    /// value for the model (roberta-large: 17); required for models its table lacks.
    #[arg(long)]
    pub bertscore_layer: Option<usize>,
    /// BERTScore with idf weights computed over the references (bert_score's idf=True).
    #[arg(long)]
    pub idf: bool,
    /// Rescale BERTScore with a baseline file in bert_score's format (CSV: LAYER,P,R,F; the row
    /// of --bertscore-layer): (score - b) / (1 - b).
    #[arg(long, value_name = "FILE")]
    pub rescale: Option<PathBuf>,
    /// BERTScore batch size (bert_score's batch_size; it also groups the greedy matching, which
    /// can change scores slightly, as in bert_score).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    /// Device for the BERTScore encoder.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Which metrics and how ROUGE is computed: the flags `score` and `eval` share.
#[derive(Args, Debug, Clone)]
pub struct MetricArgs {
    /// Comma-separated metrics: rouge, bleu (and, for `score`, bertscore).
    #[arg(long, value_delimiter = ',', default_value = "rouge,bleu")]
    pub metrics: Vec<String>,
    /// ROUGE with the Porter stemmer (rouge_score's use_stemmer=True).
    #[arg(long)]
    pub stemmer: bool,
    /// Seed of the ROUGE bootstrap, as `np.random.seed(N)` before `BootstrapAggregator.aggregate()`.
    #[arg(long, default_value_t = 0)]
    pub bootstrap_seed: u32,
    /// Bootstrap resamples for the corpus ROUGE intervals (rouge_score's n_samples).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub bootstrap_samples: u64,
}

/// Everything [`score_pairs`] needs besides the pairs.
#[derive(Debug, Clone, Copy)]
pub struct ScoreOptions {
    pub stemmer: bool,
    pub bootstrap_seed: u32,
    pub bootstrap_samples: u64,
    pub bleu_pad: BleuPad,
    pub hf_evaluate: bool,
}

impl MetricArgs {
    /// These settings with BLEU padding `none` and without the `evaluate` numbers.
    pub fn options(&self) -> ScoreOptions {
        ScoreOptions {
            stemmer: self.stemmer,
            bootstrap_seed: self.bootstrap_seed,
            bootstrap_samples: self.bootstrap_samples,
            bleu_pad: BleuPad::None,
            hf_evaluate: false,
        }
    }
}

const SCORE_HELP: &str = "\
Scores:
  per_example: rouge1/rouge2/rougeL/rougeLsum {precision, recall, fmeasure} as rouge_score's
    RougeScorer.score_multi (several references: per type, the reference with the best F), and
    bleu = sacrebleu.sentence_bleu(prediction, references).score (0-100).
  corpus: for each ROUGE type {low, mid, high} of the F-measure from rouge_score's
    BootstrapAggregator (95% interval) after np.random.seed(--bootstrap-seed), and
    bleu = sacrebleu.corpus_bleu(predictions, reference_streams).score, where stream k holds the
    k-th reference of every pair.
  rougeLsum splits sentences on \"\\n\" only (rouge_score does not split sentences itself).

Reference streams when pairs have different numbers of references (--bleu-pad):
  sacrebleu's README says a missing reference can be given as None or as ''. They differ:
  sacrebleu drops None, but keeps '' as a reference of 0 tokens, which becomes the \"closest\"
  reference length of a prediction at most half as long as its real references, and so shrinks
  the brevity penalty. --bleu-pad none (default) gives sacrebleu's result with None padding (the
  pair is scored against its own references only); --bleu-pad empty gives its result with ''
  padding. Both are the same when every pair has the same number of references.

--hf-evaluate: evaluate's rouge metric (evaluate 0.4.6, metrics/rouge/rouge.py) scores with
  RougeScorer(use_stemmer=False unless --stemmer).score_multi and returns the BootstrapAggregator's
  mid F-measure per type, always with 1000 bootstrap samples (its BootstrapAggregator() default;
  --bootstrap-samples changes \"corpus\" only). evaluate reseeds numpy with the module's seed
  inside compute(): pass --bootstrap-seed N to reproduce evaluate.load(\"rouge\", seed=N) (or
  np.random.seed(N) before evaluate.load); without a seed, evaluate's numbers change from process
  to process.

bertscore: bert_score.score(predictions, references, model_type=--bertscore-model,
  num_layers=--bertscore-layer, idf=--idf, batch_size=--batch-size) per example, as
  {precision, recall, f1}; with several references P, R and F are each the best over them
  (separately, as bert_score does); corpus = the means. --rescale FILE applies
  (score - b) / (1 - b) with b from the file's row for the layer (bert_score's
  rescale_with_baseline with baseline_path=FILE). Empty texts score 0 (as bert_score).
";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BleuPad {
    /// Missing references are ignored (sacrebleu with None).
    None,
    /// Missing references are empty strings (sacrebleu with '').
    Empty,
}

impl BleuPad {
    fn name(self) -> &'static str {
        match self {
            BleuPad::None => "none",
            BleuPad::Empty => "empty",
        }
    }
}

/// One scored pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The input's `id`, or its 0-based position when it has none.
    pub id: Value,
    pub prediction: String,
    pub references: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Rouge,
    Bleu,
    BertScore,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Rouge => "rouge",
            Metric::Bleu => "bleu",
            Metric::BertScore => "bertscore",
        }
    }
}

/// Parses `--metrics` (duplicates dropped, order kept).
pub fn parse_metrics(names: &[String]) -> Result<Vec<Metric>> {
    let mut out = Vec::new();
    for name in names {
        let m = match name.trim().to_ascii_lowercase().as_str() {
            "rouge" => Metric::Rouge,
            "bleu" | "sacrebleu" => Metric::Bleu,
            "bertscore" | "bert_score" | "bert-score" => Metric::BertScore,
            "" => bail!("--metrics: empty metric name (available: rouge, bleu, bertscore)"),
            other => {
                bail!("--metrics: unknown metric {other:?} (available: rouge, bleu, bertscore)")
            }
        };
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        bail!("--metrics: no metric given (available: rouge, bleu, bertscore)");
    }
    Ok(out)
}

/// Reads the pairs of `path` (`-` = stdin).
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let (name, bytes) = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| anyhow::anyhow!("stdin: read failed: {e}"))?;
        ("stdin".to_string(), buf)
    } else {
        let name = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{name}: cannot read input: {e}"))?;
        (name, bytes)
    };
    let pairs = parse_pairs(&bytes, &name)?;
    if pairs.is_empty() {
        bail!("{name}: no pairs in input");
    }
    Ok(pairs)
}

/// Parses JSONL pairs; errors name the file, the line and the field.
pub fn parse_pairs(bytes: &[u8], name: &str) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for row in crate::input::jsonl_objects(bytes, name) {
        let (n, obj) = row?;
        let prediction = match obj.get("prediction") {
            None => bail!("{name} line {n}: missing field \"prediction\""),
            Some(Value::String(s)) => s.clone(),
            Some(_) => bail!("{name} line {n}: field \"prediction\" must be a string"),
        };
        let references = match (obj.get("references"), obj.get("reference")) {
            (Some(_), Some(_)) => {
                bail!("{name} line {n}: give either \"references\" or \"reference\", not both")
            }
            (None, None) => {
                bail!("{name} line {n}: missing field \"references\" (or \"reference\")")
            }
            (None, Some(Value::String(s))) => vec![s.clone()],
            (None, Some(_)) => bail!("{name} line {n}: field \"reference\" must be a string"),
            (Some(Value::Array(refs)), None) => {
                if refs.is_empty() {
                    bail!("{name} line {n}: field \"references\" is an empty list");
                }
                refs.iter()
                    .enumerate()
                    .map(|(k, r)| match r {
                        Value::String(s) => Ok(s.clone()),
                        _ => bail!("{name} line {n}: field \"references\"[{k}] must be a string"),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            (Some(_), None) => {
                bail!("{name} line {n}: field \"references\" must be a list of strings")
            }
        };
        let id = obj
            .get("id")
            .cloned()
            .unwrap_or_else(|| Value::from(pairs.len()));
        pairs.push(Pair {
            id,
            prediction,
            references,
        });
    }
    Ok(pairs)
}

/// The reference streams for corpus BLEU: stream k holds the k-th reference of every pair. A pair
/// with fewer references is padded with its own first reference (`BleuPad::None`: a duplicate
/// reference changes neither the clipped n-gram counts nor the closest reference length, so this
/// equals sacrebleu with `None`) or with `""` (`BleuPad::Empty`).
pub fn reference_streams(pairs: &[Pair], pad: BleuPad) -> Vec<Vec<&str>> {
    let width = pairs.iter().map(|p| p.references.len()).max().unwrap_or(0);
    (0..width)
        .map(|k| {
            pairs
                .iter()
                .map(|p| match (p.references.get(k), pad) {
                    (Some(r), _) => r.as_str(),
                    (None, BleuPad::None) => p.references[0].as_str(),
                    (None, BleuPad::Empty) => "",
                })
                .collect()
        })
        .collect()
}

/// sacrebleu's BLEU signature for these settings (`nrefs:var` when sacrebleu would see a
/// variable number of references).
fn bleu_signature(pairs: &[Pair], pad: BleuPad) -> String {
    let min = pairs.iter().map(|p| p.references.len()).min().unwrap_or(0);
    let max = pairs.iter().map(|p| p.references.len()).max().unwrap_or(0);
    let nrefs = if min == max || pad == BleuPad::Empty {
        max.to_string()
    } else {
        "var".to_string()
    };
    format!("nrefs:{nrefs}|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0")
}

/// One row of `per_example` (fields in output order).
#[allow(non_snake_case)]
#[derive(Debug, Serialize)]
pub struct ExampleScores {
    pub id: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge1: Option<rouge::Score>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge2: Option<rouge::Score>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rougeL: Option<rouge::Score>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rougeLsum: Option<rouge::Score>,
    /// sacrebleu `sentence_bleu(prediction, references).score`, 0-100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bleu: Option<f64>,
    /// bert_score's P/R/F (rescaled with --rescale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bertscore: Option<Prf>,
}

/// The bootstrap interval of a ROUGE type's F-measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Interval {
    pub low: f64,
    pub mid: f64,
    pub high: f64,
}

/// `corpus`: bootstrap intervals of the ROUGE F-measures and corpus BLEU.
#[allow(non_snake_case)]
#[derive(Debug, Serialize)]
pub struct CorpusScores {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge1: Option<Interval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge2: Option<Interval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rougeL: Option<Interval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rougeLsum: Option<Interval>,
    /// sacrebleu `corpus_bleu(predictions, reference_streams).score`, 0-100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bleu: Option<f64>,
    /// The means of the per-example BERTScores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bertscore: Option<Prf>,
}

/// What `evaluate.load("rouge").compute(...)` returns.
#[allow(non_snake_case)]
#[derive(Debug, Serialize)]
pub struct HfEvaluateRouge {
    pub rouge1: f64,
    pub rouge2: f64,
    pub rougeL: f64,
    pub rougeLsum: f64,
}

#[derive(Debug, Serialize)]
pub struct RougeSettings {
    pub implementation: &'static str,
    pub stemmer: bool,
    pub bootstrap_seed: u32,
    pub bootstrap_samples: u64,
    pub confidence_interval: f64,
    pub hf_evaluate: bool,
}

#[derive(Debug, Serialize)]
pub struct BleuSettings {
    pub implementation: &'static str,
    pub padding: &'static str,
    /// sacrebleu's signature for these settings.
    pub signature: String,
}

#[derive(Debug, Serialize)]
pub struct BertScoreSettings {
    pub implementation: &'static str,
    pub model: String,
    pub layer: usize,
    pub idf: bool,
    /// The baseline file of --rescale.
    pub rescale: Option<String>,
    pub batch_size: u64,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub metrics: Vec<&'static str>,
    pub pairs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge: Option<RougeSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bleu: Option<BleuSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bertscore: Option<BertScoreSettings>,
}

/// The output document.
#[derive(Debug, Serialize)]
pub struct ScoreReport {
    pub per_example: Vec<ExampleScores>,
    pub corpus: CorpusScores,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hf_evaluate: Option<HfEvaluateRouge>,
    pub settings: Settings,
}

fn intervals(agg: &rouge::RougeAggregate) -> [Interval; 4] {
    [agg.rouge1, agg.rouge2, agg.rougeL, agg.rougeLsum].map(|a| Interval {
        low: a.low.fmeasure,
        mid: a.mid.fmeasure,
        high: a.high.fmeasure,
    })
}

fn bootstrap(scores: &[rouge::RougeScores], samples: u64, seed: u32) -> Result<[Interval; 4]> {
    let agg = rouge::aggregate(scores, samples as usize, seed)
        .ok_or_else(|| anyhow::anyhow!("ROUGE bootstrap: no pairs or no samples"))?;
    Ok(intervals(&agg))
}

/// Scores `pairs` and returns the output document.
pub fn score_pairs(pairs: &[Pair], metrics: &[Metric], args: &ScoreOptions) -> Result<ScoreReport> {
    let want_rouge = metrics.contains(&Metric::Rouge);
    let want_bleu = metrics.contains(&Metric::Bleu);
    let bar = progress_bar(pairs.len());
    let mut per_example = Vec::with_capacity(pairs.len());
    let mut rouge_scores = Vec::with_capacity(if want_rouge { pairs.len() } else { 0 });
    for pair in pairs {
        let refs: Vec<&str> = pair.references.iter().map(String::as_str).collect();
        let rouge = want_rouge.then(|| rouge::score(&pair.prediction, &refs, args.stemmer));
        if let Some(r) = rouge {
            rouge_scores.push(r);
        }
        per_example.push(ExampleScores {
            id: pair.id.clone(),
            rouge1: rouge.map(|r| r.rouge1),
            rouge2: rouge.map(|r| r.rouge2),
            rougeL: rouge.map(|r| r.rougeL),
            rougeLsum: rouge.map(|r| r.rougeLsum),
            bleu: want_bleu.then(|| bleu::sentence_bleu(&pair.prediction, &refs).score),
            bertscore: None,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut corpus = CorpusScores {
        rouge1: None,
        rouge2: None,
        rougeL: None,
        rougeLsum: None,
        bleu: None,
        bertscore: None,
    };
    let mut hf_evaluate = None;
    let mut settings = Settings {
        metrics: metrics.iter().map(|m| m.name()).collect(),
        pairs: pairs.len(),
        rouge: None,
        bleu: None,
        bertscore: None,
    };
    if want_rouge {
        let [r1, r2, rl, rlsum] =
            bootstrap(&rouge_scores, args.bootstrap_samples, args.bootstrap_seed)?;
        (
            corpus.rouge1,
            corpus.rouge2,
            corpus.rougeL,
            corpus.rougeLsum,
        ) = (Some(r1), Some(r2), Some(rl), Some(rlsum));
        if args.hf_evaluate {
            // evaluate's rouge.py always uses BootstrapAggregator()'s default n_samples.
            let [h1, h2, hl, hlsum] = if args.bootstrap_samples == HF_EVALUATE_SAMPLES {
                [r1, r2, rl, rlsum]
            } else {
                bootstrap(&rouge_scores, HF_EVALUATE_SAMPLES, args.bootstrap_seed)?
            };
            hf_evaluate = Some(HfEvaluateRouge {
                rouge1: h1.mid,
                rouge2: h2.mid,
                rougeL: hl.mid,
                rougeLsum: hlsum.mid,
            });
        }
        settings.rouge = Some(RougeSettings {
            implementation: ROUGE_REFERENCE,
            stemmer: args.stemmer,
            bootstrap_seed: args.bootstrap_seed,
            bootstrap_samples: args.bootstrap_samples,
            confidence_interval: 0.95,
            hf_evaluate: args.hf_evaluate,
        });
    }
    if want_bleu {
        let streams = reference_streams(pairs, args.bleu_pad);
        let stream_refs: Vec<&[&str]> = streams.iter().map(Vec::as_slice).collect();
        let hyps: Vec<&str> = pairs.iter().map(|p| p.prediction.as_str()).collect();
        corpus.bleu = Some(bleu::corpus_bleu(&hyps, &stream_refs)?.score);
        settings.bleu = Some(BleuSettings {
            implementation: BLEU_REFERENCE,
            padding: args.bleu_pad.name(),
            signature: bleu_signature(pairs, args.bleu_pad),
        });
    }
    Ok(ScoreReport {
        per_example,
        corpus,
        hf_evaluate,
        settings,
    })
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let metrics = parse_metrics(&args.metric.metrics)?;
    if args.hf_evaluate && !metrics.contains(&Metric::Rouge) {
        bail!("--hf-evaluate needs the rouge metric (--metrics rouge,...)");
    }
    let want_bertscore = metrics.contains(&Metric::BertScore);
    if !want_bertscore && (args.idf || args.rescale.is_some() || args.bertscore_layer.is_some()) {
        bail!("--idf, --rescale and --bertscore-layer need the bertscore metric (--metrics ...,bertscore)");
    }
    let pairs = read_pairs(&args.input)?;
    let started = Instant::now();
    let options = ScoreOptions {
        bleu_pad: args.bleu_pad,
        hf_evaluate: args.hf_evaluate,
        ..args.metric.options()
    };
    let mut doc = score_pairs(&pairs, &metrics, &options)?;
    if want_bertscore {
        add_bertscore(&mut doc, &pairs, &args)?;
    }
    let mut sink = Sink::open(args.output.as_deref())?;
    sink.write_line(&serde_json::to_string_pretty(&doc)?)?;
    sink.finish()?;
    tracing::info!(
        "scored {} pairs in {:.3}s",
        pairs.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Resolves `--bertscore-model` (directory or hub id) and loads its first `layer` layers; `layer`
/// defaults to bert_score's value for known hub ids. Returns the scorer and the layer.
pub fn load_bertscore(model: &str, layer: Option<usize>, device: &Device) -> Result<BertScorer> {
    let files =
        model_files::resolve(model).with_context(|| format!("--bertscore-model {model}"))?;
    let tokenizer_json = files.tokenizer_json.as_deref().ok_or_else(|| {
        anyhow!("--bertscore-model {model}: no tokenizer.json (BERTScore reads the fast tokenizer file)")
    })?;
    let config_bytes = read(&files.config)?;
    let config = BertConfig::from_json(&config_bytes, &files.config.display().to_string())?;
    let layer = match layer.or_else(|| bertscore::default_layer(model)) {
        Some(l) if l <= config.num_hidden_layers => l,
        Some(l) => bail!(
            "--bertscore-layer {l}: out of range for {model}, which has {} layers (0..={})",
            config.num_hidden_layers,
            config.num_hidden_layers
        ),
        None => bail!(
            "--bertscore-layer: bert_score has no default layer for {model}; pass --bertscore-layer N (0..={})",
            config.num_hidden_layers
        ),
    };
    let maps = model_files::map_files(&files.weights)?;
    let shards: Vec<(&str, &[u8])> = maps.iter().map(|(n, m)| (n.as_str(), &m[..])).collect();
    let tok_config = files.tokenizer_config.as_deref().map(read).transpose()?;
    BertScorer::from_bytes(
        &config_bytes,
        &shards,
        &read(tokenizer_json)?,
        tok_config.as_deref(),
        layer,
        device,
    )
    .with_context(|| format!("--bertscore-model {model}"))
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))
}

/// Computes BERTScore for every pair and adds it to `doc` (per example, corpus means, settings).
fn add_bertscore(doc: &mut ScoreReport, pairs: &[Pair], args: &ScoreArgs) -> Result<()> {
    let rescale_text = args
        .rescale
        .as_deref()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("--rescale {}: cannot read", p.display()))
        })
        .transpose()?;
    let device = device::init(args.device)?;
    let scorer = load_bertscore(&args.bertscore_model, args.bertscore_layer, &device)?;
    let baseline = match (&args.rescale, &rescale_text) {
        (Some(path), Some(text)) => Some(
            Baseline::from_csv(text, scorer.layer, &path.display().to_string())
                .context("--rescale")?,
        ),
        _ => None,
    };
    let settings = bertscore::Settings {
        idf: args.idf,
        batch_size: args.batch_size as usize,
        baseline,
    };
    let candidates: Vec<&str> = pairs.iter().map(|p| p.prediction.as_str()).collect();
    let references: Vec<Vec<&str>> = pairs
        .iter()
        .map(|p| p.references.iter().map(String::as_str).collect())
        .collect();
    let texts: std::collections::HashSet<&str> = candidates
        .iter()
        .copied()
        .chain(references.iter().flatten().copied())
        .collect();
    let bar = encoding_bar(texts.len());
    let scores = bertscore::score(&scorer, &candidates, &references, &settings, &mut |n| {
        bar.inc(n as u64)
    })?;
    bar.finish_and_clear();
    let n = scores.len() as f64;
    let mean = |f: fn(&Prf) -> f64| scores.iter().map(f).sum::<f64>() / n;
    doc.corpus.bertscore = Some(Prf {
        precision: mean(|s| s.precision),
        recall: mean(|s| s.recall),
        f1: mean(|s| s.f1),
    });
    for (row, s) in doc.per_example.iter_mut().zip(scores) {
        row.bertscore = Some(s);
    }
    doc.settings.bertscore = Some(BertScoreSettings {
        implementation: BERTSCORE_REFERENCE,
        model: args.bertscore_model.clone(),
        layer: scorer.layer,
        idf: args.idf,
        rescale: args.rescale.as_ref().map(|p| p.display().to_string()),
        batch_size: args.batch_size,
    });
    Ok(())
}

fn encoding_bar(n: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} BERTScore: encoding [{bar:30}] {pos}/{len} texts ({per_sec}, ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

fn progress_bar(n: usize) -> indicatif::ProgressBar {
    if n <= 300 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} scoring [{bar:30}] {pos}/{len} pairs ({per_sec}, ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_accept_references_or_reference() {
        let pairs = parse_pairs(
            b"{\"id\":\"a\",\"prediction\":\"x\",\"references\":[\"y\",\"z\"]}\n\n{\"prediction\":\"\",\"reference\":\"w\"}\n",
            "f",
        )
        .unwrap();
        assert_eq!(pairs[0].references, vec!["y", "z"]);
        assert_eq!(pairs[1].id, Value::from(1));
        assert_eq!(pairs[1].references, vec!["w"]);
    }

    #[test]
    fn pair_errors_name_line_and_field() {
        let err = |b: &[u8]| parse_pairs(b, "p.jsonl").unwrap_err().to_string();
        assert_eq!(
            err(b"{\"references\":[\"y\"]}"),
            "p.jsonl line 1: missing field \"prediction\""
        );
        assert_eq!(
            err(b"{\"prediction\":\"x\",\"references\":[]}"),
            "p.jsonl line 1: field \"references\" is an empty list"
        );
        assert_eq!(
            err(b"{\"prediction\":\"x\",\"references\":[\"a\",3]}"),
            "p.jsonl line 1: field \"references\"[1] must be a string"
        );
        assert_eq!(
            err(b"{\"prediction\":\"x\",\"reference\":[\"a\"]}"),
            "p.jsonl line 1: field \"reference\" must be a string"
        );
    }

    #[test]
    fn metrics_parse() {
        let m = |s: &[&str]| parse_metrics(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(
            m(&["bleu", "rouge", "bleu"]).unwrap(),
            vec![Metric::Bleu, Metric::Rouge]
        );
        assert_eq!(
            m(&["rouge", "bert_score"]).unwrap(),
            vec![Metric::Rouge, Metric::BertScore]
        );
        assert!(m(&["foo"])
            .unwrap_err()
            .to_string()
            .contains("unknown metric \"foo\""));
    }

    #[test]
    fn none_padding_equals_dropping_the_missing_reference() {
        let pairs = vec![
            Pair {
                id: 0.into(),
                prediction: "short".into(),
                references: vec!["this is a much longer reference than the prediction".into()],
            },
            Pair {
                id: 1.into(),
                prediction: "the dog bit the man".into(),
                references: vec!["the dog bit the man".into(), "a dog bit a man".into()],
            },
        ];
        let s = reference_streams(&pairs, BleuPad::None);
        assert_eq!(s[1][0], pairs[0].references[0]);
        let s = reference_streams(&pairs, BleuPad::Empty);
        assert_eq!(s[1][0], "");
        assert_eq!(
            bleu_signature(&pairs, BleuPad::None),
            "nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
        );
    }
}
