//! The model configuration, read from a Hugging Face `config.json`.

use crate::ops::Activation;
use crate::{Error, Result};
use serde_json::Value;

/// The architecture of a BART-family checkpoint (bart-base/large, bart-large-cnn/xsum,
/// distilbart with unequal depths).
#[derive(Debug, Clone, PartialEq)]
pub struct BartConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    /// Learned positions; the table has `max_position_embeddings + 2` rows (BART's offset).
    pub max_position_embeddings: usize,
    pub activation: Activation,
    pub activation_name: String,
    pub scale_embedding: bool,
    pub pad_token_id: u32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Option<u32>,
    pub layer_norm_eps: f64,
    /// Training-time dropout probabilities (BartConfig defaults 0.1 / 0.0 / 0.0); inactive when
    /// generating.
    pub dropout: f64,
    pub attention_dropout: f64,
    pub activation_dropout: f64,
    /// Things in the file that transformers ignores for `model_type: bart` and so do we.
    pub warnings: Vec<String>,
    /// The parsed file, kept so that it can be written back unchanged (merge, export).
    pub raw: Value,
}

/// BART's learned positional embeddings start at row 2 (fairseq's padding offset).
pub const POSITION_OFFSET: usize = 2;

impl BartConfig {
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
        match obj.get("model_type").and_then(Value::as_str) {
            Some("bart") => {}
            Some(other) => {
                return Err(err(format!(
                    "unsupported model_type {other:?} (Bartleby runs model_type \"bart\")"
                )))
            }
            None => return Err(err("missing required key \"model_type\"".into())),
        }
        let usize_key = |k: &str| -> Result<usize> {
            match obj.get(k) {
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| err(format!("key {k:?} must be a positive integer, found {v}"))),
                None => Err(err(format!("missing required key {k:?}"))),
            }
        };
        let opt_id = |k: &str, default: Option<u32>| -> Result<Option<u32>> {
            match obj.get(k) {
                None => Ok(default),
                Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|n| Some(n as u32))
                    .ok_or_else(|| err(format!("key {k:?} must be a token id, found {v}"))),
            }
        };
        let id = |k: &str, default: u32| -> Result<u32> {
            Ok(opt_id(k, Some(default))?.unwrap_or(default))
        };
        let bool_key = |k: &str, default: bool| -> Result<bool> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| err(format!("key {k:?} must be a boolean"))),
            }
        };
        let prob_key = |k: &str, default: f64| -> Result<f64> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|p| (0.0..1.0).contains(p))
                    .ok_or_else(|| {
                        err(format!(
                            "key {k:?} must be a probability in [0, 1), found {v}"
                        ))
                    }),
            }
        };
        let activation_name = match obj.get("activation_function") {
            None => "gelu".to_string(),
            Some(v) => v
                .as_str()
                .ok_or_else(|| err("key \"activation_function\" must be a string".into()))?
                .to_string(),
        };
        let activation = Activation::parse(&activation_name).ok_or_else(|| {
            err(format!(
                "unsupported activation_function {activation_name:?} (gelu, gelu_new, relu, silu, tanh)"
            ))
        })?;

        // Legacy fairseq keys that some hub configs carry. transformers' BartModel ignores them
        // (it is always post-LayerNorm with an embedding LayerNorm and no final LayerNorm);
        // parity with transformers means ignoring them too, loudly when they disagree.
        let mut warnings = Vec::new();
        for (key, bart_value) in [
            ("normalize_before", false),
            ("add_final_layer_norm", false),
            ("normalize_embedding", true),
            ("layernorm_embedding", true),
        ] {
            if bool_key(key, bart_value)? != bart_value {
                warnings.push(format!(
                    "{file}: {key}={} is ignored: transformers' BART uses {key}={bart_value}",
                    !bart_value
                ));
            }
        }

        if !bool_key("tie_word_embeddings", true)? {
            return Err(err(
                "tie_word_embeddings=false (a separate lm_head) is not supported".into(),
            ));
        }
        let config = Self {
            vocab_size: usize_key("vocab_size")?,
            d_model: usize_key("d_model")?,
            encoder_layers: usize_key("encoder_layers")?,
            decoder_layers: usize_key("decoder_layers")?,
            encoder_attention_heads: usize_key("encoder_attention_heads")?,
            decoder_attention_heads: usize_key("decoder_attention_heads")?,
            encoder_ffn_dim: usize_key("encoder_ffn_dim")?,
            decoder_ffn_dim: usize_key("decoder_ffn_dim")?,
            max_position_embeddings: usize_key("max_position_embeddings")?,
            activation,
            activation_name,
            scale_embedding: bool_key("scale_embedding", false)?,
            pad_token_id: id("pad_token_id", 1)?,
            bos_token_id: id("bos_token_id", 0)?,
            eos_token_id: id("eos_token_id", 2)?,
            decoder_start_token_id: id("decoder_start_token_id", 2)?,
            forced_bos_token_id: opt_id("forced_bos_token_id", None)?,
            forced_eos_token_id: opt_id("forced_eos_token_id", Some(2))?,
            layer_norm_eps: 1e-5,
            dropout: prob_key("dropout", 0.1)?,
            attention_dropout: prob_key("attention_dropout", 0.0)?,
            activation_dropout: prob_key("activation_dropout", 0.0)?,
            warnings,
            raw: raw.clone(),
        };
        for (heads, name) in [
            (config.encoder_attention_heads, "encoder_attention_heads"),
            (config.decoder_attention_heads, "decoder_attention_heads"),
        ] {
            if config.d_model % heads != 0 {
                return Err(err(format!(
                    "d_model {} is not divisible by {name} {heads}",
                    config.d_model
                )));
            }
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

    /// Number of parameters (shared embedding counted once, final_logits_bias included).
    pub fn num_parameters(&self) -> usize {
        let d = self.d_model;
        let attn = 4 * (d * d + d);
        let ln = 2 * d;
        let enc_layer = attn
            + ln
            + (d * self.encoder_ffn_dim + self.encoder_ffn_dim)
            + (self.encoder_ffn_dim * d + d)
            + ln;
        let dec_layer = 2 * (attn + ln)
            + (d * self.decoder_ffn_dim + self.decoder_ffn_dim)
            + (self.decoder_ffn_dim * d + d)
            + ln;
        let pos = (self.max_position_embeddings + POSITION_OFFSET) * d;
        self.vocab_size * d
            + 2 * (pos + ln)
            + self.encoder_layers * enc_layer
            + self.decoder_layers * dec_layer
            + self.vocab_size
    }
}
