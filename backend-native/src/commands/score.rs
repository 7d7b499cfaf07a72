//! `bartleby score`: ROUGE, BLEU and BERTScore of predictions against references, a thin shell
//! over [`bartleby_core::metrics`] (rouge-score 0.1.2, sacrebleu 2.6.0 and bert_score 0.3.13
//! reproduced exactly) through [`crate::scoring`].

use crate::device::{self, DeviceArg};
use crate::input::{read_pairs, Pair};
use crate::output::Sink;
use crate::progress;
use crate::scoring::{
    load_bertscore, parse_metrics, score_pairs, BleuPad, Metric, MetricArgs, ScoreOptions,
    BERTSCORE_REFERENCE,
};
use anyhow::{bail, Context, Result};
use bartleby_core::metrics::bertscore::{self, Baseline, Prf};
use bartleby_core::metrics::report::{BertScoreSettings, ScoreReport};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// bert_score's default model (`lang="en"`).
const BERTSCORE_DEFAULT_MODEL: &str = "roberta-large";

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

pub fn run(args: ScoreArgs) -> Result<()> {
    let metrics = parse_metrics(&args.metric.metrics)?;
    if args.hf_evaluate && !metrics.contains(&Metric::Rouge) {
        bail!("--hf-evaluate needs the rouge metric (--metrics rouge,...)");
    }
    let want_bertscore = metrics.contains(&Metric::BertScore);
    if !want_bertscore && (args.idf || args.rescale.is_some() || args.bertscore_layer.is_some()) {
        bail!("--idf, --rescale and --bertscore-layer need the bertscore metric (--metrics ...,bertscore)");
    }
    crate::output::check_not_input(args.output.as_deref(), &args.input, "--input")?;
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
    let device = device::init(args.device)?.device;
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
    let bar = progress::bar(texts.len() as u64, "BERTScore: encoding", "texts");
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
        implementation: BERTSCORE_REFERENCE.into(),
        model: args.bertscore_model.clone(),
        layer: scorer.layer,
        idf: args.idf,
        rescale: args.rescale.as_ref().map(|p| p.display().to_string()),
        batch_size: args.batch_size,
    });
    Ok(())
}
