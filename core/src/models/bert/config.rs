//! `config.json` of a `BertModel` / `RobertaModel` → [`BertConfig`].

use crate::ops::Activation;
use crate::{Error, Result};
use serde_json::Value;

/// Which of the two architectures a checkpoint is (`model_type` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertKind {
    /// Positions `0, 1, 2, …`.
    Bert,
    /// Positions `padding_idx + 1 + (number of non-pad tokens so far)`; pads get `padding_idx`.
    Roberta,
}

/// The architecture, read from a `BertModel` / `RobertaModel` config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub kind: BertKind,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub pad_token_id: u32,
}

impl BertConfig {
    /// Parses config.json; `file` names it in errors.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let err = |message: String| Error::Config {
            file: file.to_string(),
            message,
        };
        let raw: Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let kind = match raw.get("model_type").and_then(Value::as_str) {
            Some("bert") => BertKind::Bert,
            Some("roberta") => BertKind::Roberta,
            Some(other) => {
                return Err(err(format!(
                "unsupported model_type {other:?} for BERTScore (supported: \"bert\", \"roberta\")"
            )))
            }
            None => return Err(err("missing required key \"model_type\"".into())),
        };
        let size = |k: &str, default: Option<usize>| -> Result<usize> {
            match raw.get(k) {
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| err(format!("key {k:?} must be a positive integer, found {v}"))),
                None => default.ok_or_else(|| err(format!("missing required key {k:?}"))),
            }
        };
        let position_type = raw.get("position_embedding_type").and_then(Value::as_str);
        if !matches!(position_type, None | Some("absolute")) {
            return Err(err(format!(
                "position_embedding_type {position_type:?} is not supported (only \"absolute\")"
            )));
        }
        let act_name = raw
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let activation = Activation::parse(act_name)
            .ok_or_else(|| err(format!("unsupported hidden_act {act_name:?}")))?;
        let layer_norm_eps = match raw.get("layer_norm_eps") {
            None => 1e-12,
            Some(v) => v.as_f64().ok_or_else(|| {
                err(format!(
                    "key \"layer_norm_eps\" must be a number, found {v}"
                ))
            })?,
        };
        let pad_token_id = match raw.get("pad_token_id") {
            None | Some(Value::Null) => u32::from(kind == BertKind::Roberta),
            Some(v) => v.as_u64().map(|n| n as u32).ok_or_else(|| {
                err(format!(
                    "key \"pad_token_id\" must be a token id, found {v}"
                ))
            })?,
        };
        let config = Self {
            kind,
            vocab_size: size("vocab_size", None)?,
            hidden_size: size("hidden_size", None)?,
            num_hidden_layers: size("num_hidden_layers", None)?,
            num_attention_heads: size("num_attention_heads", None)?,
            intermediate_size: size("intermediate_size", None)?,
            max_position_embeddings: size("max_position_embeddings", Some(512))?,
            type_vocab_size: size("type_vocab_size", Some(2))?,
            layer_norm_eps,
            activation,
            pad_token_id,
        };
        if config.hidden_size % config.num_attention_heads != 0 {
            return Err(err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        Ok(config)
    }

    /// The longest input (special tokens included) the position table can embed.
    pub fn max_input_tokens(&self) -> usize {
        match self.kind {
            BertKind::Bert => self.max_position_embeddings,
            BertKind::Roberta => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1),
        }
    }
}
