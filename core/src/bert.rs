//! BERT and RoBERTa encoders as transformers' `BertModel` / `RobertaModel` compute them (post-LN,
//! learned absolute positions, token type 0), cut after their first `L` layers the way bert_score
//! truncates them: [`BertEncoder::hidden_states`] is `output_hidden_states[L]` (`L = 0`: the
//! embedding output).
//!
//! Pure like the rest of the core: `config.json` and safetensors bytes in, tensors out, on any
//! burn device.

use crate::config::Activation;
use crate::{Error, Result};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu, softmax, tanh};
use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::HashMap;

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

/// The embeddings and the first `L` layers of a BERT/RoBERTa encoder.
#[derive(Module, Debug)]
pub struct BertEncoder {
    pub word_embeddings: Param<Tensor<2>>,
    pub position_embeddings: Param<Tensor<2>>,
    /// Row 0 of `token_type_embeddings` (bert_score never passes token types).
    pub token_type: Param<Tensor<1>>,
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<BertLayer>,
    #[module(skip)]
    pub kind: BertKind,
    pub padding_idx: usize,
}

#[derive(Module, Debug)]
pub struct BertLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attention_output: Linear,
    pub attention_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_norm: LayerNorm,
    pub num_heads: usize,
    #[module(skip)]
    pub activation: Activation,
}

fn activate<const D: usize>(activation: Activation, x: Tensor<D>) -> Tensor<D> {
    match activation {
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => gelu_approximate(x),
        Activation::Relu => relu(x),
        Activation::Silu => silu(x),
        Activation::Tanh => tanh(x),
    }
}

impl BertEncoder {
    pub fn device(&self) -> Device {
        self.word_embeddings.val().device()
    }

    /// Hidden states `[batch, width, hidden]` after the loaded layers, for token rows
    /// right-padded with `pad_id` to a common width (`width` = the longest row).
    pub fn hidden_states(&self, rows: &[Vec<u32>], pad_id: u32) -> Tensor<3> {
        let device = self.device();
        let batch = rows.len();
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch * width);
        let mut mask = Vec::with_capacity(batch * width);
        let mut positions = Vec::with_capacity(batch * width);
        for row in rows {
            let padded: Vec<u32> = (0..width)
                .map(|i| row.get(i).copied().unwrap_or(pad_id))
                .collect();
            positions.extend(self.position_ids(&padded));
            ids.extend(padded.iter().map(|&t| t as i64));
            mask.extend((0..width).map(|i| if i < row.len() { 0.0f32 } else { f32::MIN }));
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, width]), &device);
        let positions =
            Tensor::<2, Int>::from_data(TensorData::new(positions, [batch, width]), &device);
        let key_mask = Tensor::<4>::from_data(TensorData::new(mask, [batch, 1, 1, width]), &device);
        let mut x = self.embed(ids, positions);
        for layer in &self.layers {
            x = layer.forward(x, &key_mask);
        }
        x
    }

    /// transformers' position ids for one padded row.
    fn position_ids(&self, padded: &[u32]) -> Vec<i64> {
        match self.kind {
            BertKind::Bert => (0..padded.len() as i64).collect(),
            BertKind::Roberta => {
                let pad = self.padding_idx;
                let mut seen = 0;
                padded
                    .iter()
                    .map(|&t| {
                        if t as usize == pad {
                            pad as i64
                        } else {
                            seen += 1;
                            (pad + seen) as i64
                        }
                    })
                    .collect()
            }
        }
    }

    fn embed(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>) -> Tensor<3> {
        let [batch, width] = ids.dims();
        let lookup = |table: &Param<Tensor<2>>, index: Tensor<2, Int>| {
            let t = table.val();
            let [_, d] = t.dims();
            t.select(0, index.reshape([batch * width]))
                .reshape([batch, width, d])
        };
        let x = lookup(&self.word_embeddings, ids)
            + self.token_type.val().unsqueeze::<3>()
            + lookup(&self.position_embeddings, positions);
        self.embeddings_norm.forward(x)
    }
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, key_mask: &Tensor<4>) -> Tensor<3> {
        let attended = self
            .attention_output
            .forward(self.attend(x.clone(), key_mask));
        let x = self.attention_norm.forward(attended + x);
        let inner = activate(self.activation, self.intermediate.forward(x.clone()));
        self.output_norm.forward(self.output.forward(inner) + x)
    }

    /// `softmax(q kᵀ / sqrt(head_dim) + mask) v`, heads merged.
    fn attend(&self, x: Tensor<3>, key_mask: &Tensor<4>) -> Tensor<3> {
        let [batch, width, d] = x.dims();
        let head_dim = d / self.num_heads;
        let split = |t: Tensor<3>| {
            t.reshape([batch, width, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar((head_dim as f64).powf(-0.5))
            + key_mask.clone();
        softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, width, d])
    }
}

/// The checkpoint's tensors by name, with the `bert.` / `roberta.` prefixes that transformers
/// strips when loading a base model dropped, and legacy `LayerNorm.gamma/beta` renamed.
struct Tensors<'a> {
    by_name: HashMap<String, (String, TensorView<'a>)>,
    device: Device,
}

fn canonical(name: &str) -> String {
    let name = name
        .strip_prefix("bert.")
        .or_else(|| name.strip_prefix("roberta."))
        .unwrap_or(name);
    if let Some(stem) = name.strip_suffix("LayerNorm.gamma") {
        format!("{stem}LayerNorm.weight")
    } else if let Some(stem) = name.strip_suffix("LayerNorm.beta") {
        format!("{stem}LayerNorm.bias")
    } else {
        name.to_string()
    }
}

impl<'a> Tensors<'a> {
    fn new(shards: &[(&str, &'a [u8])], device: &Device) -> Result<Self> {
        let mut by_name = HashMap::new();
        for (file, bytes) in shards {
            let st = SafeTensors::deserialize(bytes).map_err(|e| {
                Error::Weights(format!("{file}: not a valid safetensors file: {e}"))
            })?;
            for (name, view) in st.tensors() {
                by_name.insert(canonical(&name), (file.to_string(), view));
            }
        }
        Ok(Self {
            by_name,
            device: device.clone(),
        })
    }

    /// The f32 values of tensor `name`, checked against `shape`.
    fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (file, view) = self.by_name.get(name).ok_or_else(|| {
            Error::Weights(format!(
                "missing tensor {name} (checkpoint has {} tensors)",
                self.by_name.len()
            ))
        })?;
        if view.shape() != shape {
            return Err(Error::Weights(format!(
                "{file}: tensor {name} has shape {:?}, expected {shape:?}",
                view.shape()
            )));
        }
        crate::weights::read_f32(file, name, &view)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor<2>> {
        let data = self.values(name, &[rows, cols])?;
        Ok(Tensor::from_data(
            TensorData::new(data, [rows, cols]),
            &self.device,
        ))
    }

    fn vector(&self, name: &str, n: usize) -> Result<Param<Tensor<1>>> {
        let data = self.values(name, &[n])?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(data, [n]),
            &self.device,
        )))
    }

    /// An `nn.Linear` (HF `[out, in]`, kept in that memory order; burn sees the transpose).
    fn linear(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        let weight = self.matrix(&format!("{prefix}.weight"), d_out, d_in)?;
        Ok(Linear {
            weight: Param::from_tensor(weight.transpose()),
            bias: Some(self.vector(&format!("{prefix}.bias"), d_out)?),
        })
    }

    fn layer_norm(&self, prefix: &str, d: usize, eps: f64) -> Result<LayerNorm> {
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(&self.device);
        ln.gamma = self.vector(&format!("{prefix}.weight"), d)?;
        ln.beta = Some(self.vector(&format!("{prefix}.bias"), d)?);
        Ok(ln)
    }
}

/// Loads the embeddings and the first `layers` encoder layers (`0..=num_hidden_layers`) of a
/// `BertModel` / `RobertaModel` checkpoint given as safetensors shards `(file name, bytes)`.
/// The remaining layers and the pooler are not read.
pub fn load_encoder(
    config: &BertConfig,
    shards: &[(&str, &[u8])],
    layers: usize,
    device: &Device,
) -> Result<BertEncoder> {
    if layers > config.num_hidden_layers {
        return Err(Error::Input(format!(
            "layer {layers} is out of range: the model has {} layers (0 = the embeddings)",
            config.num_hidden_layers
        )));
    }
    let t = Tensors::new(shards, device)?;
    let (d, eps) = (config.hidden_size, config.layer_norm_eps);
    let token_types = t.matrix(
        "embeddings.token_type_embeddings.weight",
        config.type_vocab_size,
        d,
    )?;
    let layers = (0..layers)
        .map(|i| load_layer(&t, config, &format!("encoder.layer.{i}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(BertEncoder {
        word_embeddings: Param::from_tensor(t.matrix(
            "embeddings.word_embeddings.weight",
            config.vocab_size,
            d,
        )?),
        position_embeddings: Param::from_tensor(t.matrix(
            "embeddings.position_embeddings.weight",
            config.max_position_embeddings,
            d,
        )?),
        token_type: Param::from_tensor(token_types.slice([0..1]).reshape([d])),
        embeddings_norm: t.layer_norm("embeddings.LayerNorm", d, eps)?,
        layers,
        kind: config.kind,
        padding_idx: config.pad_token_id as usize,
    })
}

fn load_layer(t: &Tensors<'_>, config: &BertConfig, p: &str) -> Result<BertLayer> {
    let (d, ffn, eps) = (
        config.hidden_size,
        config.intermediate_size,
        config.layer_norm_eps,
    );
    Ok(BertLayer {
        query: t.linear(&format!("{p}.attention.self.query"), d, d)?,
        key: t.linear(&format!("{p}.attention.self.key"), d, d)?,
        value: t.linear(&format!("{p}.attention.self.value"), d, d)?,
        attention_output: t.linear(&format!("{p}.attention.output.dense"), d, d)?,
        attention_norm: t.layer_norm(&format!("{p}.attention.output.LayerNorm"), d, eps)?,
        intermediate: t.linear(&format!("{p}.intermediate.dense"), d, ffn)?,
        output: t.linear(&format!("{p}.output.dense"), ffn, d)?,
        output_norm: t.layer_norm(&format!("{p}.output.LayerNorm"), d, eps)?,
        num_heads: config.num_attention_heads,
        activation: config.activation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_base_model_prefixes_and_legacy_layer_norm_names() {
        assert_eq!(
            canonical("roberta.embeddings.LayerNorm.gamma"),
            "embeddings.LayerNorm.weight"
        );
        assert_eq!(
            canonical("bert.encoder.layer.0.output.LayerNorm.beta"),
            "encoder.layer.0.output.LayerNorm.bias"
        );
        assert_eq!(canonical("pooler.dense.weight"), "pooler.dense.weight");
    }

    #[test]
    fn roberta_positions_count_non_pad_tokens_from_padding_idx_plus_one() {
        let config = br#"{"model_type":"roberta","vocab_size":8,"hidden_size":4,"num_hidden_layers":1,
            "num_attention_heads":2,"intermediate_size":4,"max_position_embeddings":10,"pad_token_id":1}"#;
        let config = BertConfig::from_json(config, "config.json").unwrap();
        assert_eq!(config.max_input_tokens(), 8);
        let device = Device::flex();
        let enc = BertEncoder {
            word_embeddings: Param::from_tensor(Tensor::zeros([8, 4], &device)),
            position_embeddings: Param::from_tensor(Tensor::zeros([10, 4], &device)),
            token_type: Param::from_tensor(Tensor::zeros([4], &device)),
            embeddings_norm: LayerNormConfig::new(4).init(&device),
            layers: vec![],
            kind: BertKind::Roberta,
            padding_idx: 1,
        };
        assert_eq!(enc.position_ids(&[0, 5, 2, 1, 1]), vec![2, 3, 4, 1, 1]);
    }
}
