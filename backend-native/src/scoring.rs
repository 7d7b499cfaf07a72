//! Scoring predictions against references as `bartleby score` does, shared with `bartleby eval`:
//! the metric flags, ROUGE with bootstrap intervals and BLEU over [`Pair`]s into a
//! [`ScoreReport`] (bartleby-core `metrics::report`), and loading a BERTScore encoder.

use crate::input::Pair;
use crate::model_files;
use crate::progress;
use anyhow::{anyhow, bail, Context, Result};
use bartleby_core::metrics::bertscore::{self, BertScorer};
use bartleby_core::metrics::report::{
    BleuSettings, CorpusScores, ExampleScores, HfEvaluateRouge, Interval, RougeSettings,
    ScoreReport, Settings,
};
use bartleby_core::metrics::{bleu, rouge};
use bartleby_core::models::bert::BertConfig;
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use std::path::Path;

/// The reference implementations the scores reproduce.
pub const ROUGE_REFERENCE: &str = "rouge_score 0.1.2";
pub const BLEU_REFERENCE: &str = "sacrebleu 2.6.0";
pub const BERTSCORE_REFERENCE: &str = "bert_score 0.3.13";
/// The bootstrap samples of evaluate's rouge metric (`BootstrapAggregator()`'s default, fixed).
const HF_EVALUATE_SAMPLES: u64 = 1000;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BleuPad {
    /// Missing references are ignored (sacrebleu with None).
    None,
    /// Missing references are empty strings (sacrebleu with '').
    Empty,
}

impl BleuPad {
    pub fn name(self) -> &'static str {
        match self {
            BleuPad::None => "none",
            BleuPad::Empty => "empty",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Rouge,
    Bleu,
    BertScore,
}

impl Metric {
    pub fn name(self) -> &'static str {
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
pub fn bleu_signature(pairs: &[Pair], pad: BleuPad) -> String {
    let min = pairs.iter().map(|p| p.references.len()).min().unwrap_or(0);
    let max = pairs.iter().map(|p| p.references.len()).max().unwrap_or(0);
    let nrefs = if min == max || pad == BleuPad::Empty {
        max.to_string()
    } else {
        "var".to_string()
    };
    format!("nrefs:{nrefs}|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0")
}

fn bootstrap(scores: &[rouge::RougeScores], samples: u64, seed: u32) -> Result<[Interval; 4]> {
    let agg = rouge::aggregate(scores, samples as usize, seed)
        .ok_or_else(|| anyhow::anyhow!("ROUGE bootstrap: no pairs or no samples"))?;
    Ok(Interval::of_aggregate(&agg))
}

/// Scores `pairs` and returns the output document.
pub fn score_pairs(pairs: &[Pair], metrics: &[Metric], args: &ScoreOptions) -> Result<ScoreReport> {
    let want_rouge = metrics.contains(&Metric::Rouge);
    let want_bleu = metrics.contains(&Metric::Bleu);
    let bar = progress::bar_over(pairs.len(), 300, "scoring", "pairs");
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

    let mut corpus = CorpusScores::default();
    let mut hf_evaluate = None;
    let mut settings = Settings {
        metrics: metrics.iter().map(|m| m.name().to_string()).collect(),
        pairs: pairs.len(),
        rouge: None,
        bleu: None,
        bertscore: None,
    };
    if want_rouge {
        let [r1, r2, rl, rlsum] =
            bootstrap(&rouge_scores, args.bootstrap_samples, args.bootstrap_seed)?;
        corpus.set_rouge([r1, r2, rl, rlsum].map(Some));
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
            implementation: ROUGE_REFERENCE.into(),
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
            implementation: BLEU_REFERENCE.into(),
            padding: args.bleu_pad.name().into(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
