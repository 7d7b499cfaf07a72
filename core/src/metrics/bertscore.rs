//! BERTScore exactly as `bert_score.score` 0.3.13 computes it (transformers 4.57), for BERT and
//! RoBERTa encoders ([`crate::models::bert`]).
//!
//! What the reference does, step by step, and where it is reproduced:
//! - `sent_encode`: the text is `strip()`ped; `""` becomes `[CLS] [SEP]`; otherwise it is encoded
//!   with special tokens, truncated to the tokenizer's `model_max_length`. bert_score loads the
//!   slow tokenizer, whose RoBERTa flavour is called with `add_prefix_space=True`: a space goes in
//!   front of the text ([`ScoreTokenizer::encode`]).
//! - several references: every (candidate, reference) row is scored, then P, R and F are each
//!   the maximum over the candidate's rows, *separately* (they may come from different
//!   references) ([`score`]).
//! - idf (`idf=True`): over the flattened list of references (M documents, duplicates count),
//!   `log((M + 1) / (df + 1))` per token id; without idf, 1 for every token but `[CLS]`/`[SEP]`
//!   (`<s>`/`</s>`), which get 0 ([`IdfWeights`]).
//! - greedy matching: token embeddings are L2-normalized; precision takes, for each candidate
//!   token, its best cosine over the reference tokens, special tokens included. The matching runs
//!   in batches of `batch_size` rows padded to the batch's longest candidate/reference, and a
//!   padded position scores 0: when a reference is shorter than the longest in its batch, a
//!   token's best match is at least 0 (same for recall) ([`match_row`]).
//! - P and R are weight-normalized sums; `F = 2PR / (P + R)`, NaN → 0. A candidate or reference
//!   of exactly 2 tokens (empty text) gets P = R = 0 (F was already NaN → 0).
//! - baseline rescaling: `(score - b) / (1 - b)` with `b` from row `L` (the row's position, not
//!   its LAYER value) of a `LAYER,P,R,F` CSV ([`Baseline`]).
//!
//! Everything is computed in f32 like the reference; P/R/F are returned as f64.

use crate::metrics::bleu::is_python_whitespace;
use crate::models::bert::{load_encoder, BertConfig, BertEncoder, BertKind};
use crate::{Error, Result};
use burn::tensor::Device;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use tokenizers::Tokenizer;

/// bert_score's `model2layers` for the BERT/RoBERTa checkpoints in its table (absolute positions).
const DEFAULT_LAYERS: [(&str, usize); 22] = [
    ("bert-base-uncased", 9),
    ("bert-large-uncased", 18),
    ("bert-base-cased-finetuned-mrpc", 9),
    ("bert-base-multilingual-cased", 9),
    ("bert-base-chinese", 8),
    ("roberta-base", 10),
    ("roberta-large", 17),
    ("roberta-large-mnli", 19),
    ("roberta-base-openai-detector", 7),
    ("roberta-large-openai-detector", 15),
    ("distilroberta-base", 5),
    ("vinai/bertweet-base", 9),
    ("ProsusAI/finbert", 10),
    ("SpanBERT/spanbert-base-cased", 8),
    ("SpanBERT/spanbert-large-cased", 17),
    ("princeton-nlp/unsup-simcse-bert-base-uncased", 10),
    ("princeton-nlp/unsup-simcse-roberta-base", 8),
    ("princeton-nlp/unsup-simcse-roberta-large", 13),
    ("princeton-nlp/sup-simcse-bert-base-uncased", 10),
    ("princeton-nlp/sup-simcse-roberta-base", 10),
    ("princeton-nlp/sup-simcse-roberta-large", 16),
    ("dbmdz/bert-base-turkish-cased", 10),
];

/// bert_score's default layer for `model` (a hub id), when its table has one. The hub's newer
/// spellings of the same repositories (`FacebookAI/roberta-large`, `google-bert/bert-base-uncased`,
/// `distilbert/distilroberta-base`) get the same layer (bert_score itself would not know them).
pub fn default_layer(model: &str) -> Option<usize> {
    let name = ["FacebookAI/", "google-bert/", "distilbert/"]
        .iter()
        .find_map(|org| model.strip_prefix(org))
        .unwrap_or(model);
    DEFAULT_LAYERS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|&(_, l)| l)
}

/// Precision, recall and F1 of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// `sent_encode` with the model's special tokens.
#[derive(Clone)]
pub struct ScoreTokenizer {
    inner: Tokenizer,
    /// The slow RobertaTokenizer's `add_prefix_space=True`.
    prefix_space: bool,
    /// `model_max_length` of tokenizer_config.json (none: no truncation, as transformers).
    max_len: Option<usize>,
    pub cls_id: u32,
    pub sep_id: u32,
    pub pad_id: u32,
}

/// transformers' "no limit" `model_max_length` is 1e30; anything this large means none.
const UNLIMITED: f64 = 1e15;

fn special_token(config: Option<&Value>, key: &str, default: &str) -> String {
    match config.and_then(|c| c.get(key)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string(),
        _ => default.to_string(),
    }
}

impl ScoreTokenizer {
    /// From tokenizer.json and, optionally, tokenizer_config.json (special tokens and
    /// `model_max_length`).
    pub fn new(
        tokenizer_json: &[u8],
        tokenizer_config: Option<&[u8]>,
        kind: BertKind,
    ) -> Result<Self> {
        let terr = |e: String| Error::Tokenizer(e);
        let mut inner = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| terr(format!("tokenizer.json: {e}")))?;
        inner
            .with_truncation(None)
            .map_err(|e| terr(e.to_string()))?;
        inner.with_padding(None);
        let config: Option<Value> = tokenizer_config
            .map(serde_json::from_slice)
            .transpose()
            .map_err(|e| terr(format!("tokenizer_config.json: {e}")))?;
        let max_len = config
            .as_ref()
            .and_then(|c| c.get("model_max_length"))
            .and_then(Value::as_f64)
            .filter(|&m| m < UNLIMITED)
            .map(|m| m as usize);
        let (cls, sep, pad) = match kind {
            BertKind::Bert => ("[CLS]", "[SEP]", "[PAD]"),
            BertKind::Roberta => ("<s>", "</s>", "<pad>"),
        };
        let id = |key: &str, default: &str| {
            let token = special_token(config.as_ref(), key, default);
            inner
                .token_to_id(&token)
                .ok_or_else(|| terr(format!("tokenizer.json has no {key} {token:?}")))
        };
        Ok(Self {
            cls_id: id("cls_token", cls)?,
            sep_id: id("sep_token", sep)?,
            pad_id: id("pad_token", pad)?,
            prefix_space: kind == BertKind::Roberta,
            max_len,
            inner,
        })
    }

    /// bert_score's `sent_encode(tokenizer, text)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let text = text.trim_matches(is_python_whitespace);
        if text.is_empty() {
            return Ok(vec![self.cls_id, self.sep_id]);
        }
        let text = if self.prefix_space {
            format!(" {text}")
        } else {
            text.to_string()
        };
        let terr = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
        let mut enc = self.inner.encode(text, false).map_err(terr)?;
        if let Some(max) = self.max_len {
            let added = self
                .inner
                .get_post_processor()
                .map(|p| tokenizers::PostProcessor::added_tokens(p, false))
                .unwrap_or(0);
            enc.truncate(
                max.saturating_sub(added),
                0,
                tokenizers::TruncationDirection::Right,
            );
        }
        let enc = self.inner.post_process(enc, None, true).map_err(terr)?;
        Ok(enc.get_ids().to_vec())
    }
}

/// The token weights: idf over the references, or 1 with special tokens at 0.
#[derive(Debug, Clone)]
pub enum IdfWeights {
    Uniform { cls_id: u32, sep_id: u32 },
    Idf { idf: HashMap<u32, f64>, unseen: f64 },
}

impl IdfWeights {
    /// bert_score's `get_idf_dict(refs)`: `log((M + 1) / (df + 1))`.
    pub fn from_references(refs: &[Vec<u32>]) -> Self {
        let mut df: HashMap<u32, usize> = HashMap::new();
        for ids in refs {
            for id in ids.iter().collect::<HashSet<_>>() {
                *df.entry(*id).or_default() += 1;
            }
        }
        let m = refs.len() as f64;
        let idf = df
            .into_iter()
            .map(|(id, c)| (id, ((m + 1.0) / (c as f64 + 1.0)).ln()))
            .collect();
        IdfWeights::Idf {
            idf,
            unseen: (m + 1.0).ln(),
        }
    }

    /// The weight of token `id` (as the reference's float32 tensor holds it).
    pub fn weight(&self, id: u32) -> f32 {
        match self {
            IdfWeights::Uniform { cls_id, sep_id } => {
                if id == *cls_id || id == *sep_id {
                    0.0
                } else {
                    1.0
                }
            }
            IdfWeights::Idf { idf, unseen } => *idf.get(&id).unwrap_or(unseen) as f32,
        }
    }
}

/// A rescale baseline: bert_score's CSV (`LAYER,P,R,F` header, one row per layer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub precision: f32,
    pub recall: f32,
    pub f1: f32,
}

impl Baseline {
    /// Row `layer` of the CSV (counted from the first row after the header, like pandas'
    /// `.iloc[layer]`), columns 2-4. `file` names the source in errors.
    pub fn from_csv(text: &str, layer: usize, file: &str) -> Result<Self> {
        let err = |message: String| Error::Config {
            file: file.to_string(),
            message,
        };
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .ok_or_else(|| err("empty baseline file".into()))?;
        if header.split(',').count() < 4 {
            return Err(err(format!(
                "expected a comma-separated header like LAYER,P,R,F, found {header:?}"
            )));
        }
        let rows: Vec<&str> = lines.collect();
        let row = rows.get(layer).ok_or_else(|| {
            err(format!(
                "no baseline for layer {layer} (the file has {} rows)",
                rows.len()
            ))
        })?;
        let cells: Vec<&str> = row.split(',').collect();
        let value = |i: usize| -> Result<f32> {
            let cell = cells.get(i).map(|c| c.trim()).unwrap_or("");
            cell.parse::<f32>().map_err(|_| {
                err(format!(
                    "row {}: column {} is not a number: {cell:?}",
                    layer + 1,
                    i + 1
                ))
            })
        };
        Ok(Self {
            precision: value(1)?,
            recall: value(2)?,
            f1: value(3)?,
        })
    }

    fn apply(&self, s: [f32; 3]) -> [f32; 3] {
        let b = [self.precision, self.recall, self.f1];
        std::array::from_fn(|k| (s[k] - b[k]) / (1.0 - b[k]))
    }
}

/// An encoder cut at the scoring layer with its tokenizer.
pub struct BertScorer {
    pub encoder: BertEncoder,
    pub tokenizer: ScoreTokenizer,
    pub config: BertConfig,
    pub layer: usize,
}

impl BertScorer {
    /// From config.json, safetensors shards `(name, bytes)`, tokenizer.json and tokenizer_config.json.
    pub fn from_bytes(
        config_json: &[u8],
        shards: &[(&str, &[u8])],
        tokenizer_json: &[u8],
        tokenizer_config: Option<&[u8]>,
        layer: usize,
        device: &Device,
    ) -> Result<Self> {
        let config = BertConfig::from_json(config_json, "config.json")?;
        let encoder = load_encoder(&config, shards, layer, device)?;
        let tokenizer = ScoreTokenizer::new(tokenizer_json, tokenizer_config, config.kind)?;
        Ok(Self {
            encoder,
            tokenizer,
            config,
            layer,
        })
    }

    /// L2-normalized token embeddings `[len × hidden]` of each text (row-major).
    /// `progress(n)` is called after each batch with the number of texts it held.
    pub fn embed(
        &self,
        token_ids: &[&[u32]],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let max = self.config.max_input_tokens();
        if let Some(long) = token_ids.iter().find(|ids| ids.len() > max) {
            return Err(Error::Input(format!(
                "a text has {} tokens but the model embeds at most {max} (its tokenizer sets no model_max_length to truncate to)",
                long.len()
            )));
        }
        let mut order: Vec<usize> = (0..token_ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(token_ids[i].len()));
        let mut out = vec![Vec::new(); token_ids.len()];
        let mut start = 0;
        while start < order.len() {
            let width = token_ids[order[start]].len();
            let n = self.batch_len(width, batch_size).min(order.len() - start);
            let batch = &order[start..start + n];
            let rows: Vec<Vec<u32>> = batch.iter().map(|&i| token_ids[i].to_vec()).collect();
            let hidden = self.encoder.hidden_states(&rows, self.tokenizer.pad_id);
            let values = hidden
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| Error::Device(format!("{e:?}")))?;
            let d = self.config.hidden_size;
            for (b, &i) in batch.iter().enumerate() {
                let row = &values[b * width * d..(b * width + token_ids[i].len()) * d];
                out[i] = normalized(row, d);
            }
            progress(n);
            start += n;
        }
        Ok(out)
    }

    /// Texts per encoder batch: at most `batch_size`, and few enough that the attention scores
    /// stay under 2^24 values (GPU buffer limits). Batching does not change the scores.
    fn batch_len(&self, width: usize, batch_size: usize) -> usize {
        let per_text = self.config.num_attention_heads * width * width;
        ((1 << 24) / per_text.max(1)).clamp(1, batch_size.max(1))
    }
}

/// Each `d`-long vector divided by its L2 norm (f32, as `torch.norm`).
fn normalized(values: &[f32], d: usize) -> Vec<f32> {
    values
        .chunks_exact(d)
        .flat_map(|v| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(move |x| x / norm)
        })
        .collect()
}

/// One side of a scored row: normalized embeddings `[len × d]` and token weights.
struct Side<'a> {
    emb: &'a [f32],
    weights: Vec<f32>,
    len: usize,
}

/// P, R, F of one (candidate, reference) row. `ref_padded` / `hyp_padded`: whether the other
/// rows of its matching batch make this reference / candidate padded (a padded position counts
/// as a similarity of 0).
fn match_row(
    hyp: &Side<'_>,
    reference: &Side<'_>,
    d: usize,
    ref_padded: bool,
    hyp_padded: bool,
) -> [f32; 3] {
    let floor = |padded: bool| if padded { 0.0f32 } else { f32::NEG_INFINITY };
    let mut best_p = vec![floor(ref_padded); hyp.len];
    let mut best_r = vec![floor(hyp_padded); reference.len];
    for i in 0..hyp.len {
        let h = &hyp.emb[i * d..(i + 1) * d];
        for j in 0..reference.len {
            let r = &reference.emb[j * d..(j + 1) * d];
            let sim: f32 = h.iter().zip(r).map(|(a, b)| a * b).sum();
            best_p[i] = best_p[i].max(sim);
            best_r[j] = best_r[j].max(sim);
        }
    }
    let weighted = |best: &[f32], w: &[f32]| {
        let total: f32 = w.iter().sum();
        best.iter()
            .zip(w)
            .map(|(b, w)| b * (w / total))
            .sum::<f32>()
    };
    let mut p = weighted(&best_p, &hyp.weights);
    let mut r = weighted(&best_r, &reference.weights);
    let f = 2.0 * p * r / (p + r);
    let f = if f.is_nan() { 0.0 } else { f };
    if hyp.len == 2 || reference.len == 2 {
        (p, r) = (0.0, 0.0);
    }
    [p, r, f]
}

/// `torch.max` over rows, per component (NaN wins, as in torch).
fn max_rows(rows: &[[f32; 3]]) -> [f32; 3] {
    std::array::from_fn(|k| {
        rows.iter().map(|r| r[k]).fold(f32::NEG_INFINITY, |a, b| {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.max(b)
            }
        })
    })
}

/// How to score.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub idf: bool,
    /// bert_score's `batch_size`: encoder batches and greedy-matching batches (the latter can
    /// change scores, see the module docs).
    pub batch_size: usize,
    pub baseline: Option<Baseline>,
}

/// `bert_score.score(candidates, references, ...)`: one [`Prf`] per candidate; each candidate
/// has one or more references. `progress(n)` reports texts encoded.
pub fn score(
    scorer: &BertScorer,
    candidates: &[&str],
    references: &[Vec<&str>],
    settings: &Settings,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Prf>> {
    if candidates.len() != references.len() || references.iter().any(Vec::is_empty) {
        return Err(Error::Input(
            "BERTScore needs one or more references for every candidate".into(),
        ));
    }
    // Flattened (candidate, reference) rows, as bert_score expands multi-reference input.
    let rows: Vec<(&str, &str)> = candidates
        .iter()
        .zip(references)
        .flat_map(|(c, refs)| refs.iter().map(move |r| (*c, *r)))
        .collect();
    let mut texts: Vec<&str> = rows.iter().flat_map(|(c, r)| [*c, *r]).collect();
    texts.sort_unstable();
    texts.dedup();
    let ids = texts
        .iter()
        .map(|t| scorer.tokenizer.encode(t))
        .collect::<Result<Vec<_>>>()?;
    let index: HashMap<&str, usize> = texts.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let weights = if settings.idf {
        let refs: Vec<Vec<u32>> = rows.iter().map(|(_, r)| ids[index[r]].clone()).collect();
        IdfWeights::from_references(&refs)
    } else {
        IdfWeights::Uniform {
            cls_id: scorer.tokenizer.cls_id,
            sep_id: scorer.tokenizer.sep_id,
        }
    };
    let id_refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let embeddings = scorer.embed(&id_refs, settings.batch_size, progress)?;
    let side = |t: &str| {
        let i = index[t];
        Side {
            emb: &embeddings[i],
            weights: ids[i].iter().map(|&id| weights.weight(id)).collect(),
            len: ids[i].len(),
        }
    };
    let d = scorer.config.hidden_size;
    let mut row_scores = Vec::with_capacity(rows.len());
    for batch in rows.chunks(settings.batch_size.max(1)) {
        let max_hyp = batch
            .iter()
            .map(|(c, _)| ids[index[c]].len())
            .max()
            .unwrap_or(0);
        let max_ref = batch
            .iter()
            .map(|(_, r)| ids[index[r]].len())
            .max()
            .unwrap_or(0);
        for (c, r) in batch {
            let (hyp, reference) = (side(c), side(r));
            let (ref_padded, hyp_padded) = (reference.len < max_ref, hyp.len < max_hyp);
            row_scores.push(match_row(&hyp, &reference, d, ref_padded, hyp_padded));
        }
    }
    let mut out = Vec::with_capacity(candidates.len());
    let mut start = 0;
    for refs in references {
        let mut s = max_rows(&row_scores[start..start + refs.len()]);
        start += refs.len();
        if let Some(b) = &settings.baseline {
            s = b.apply(s);
        }
        out.push(Prf {
            precision: s[0] as f64,
            recall: s[1] as f64,
            f1: s[2] as f64,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_row_is_the_layer_position() {
        let csv = "LAYER,P,R,F\n0,0.1,0.2,0.3\n1,0.5,0.25,0.75\n";
        let b = Baseline::from_csv(csv, 1, "b.csv").unwrap();
        assert_eq!((b.precision, b.recall, b.f1), (0.5, 0.25, 0.75));
        assert_eq!(b.apply([1.0, 0.25, 0.75]), [1.0, 0.0, 0.0]);
        let err = Baseline::from_csv(csv, 2, "b.csv").unwrap_err().to_string();
        assert!(err.contains("b.csv: no baseline for layer 2"), "{err}");
        let err = Baseline::from_csv("LAYER\tP\tR\tF\n", 0, "b.tsv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("comma-separated"), "{err}");
    }

    #[test]
    fn idf_over_references() {
        let w = IdfWeights::from_references(&[vec![1, 5, 2], vec![1, 6, 6, 2]]);
        assert_eq!(w.weight(1), 0.0);
        assert_eq!(w.weight(5), (3.0f64 / 2.0).ln() as f32);
        assert_eq!(w.weight(9), 3.0f64.ln() as f32);
        let u = IdfWeights::Uniform {
            cls_id: 1,
            sep_id: 2,
        };
        assert_eq!([u.weight(1), u.weight(2), u.weight(7)], [0.0, 0.0, 1.0]);
    }

    #[test]
    fn padding_floors_the_best_match_at_zero() {
        let (h, r) = (
            [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0],
            [-1.0f32, 0.0, -1.0, 0.0, -1.0, 0.0],
        );
        let side = |emb| Side {
            emb,
            weights: vec![0.0, 1.0, 0.0],
            len: 3,
        };
        assert_eq!(
            match_row(&side(&h), &side(&r), 2, false, false),
            [-1.0, -1.0, -1.0]
        );
        assert_eq!(match_row(&side(&h), &side(&r), 2, true, false)[0], 0.0);
        assert_eq!(match_row(&side(&h), &side(&r), 2, false, true)[1], 0.0);
        assert!(max_rows(&[[0.5, f32::NAN, 0.1], [0.6, 0.1, 0.2]])[1].is_nan());
        assert_eq!(
            max_rows(&[[0.5, 0.3, 0.1], [0.6, 0.1, 0.2]]),
            [0.6, 0.3, 0.2]
        );
    }

    #[test]
    fn known_models_have_bert_scores_default_layer() {
        assert_eq!(default_layer("roberta-large"), Some(17));
        assert_eq!(default_layer("FacebookAI/roberta-large"), Some(17));
        assert_eq!(
            default_layer("sentence-transformers/all-MiniLM-L6-v2"),
            None
        );
    }
}
