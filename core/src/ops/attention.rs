//! Multi-head attention's core: `softmax(q kᵀ · scale + mask) v` over split heads, the decoding
//! cache's append, and the masks. On a GPU in f32 the kernels of [`crate::ops::gpu`] (reading
//! keys and values where they lie); elsewhere burn's ops through [`crate::ops::fused`].

use crate::ops::linear::{product_dtype, project3};
use crate::ops::Proj;
use burn::module::Module;
use burn::nn::Dropout;
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

/// Multi-head attention's projections: queries, keys and values from the input, the heads'
/// output projected back (BART's `q_proj`…`out_proj`, T5's `q`…`o`: the names live in each
/// model's `params.rs`).
#[derive(Module, Debug)]
pub struct Attention {
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    /// On the attention weights.
    pub dropout: Dropout,
    pub num_heads: usize,
    /// Multiplies the scores: BART `head_dim^-0.5`; T5 1 (folded into its initialization).
    pub scale: f64,
}

impl Attention {
    /// Projects `x` `[b, len, d]` to keys and values `[b, heads, len, head_dim]`.
    pub fn keys_values(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (
            split_heads(self.k.forward(x.clone()), self.num_heads),
            split_heads(self.v.forward(x), self.num_heads),
        )
    }

    /// Projects `x` `[b, len, d]` to queries `[b, len, inner]` and keys and values as
    /// [`Attention::keys_values`] (on a GPU, for a few rows, in one kernel: [`project3`]).
    pub fn queries_keys_values(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
        let [q, k, v] = project3(x, [&self.q, &self.k, &self.v]);
        let heads = self.num_heads;
        (q, split_heads(k, heads), split_heads(v, heads))
    }

    /// [`attention`] of `q(x)` over `k`/`v`, heads merged and projected by `o`. `x` has
    /// `group` consecutive rows per row of `k`/`v`/`mask` (the beams of one input attending to
    /// its encoder output).
    pub fn attend(
        &self,
        x: Tensor<3>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<4>>,
        group: usize,
    ) -> Tensor<3> {
        self.attend_queries(self.q.forward(x), k, v, mask, group)
    }

    /// [`Attention::attend`] given the projected queries `q(x)` `[rows, len, inner]`. Both
    /// products run in the projections' precision ([`crate::models::Model::hold_matrices_in`]).
    pub fn attend_queries(
        &self,
        q: Tensor<3>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<4>>,
        group: usize,
    ) -> Tensor<3> {
        let dtype = product_dtype(&self.q.linear.weight.val());
        let out = attention(
            q,
            k,
            v,
            mask,
            self.num_heads,
            group,
            self.scale,
            dtype,
            &self.dropout,
        );
        self.o.forward(out)
    }
}

/// Large negative score for masked attention positions (transformers adds `finfo(f32).min`).
pub const MASKED: f32 = f32::MIN;

/// `[b, len, heads · head_dim]` → `[b, heads, len, head_dim]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [batch, len, width] = x.dims();
    x.reshape([batch, len, heads, width / heads])
        .swap_dims(1, 2)
}

/// The additive key mask `[batch, 1, 1, len]` of an attention mask `[batch, len]` (1 = token,
/// 0 = padding): 0 for tokens, [`MASKED`] for padding.
pub fn key_mask(attention_mask: Tensor<2, Int>) -> Tensor<4> {
    let [batch, len] = attention_mask.dims();
    let pad: Tensor<2, Bool> = attention_mask.clone().equal_elem(0);
    Tensor::<2>::zeros([batch, len], &attention_mask.device())
        .mask_fill(pad, MASKED)
        .reshape([batch, 1, 1, len])
}

/// The causal mask `[1, 1, len, past_len + len]` of `len` new queries after `past_len` cached
/// keys: [`MASKED`] on the future keys.
pub fn causal_mask(len: usize, past_len: usize, device: &Device) -> Tensor<4> {
    // burn's tril_mask is true OUTSIDE the lower triangle: exactly the future keys.
    let future: Tensor<2, Bool> = Tensor::tril_mask([len, past_len + len], past_len as i64, device);
    Tensor::<2>::zeros([len, past_len + len], device)
        .mask_fill(future, MASKED)
        .reshape([1, 1, len, past_len + len])
}

/// `[k_old | k_new]`, `[v_old | v_new]` along the length axis (on a GPU, one kernel for both).
pub fn append_keys_values(
    k_old: Tensor<4>,
    k_new: Tensor<4>,
    v_old: Tensor<4>,
    v_new: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    #[cfg(feature = "gpu")]
    if let Some(kv) = crate::ops::gpu::append_keys_values(&k_old, &k_new, &v_old, &v_new) {
        return kv;
    }
    (
        Tensor::cat(vec![k_old, k_new], 2),
        Tensor::cat(vec![v_old, v_new], 2),
    )
}

/// `softmax(q kᵀ · scale + mask) v` with heads merged: queries `q` `[rows, len, heads · head_dim]`,
/// keys and values `[rows / group, heads, keys, head_dim]`, result `[rows, len, heads · head_dim]`
/// (before the output projection).
///
/// `q` has `group` consecutive rows per row of `k`/`v`/`mask` (the beams of one input attending
/// to its encoder output): their queries are stacked along the length axis, so the keys and
/// values are neither copied per beam nor reordered. `dtype` is the precision of the products
/// (the projections', [`crate::ops::linear::product_dtype`]): in f32 the scale goes on the
/// (smaller) queries; in half precision on the f32 scores, as transformers applies it, so that
/// the queries are rounded unscaled as there. `dropout` acts on the attention weights.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: Tensor<3>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<4>>,
    heads: usize,
    group: usize,
    scale: f64,
    dtype: DType,
    dropout: &Dropout,
) -> Tensor<3> {
    let [rows, len, width] = q.dims();
    let inputs = rows / group;
    // [rows, len, d] → [inputs, group·len, d] (rows of an input are consecutive) → heads.
    let q = q.reshape([inputs, group * len, width]);
    // On a GPU in f32: three kernels reading the keys and values where they lie.
    #[cfg(feature = "gpu")]
    if dtype == DType::F32 {
        let queries = q.clone().reshape([rows * len, width]);
        if let Some(out) = crate::ops::gpu::attention(&queries, k, v, mask, scale) {
            return out.reshape([rows, len, width]);
        }
    }
    let q = split_heads(q, heads);
    let mut scores = if dtype == DType::F32 {
        crate::ops::fused::matmul(q.mul_scalar(scale), k.clone().swap_dims(2, 3))
    } else {
        crate::ops::fused::matmul_in(q, k.clone().swap_dims(2, 3), dtype).mul_scalar(scale)
    };
    if let Some(mask) = mask {
        scores = scores + mask.clone();
    }
    let weights = crate::ops::fused::dropout(dropout, crate::ops::fused::softmax_last(scores));
    crate::ops::fused::matmul_in(weights, v.clone(), dtype)
        .swap_dims(1, 2)
        .reshape([rows, len, width])
}

/// Encoder output and what the decoder needs from it.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `[batch, src_len, d_model]`
    pub hidden: Tensor<3>,
    /// Additive key mask `[batch, 1, 1, src_len]`: 0 for tokens, `f32::MIN` for padding.
    pub key_mask: Tensor<4>,
}

/// Per-layer decoder state: self-attention keys/values so far (one per row), cross-attention
/// keys/values of the encoder output (one per input, shared by its beams).
#[derive(Debug, Clone)]
pub struct LayerCache {
    pub(crate) self_kv: Option<(Tensor<4>, Tensor<4>)>,
    pub(crate) cross_kv: (Tensor<4>, Tensor<4>),
}

/// The decoder's incremental state for a set of rows (batch × beams).
#[derive(Debug, Clone)]
pub struct DecoderCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) key_mask: Tensor<4>,
    /// Consecutive rows that share one input (beams); their cross-attention state is equal.
    pub(crate) rows_per_input: usize,
    /// Tokens already fed (the position of the next one).
    pub past_len: usize,
}

impl DecoderCache {
    /// Row `i` of the new cache continues row `src[i]` of the old one. Beam search only moves
    /// rows among the beams of one input, which share the cross-attention state: only the
    /// self-attention cache is copied.
    pub fn reorder(&mut self, src: &[usize]) -> crate::Result<()> {
        let g = self.rows_per_input;
        if src.len() != self.rows() || src.iter().enumerate().any(|(i, &s)| s / g != i / g) {
            return Err(crate::Error::Generation(format!(
                "cache reorder must keep rows within their input's {g} beams"
            )));
        }
        let device = self.key_mask.device();
        let index: Vec<i64> = src.iter().map(|&i| i as i64).collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [src.len()]), &device);
        for layer in &mut self.layers {
            if let Some((k, v)) = layer.self_kv.take() {
                layer.self_kv = Some((k.select(0, index.clone()), v.select(0, index.clone())));
            }
        }
        Ok(())
    }

    /// Decoder rows: inputs × rows per input.
    pub fn rows(&self) -> usize {
        self.key_mask.dims()[0] * self.rows_per_input
    }
}
