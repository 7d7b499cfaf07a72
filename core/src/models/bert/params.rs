//! Hugging Face weight names of `BertModel` / `RobertaModel` checkpoints → [`BertEncoder`].

use super::config::BertConfig;
use super::model::{BertEncoder, BertLayer};
use crate::{Error, Result};
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::HashMap;

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
        crate::checkpoint::read_f32(file, name, &view)
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
    use crate::models::bert::BertKind;

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
