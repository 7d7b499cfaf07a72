//! The math: embeddings, then post-LN Transformer layers.

use super::config::BertKind;
use crate::ops::Activation;
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu, softmax, tanh};
use burn::tensor::{Device, Int, Tensor, TensorData};

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
    pub(super) fn position_ids(&self, padded: &[u32]) -> Vec<i64> {
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
