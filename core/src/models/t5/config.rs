//! `config.json` of a `T5ForConditionalGeneration` (t5-small/base/large, google/flan-t5-*).

use crate::ops::Activation;
use crate::{Error, Result};
use serde_json::Value;

/// The architecture of a T5-family checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Width of one attention head (`heads × d_kv` need not equal `d_model`).
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    /// The feed-forward's activation, and whether it is gated (`gated-gelu`: `act(wi_0 x) ⊙ wi_1 x`).
    pub activation: Activation,
    pub gated: bool,
    pub feed_forward_proj: String,
    /// A tied head shares the embedding and scales the decoder output by `d_model^-0.5`.
    pub tie_word_embeddings: bool,
    pub layer_norm_epsilon: f64,
    pub dropout_rate: f64,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
    /// The parsed file, kept so that it can be written back unchanged (merge, export).
    pub raw: Value,
}

impl T5Config {
    /// Parses `config.json`. `file` names the source in error messages.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let err = |message: String| Error::Config {
            file: file.to_string(),
            message,
        };
        let raw: Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let obj = raw
            .as_object()
            .ok_or_else(|| err("expected a JSON object".into()))?;
        let positive = |k: &str, default: Option<usize>| -> Result<usize> {
            match (obj.get(k), default) {
                (None | Some(Value::Null), Some(d)) => Ok(d),
                (None, None) => Err(err(format!("missing required key {k:?}"))),
                (Some(v), _) => v
                    .as_u64()
                    .filter(|&n| n > 0 && n <= 1 << 24)
                    .map(|n| n as usize)
                    .ok_or_else(|| err(format!("key {k:?} must be a positive integer, found {v}"))),
            }
        };
        let id = |k: &str, default: u32| -> Result<u32> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| err(format!("key {k:?} must be a token id, found {v}"))),
            }
        };
        let float = |k: &str, default: f64| -> Result<f64> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        err(format!(
                            "key {k:?} must be a non-negative number, found {v}"
                        ))
                    }),
            }
        };
        let feed_forward_proj = match obj.get("feed_forward_proj") {
            None | Some(Value::Null) => "relu".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(err(format!(
                    "key \"feed_forward_proj\" must be a string, found {v}"
                )))
            }
        };
        // transformers: "gated-ACT" or "ACT"; "gated-gelu" means gelu_new (T5 v1.1, FLAN-T5).
        let (gated, act_name) = match feed_forward_proj.split_once('-') {
            Some(("gated", act)) => (true, act),
            None => (false, feed_forward_proj.as_str()),
            Some(_) => (false, ""),
        };
        let act_name = if feed_forward_proj == "gated-gelu" {
            "gelu_new"
        } else {
            act_name
        };
        let activation = Activation::parse(act_name).ok_or_else(|| {
            err(format!(
                "unsupported feed_forward_proj {feed_forward_proj:?} (relu, gelu, gated-gelu, \
                 gated-silu, gated-relu, ...: `gated-` + a transformers activation)"
            ))
        })?;
        let tie = match obj.get("tie_word_embeddings") {
            None | Some(Value::Null) => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| err("key \"tie_word_embeddings\" must be a boolean".into()))?,
        };
        let num_layers = positive("num_layers", None)?;
        let pad = id("pad_token_id", 0)?;
        let config = Self {
            vocab_size: positive("vocab_size", None)?,
            d_model: positive("d_model", None)?,
            d_kv: positive("d_kv", None)?,
            d_ff: positive("d_ff", None)?,
            num_layers,
            num_decoder_layers: positive("num_decoder_layers", Some(num_layers))?,
            num_heads: positive("num_heads", None)?,
            relative_attention_num_buckets: positive("relative_attention_num_buckets", Some(32))?,
            relative_attention_max_distance: positive(
                "relative_attention_max_distance",
                Some(128),
            )?,
            activation,
            gated,
            feed_forward_proj,
            tie_word_embeddings: tie,
            layer_norm_epsilon: float("layer_norm_epsilon", 1e-6)?,
            dropout_rate: float("dropout_rate", 0.1)?,
            pad_token_id: pad,
            eos_token_id: id("eos_token_id", 1)?,
            decoder_start_token_id: id("decoder_start_token_id", pad)?,
            raw: raw.clone(),
        };
        if config.dropout_rate >= 1.0 {
            return Err(err(format!(
                "key \"dropout_rate\" must be a probability in [0, 1), found {}",
                config.dropout_rate
            )));
        }
        for (tok, name) in [
            (config.pad_token_id, "pad_token_id"),
            (config.eos_token_id, "eos_token_id"),
            (config.decoder_start_token_id, "decoder_start_token_id"),
        ] {
            if tok as usize >= config.vocab_size {
                return Err(err(format!(
                    "{name} {tok} is outside the vocabulary (vocab_size {})",
                    config.vocab_size
                )));
            }
        }
        Ok(config)
    }

    /// The width of the attention projections' output: `num_heads × d_kv`.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Number of parameters (the shared embedding counted once; an untied head counted).
    pub fn num_parameters(&self) -> usize {
        let (d, inner, ff) = (self.d_model, self.inner_dim(), self.d_ff);
        let attention = 4 * d * inner;
        let ffn = if self.gated { 3 * d * ff } else { 2 * d * ff };
        let bias_table = self.relative_attention_num_buckets * self.num_heads;
        let encoder = self.num_layers * (attention + ffn + 2 * d) + bias_table + d;
        let decoder = self.num_decoder_layers * (2 * attention + ffn + 3 * d) + bias_table + d;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + encoder + decoder + head
    }
}
