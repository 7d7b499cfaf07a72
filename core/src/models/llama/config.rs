//! `config.json` of a Llama-family decoder-only model: `LlamaForCausalLM` (model_type `llama`:
//! Llama 3.2 1B/3B Instruct), `Phi3ForCausalLM` (`phi3`: Phi-3-mini, fused `qkv_proj` and
//! `gate_up_proj`, longrope) and `Qwen2ForCausalLM` (`qwen2`: q/k/v biases).

use crate::ops::rope::{Rope, RopeScaling};
use crate::ops::Activation;
use crate::{Error, Result};
use serde_json::{Map, Value};

/// Which transformers class the checkpoint is (its weight names and defaults differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Phi3,
    Qwen2,
}

impl Family {
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Phi3 => "phi3",
            Family::Qwen2 => "qwen2",
        }
    }
}

/// The architecture of a Llama-family checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope: Rope,
    /// Biases on q, k, v (Llama's `attention_bias` also puts one on o; Qwen2 has q/k/v only).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub activation: Activation,
    /// Phi-3: keys more than this many places back are not attended to.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    /// Every eos id (config.json's `eos_token_id`, an integer or a list).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// The parsed file, kept so that it can be written back unchanged (merge, export).
    pub raw: Value,
}

impl LlamaConfig {
    /// Parses `config.json` (model_type `llama`, `phi3` or `qwen2`). `file` names the source in
    /// error messages.
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
        let family = match obj.get("model_type").and_then(Value::as_str) {
            Some("llama") => Family::Llama,
            Some("phi3") => Family::Phi3,
            Some("qwen2") => Family::Qwen2,
            other => {
                return Err(err(format!(
                    "model_type {other:?} is not a Llama-family model"
                )))
            }
        };
        let positive = |k: &str, default: Option<usize>| -> Result<usize> {
            match (obj.get(k), default) {
                (None | Some(Value::Null), Some(d)) => Ok(d),
                (None | Some(Value::Null), None) => Err(err(format!("missing required key {k:?}"))),
                (Some(v), _) => v
                    .as_u64()
                    .filter(|&n| n > 0 && n <= 1 << 24)
                    .map(|n| n as usize)
                    .ok_or_else(|| err(format!("key {k:?} must be a positive integer, found {v}"))),
            }
        };
        let number = |k: &str, default: f64| -> Result<f64> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| err(format!("key {k:?} must be a positive number, found {v}"))),
            }
        };
        let boolean = |k: &str, default: bool| -> Result<bool> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| err(format!("key {k:?} must be a boolean, found {v}"))),
            }
        };
        let ids = |k: &str| -> Result<Vec<u32>> {
            let one = |v: &Value| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        err(format!(
                            "key {k:?} must be a token id or a list of them, found {v}"
                        ))
                    })
            };
            match obj.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a.iter().map(one).collect(),
                Some(v) => Ok(vec![one(v)?]),
            }
        };
        let hidden_size = positive("hidden_size", None)?;
        let heads = positive("num_attention_heads", None)?;
        let kv_heads = positive("num_key_value_heads", Some(heads))?;
        if heads % kv_heads != 0 {
            return Err(err(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let head_dim = match family {
            Family::Phi3 => hidden_size / heads,
            _ => positive("head_dim", Some(hidden_size / heads))?,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(err(format!(
                "head_dim {head_dim} must be a positive even number"
            )));
        }
        let default_positions = match family {
            Family::Llama => 2048,
            Family::Phi3 => 4096,
            Family::Qwen2 => 32768,
        };
        let max_positions = positive("max_position_embeddings", Some(default_positions))?;
        if let Some(p) = obj.get("partial_rotary_factor").and_then(Value::as_f64) {
            if p != 1.0 {
                return Err(err(format!(
                    "partial_rotary_factor {p} is not supported (only 1.0)"
                )));
            }
        }
        let scaling = rope_scaling(obj, max_positions, head_dim, file)?;
        let rope = Rope {
            dim: head_dim,
            base: number("rope_theta", 10000.0)? as f32,
            scaling,
            max_position_embeddings: max_positions,
        };
        let act_name = match obj.get("hidden_act") {
            None | Some(Value::Null) => "silu",
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                return Err(err(format!(
                    "key \"hidden_act\" must be a string, found {v}"
                )))
            }
        };
        let activation = Activation::parse(act_name)
            .ok_or_else(|| err(format!("unsupported hidden_act {act_name:?}")))?;
        let attention_bias = boolean("attention_bias", false)?;
        let (qkv_bias, o_bias, mlp_bias) = match family {
            Family::Llama => (attention_bias, attention_bias, boolean("mlp_bias", false)?),
            Family::Phi3 => (false, false, false),
            Family::Qwen2 => (true, false, false),
        };
        let sliding_window = match family {
            Family::Phi3 => match obj.get("sliding_window") {
                None | Some(Value::Null) => None,
                Some(_) => Some(positive("sliding_window", None)?),
            },
            Family::Qwen2 if boolean("use_sliding_window", false)? => {
                return Err(err(
                    "use_sliding_window true is not supported for qwen2 (Qwen2 checkpoints ship it off)"
                        .into(),
                ))
            }
            _ => None,
        };
        let config = Self {
            family,
            vocab_size: positive("vocab_size", None)?,
            hidden_size,
            intermediate_size: positive("intermediate_size", None)?,
            num_hidden_layers: positive("num_hidden_layers", None)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: max_positions,
            rms_norm_eps: number(
                "rms_norm_eps",
                if family == Family::Phi3 { 1e-5 } else { 1e-6 },
            )?,
            rope,
            qkv_bias,
            o_bias,
            mlp_bias,
            tie_word_embeddings: boolean("tie_word_embeddings", false)?,
            activation,
            sliding_window,
            bos_token_id: ids("bos_token_id")?.first().copied(),
            eos_token_ids: ids("eos_token_id")?,
            pad_token_id: ids("pad_token_id")?.first().copied(),
            raw: raw.clone(),
        };
        for &t in config.eos_token_ids.iter().chain(&config.bos_token_id) {
            if t as usize >= config.vocab_size {
                return Err(err(format!(
                    "token id {t} is outside the vocabulary (vocab_size {})",
                    config.vocab_size
                )));
            }
        }
        Ok(config)
    }

    /// Phi-3 with any `rope_scaling`: the sequence length at which generation recomputes its
    /// cache (`original_max_position_embeddings + 1`, that key defaulting to 4096 as in
    /// `Phi3Config`).
    pub fn recompute_at(&self) -> Option<usize> {
        let scaled = !matches!(self.raw.get("rope_scaling"), None | Some(Value::Null));
        (self.family == Family::Phi3 && scaled).then(|| {
            let original = self
                .raw
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(4096) as usize;
            original + 1
        })
    }

    /// Number of parameters (a tied head counted once).
    pub fn num_parameters(&self) -> usize {
        let (d, ff, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_attention_heads * hd;
        let kv = self.num_key_value_heads * hd;
        let bias = |on: bool, n: usize| if on { n } else { 0 };
        let attention =
            d * (q + 2 * kv) + q * d + bias(self.qkv_bias, q + 2 * kv) + bias(self.o_bias, d);
        let mlp = 3 * d * ff + bias(self.mlp_bias, 2 * ff + d);
        let layer = attention + mlp + 2 * d;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_hidden_layers * layer + d + head
    }
}

/// `rope_scaling` (transformers' `rope_type`, or the older `type`): `default`, `linear`,
/// `dynamic`, `llama3`, `longrope`; anything else is refused.
fn rope_scaling(
    obj: &Map<String, Value>,
    max_positions: usize,
    head_dim: usize,
    file: &str,
) -> Result<RopeScaling> {
    let err = |message: String| Error::Config {
        file: file.to_string(),
        message: format!("rope_scaling: {message}"),
    };
    let scaling = match obj.get("rope_scaling") {
        None | Some(Value::Null) => return Ok(RopeScaling::Default),
        Some(Value::Object(m)) => m,
        Some(v) => return Err(err(format!("must be an object or null, found {v}"))),
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing \"rope_type\"".into()))?;
    let number = |k: &str| -> Result<f32> {
        scaling
            .get(k)
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite() && *x > 0.0)
            .map(|x| x as f32)
            .ok_or_else(|| err(format!("{kind} needs a positive number {k:?}")))
    };
    Ok(match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: number("factor")?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: number("factor")?,
        },
        "llama3" => {
            let (low, high) = (number("low_freq_factor")?, number("high_freq_factor")?);
            if high <= low {
                return Err(err(format!(
                    "llama3 needs high_freq_factor ({high}) > low_freq_factor ({low})"
                )));
            }
            RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: number("original_max_position_embeddings")?,
            }
        }
        "longrope" => {
            let factors = |k: &str| -> Result<Vec<f32>> {
                let list = scaling
                    .get(k)
                    .and_then(Value::as_array)
                    .ok_or_else(|| err(format!("longrope needs a list {k:?}")))?;
                let out: Option<Vec<f32>> = list.iter().map(|v| v.as_f64().map(|x| x as f32)).collect();
                let out = out.ok_or_else(|| err(format!("{k:?} must hold numbers")))?;
                if out.len() != head_dim / 2 {
                    return Err(err(format!(
                        "{k:?} has {} values, expected head_dim / 2 = {}",
                        out.len(),
                        head_dim / 2
                    )));
                }
                Ok(out)
            };
            // `_compute_longrope_parameters`: the top-level original_max_position_embeddings
            // (Phi-3) sets the factor as max_position_embeddings / it.
            let (original, factor) = match obj.get("original_max_position_embeddings").and_then(Value::as_u64) {
                Some(o) if o > 0 => (o as usize, max_positions as f64 / o as f64),
                _ => (
                    max_positions,
                    scaling.get("factor").and_then(Value::as_f64).unwrap_or(1.0),
                ),
            };
            let attention_factor = match scaling.get("attention_factor").and_then(Value::as_f64) {
                Some(a) => a as f32,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (original as f64).ln()).sqrt() as f32,
            };
            RopeScaling::LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
                attention_factor,
            }
        }
        other => {
            return Err(err(format!(
                "unsupported rope_type {other:?} (Bartleby runs default, linear, dynamic, llama3, longrope)"
            )))
        }
    })
}
