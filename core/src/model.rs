//! BART (Lewis et al., 2019) as transformers' `BartForConditionalGeneration` computes it:
//! a post-LayerNorm Transformer encoder-decoder with learned positions, a shared token
//! embedding tied to the output projection, and a `final_logits_bias`.
//!
//! Reading order: [`Bart`] (the whole model) → [`Encoder`] / [`Decoder`] → their layers →
//! [`Attention`]. Weight names and their Hugging Face spellings live in [`crate::weights`].

use crate::config::{Activation, BartConfig, POSITION_OFFSET};
use burn::module::{Module, Param};
use burn::nn::{Dropout, LayerNorm, Linear};
use burn::tensor::activation::{gelu_approximate, relu, silu, tanh};
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

/// Large negative score for masked attention positions (transformers adds `finfo(f32).min`).
const MASKED: f32 = f32::MIN;

/// The full sequence-to-sequence model.
#[derive(Module, Debug)]
pub struct Bart {
    /// Token embedding shared by encoder, decoder and the output projection: `[vocab, d_model]`.
    pub shared: Param<Tensor<2>>,
    /// The same table as consecutive row blocks, when a device cannot hold it as one buffer
    /// (WebGPU's binding limit; see [`crate::weights::LoadOptions`]). Empty otherwise; when not
    /// empty, `shared` is a one-row placeholder and these are the weights ([`Bart::materialize`]
    /// puts them back).
    pub shared_parts: Vec<Param<Tensor<2>>>,
    pub encoder: Encoder,
    pub decoder: Decoder,
    /// Added to the logits: `[vocab]`.
    pub final_logits_bias: Param<Tensor<1>>,
    /// The output projection (the shared table) quantized to int8 with `final_logits_bias`,
    /// for CPU devices computing a q8/q4 bundle in int8 ([`crate::weights::LoadOptions`]); the
    /// embedding lookup keeps using `shared`.
    #[module(skip)]
    pub lm_head_int8: Option<std::sync::Arc<crate::int8::Int8Weight>>,
    /// `sqrt(d_model)` when `scale_embedding`, else 1.
    pub embed_scale: f64,
    /// Training: activations go on the autodiff device from the embeddings on, so that every
    /// dropout applies (burn's dropout acts only on autodiff tensors).
    pub training: bool,
}

#[derive(Module, Debug)]
pub struct Encoder {
    /// Learned positions, `[max_position_embeddings + 2, d_model]`.
    pub embed_positions: Param<Tensor<2>>,
    pub layernorm_embedding: LayerNorm,
    pub dropout: Dropout,
    pub layers: Vec<EncoderLayer>,
    /// `config.layer_norm_eps` (burn's `LayerNorm` keeps its own private).
    #[module(skip)]
    pub layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct Decoder {
    pub embed_positions: Param<Tensor<2>>,
    pub layernorm_embedding: LayerNorm,
    pub dropout: Dropout,
    pub layers: Vec<DecoderLayer>,
    /// `config.layer_norm_eps` (burn's `LayerNorm` keeps its own private).
    #[module(skip)]
    pub layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub self_attn: Attention,
    pub self_attn_layer_norm: LayerNorm,
    pub fc1: Proj,
    pub fc2: Proj,
    pub final_layer_norm: LayerNorm,
    /// On each sublayer's output (`config.dropout`) and after the activation
    /// (`config.activation_dropout`).
    pub dropout: Dropout,
    pub activation_dropout: Dropout,
    #[module(skip)]
    pub activation: ActivationFn,
    #[module(skip)]
    pub layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub self_attn_layer_norm: LayerNorm,
    pub encoder_attn: Attention,
    pub encoder_attn_layer_norm: LayerNorm,
    pub fc1: Proj,
    pub fc2: Proj,
    pub final_layer_norm: LayerNorm,
    /// On each sublayer's output (`config.dropout`) and after the activation
    /// (`config.activation_dropout`).
    pub dropout: Dropout,
    pub activation_dropout: Dropout,
    #[module(skip)]
    pub activation: ActivationFn,
    #[module(skip)]
    pub layer_norm_eps: f64,
}

/// Multi-head scaled dot-product attention with separate q/k/v/out projections.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Proj,
    pub k_proj: Proj,
    pub v_proj: Proj,
    pub out_proj: Proj,
    /// On the attention weights (`config.attention_dropout`).
    pub dropout: Dropout,
    pub num_heads: usize,
}

/// The activation as a module-skippable value.
#[derive(Debug, Clone, Copy)]
pub struct ActivationFn(pub Activation);

impl ActivationFn {
    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self.0 {
            Activation::Gelu => crate::fused::gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::Relu => relu(x),
            Activation::Silu => silu(x),
            Activation::Tanh => tanh(x),
        }
    }
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
    self_kv: Option<(Tensor<4>, Tensor<4>)>,
    cross_kv: (Tensor<4>, Tensor<4>),
}

/// The decoder's incremental state for a set of rows (batch × beams).
#[derive(Debug, Clone)]
pub struct DecoderCache {
    layers: Vec<LayerCache>,
    key_mask: Tensor<4>,
    /// Consecutive rows that share one input (beams); their cross-attention state is equal.
    rows_per_input: usize,
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

impl Bart {
    pub fn device(&self) -> Device {
        self.shared.val().device()
    }

    /// Encodes `input_ids` `[batch, src_len]`; `attention_mask` is 1 for tokens, 0 for padding.
    pub fn encode(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Encoded {
        let [batch, src_len] = input_ids.dims();
        let pad: Tensor<2, Bool> = attention_mask.equal_elem(0);
        let key_mask = Tensor::<2>::zeros([batch, src_len], &input_ids.device())
            .mask_fill(pad, MASKED)
            .reshape([batch, 1, 1, src_len]);
        let embedded = self.embed(input_ids);
        let hidden = self.encoder.forward(embedded, &key_mask);
        Encoded { hidden, key_mask }
    }

    /// Starts decoding `rows_per_input` rows (beams) for each input of `encoded`; row
    /// `b * rows_per_input + k` belongs to input `b`.
    pub fn start_decoding(&self, encoded: &Encoded, rows_per_input: usize) -> DecoderCache {
        self.decoder.init_cache(encoded, rows_per_input)
    }

    /// Feeds `tokens` `[rows, new_len]` to the decoder and returns the logits
    /// `[rows, new_len, vocab]` of the next tokens.
    pub fn decode(&self, tokens: Tensor<2, Int>, cache: &mut DecoderCache) -> Tensor<3> {
        let embedded = self.embed(tokens);
        let hidden = self.decoder.forward(embedded, cache);
        self.lm_head(hidden)
    }

    /// Teacher-forced forward pass, as `model(input_ids, attention_mask, decoder_input_ids)`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        decoder_input_ids: Tensor<2, Int>,
    ) -> (Encoded, Tensor<3>) {
        let encoded = self.encode(input_ids, attention_mask);
        let mut cache = self.start_decoding(&encoded, 1);
        let logits = self.decode(decoder_input_ids, &mut cache);
        (encoded, logits)
    }

    /// Overrides the training dropout probabilities (e.g. all 0 for a deterministic run).
    pub fn set_dropout(&mut self, dropout: f64, attention: f64, activation: f64) {
        self.encoder.dropout.prob = dropout;
        self.decoder.dropout.prob = dropout;
        for l in &mut self.encoder.layers {
            l.dropout.prob = dropout;
            l.activation_dropout.prob = activation;
            l.self_attn.dropout.prob = attention;
        }
        for l in &mut self.decoder.layers {
            l.dropout.prob = dropout;
            l.activation_dropout.prob = activation;
            l.self_attn.dropout.prob = attention;
            l.encoder_attn.dropout.prob = attention;
        }
    }

    /// Puts every weight back into its plain f32 tensor, e.g. before saving or counting: a split
    /// embedding table into `shared` (one tensor), and int8 projections ([`Proj::int8`]) into
    /// their `linear.weight`.
    pub fn materialize(&mut self) {
        if !self.shared_parts.is_empty() {
            let parts = std::mem::take(&mut self.shared_parts);
            self.shared =
                Param::from_tensor(Tensor::cat(parts.iter().map(|p| p.val()).collect(), 0));
        }
        self.lm_head_int8 = None;
        let device = self.device();
        let _ = crate::weights::visit_projections(self, &mut |_, proj| {
            proj.expand_int8(&device);
            Ok(())
        });
    }

    /// Mixed precision, as PyTorch's autocast runs a model loaded with
    /// `torch_dtype=bfloat16` (or float16) under `bf16=True`: every weight matrix (projections,
    /// embeddings, positions) is held in `dtype` (half the memory) and takes its products in it
    /// (on the CPU with f32 accumulation, rounded once: [`crate::fused::matmul_in`]);
    /// activations, LayerNorm, softmax, GELU, residual sums, biases, LoRA branches and the loss
    /// stay in f32 (see [`product_dtype`]). LoRA factors and 1-D parameters are not touched;
    /// int8 and quantized weights neither. Returns how many matrices were cast.
    pub fn hold_matrices_in(&mut self, dtype: DType) -> usize {
        let cast = |p: &mut Param<Tensor<2>>| {
            let t = p.val();
            if matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) && t.dtype() != dtype {
                *p = Param::from_tensor(t.cast(dtype));
                1
            } else {
                0
            }
        };
        let mut n = 0;
        for part in &mut self.shared_parts {
            n += cast(part);
        }
        let _ = crate::weights::visit(self, &mut |_, slot| {
            if let crate::weights::Slot::Matrix(p) = slot {
                n += cast(p);
            }
            Ok(())
        });
        let _ = crate::weights::visit_projections(self, &mut |_, proj| {
            if proj.int8.is_none() {
                n += cast(&mut proj.linear.weight);
            }
            Ok(())
        });
        n
    }

    /// Token embedding, scaled by `sqrt(d_model)` when the config says so.
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, len] = ids.dims();
        let ids = ids.reshape([batch * len]);
        // On a GPU: one gather kernel per part, the scale applied there.
        #[cfg(feature = "gpu")]
        if !self.training {
            let parts: Vec<Tensor<2>> = match self.shared_parts.is_empty() {
                true => vec![self.shared.val()],
                false => self.shared_parts.iter().map(|p| p.val()).collect(),
            };
            if let Some(x) = crate::gpu::embed_rows(&parts, &ids, self.embed_scale as f32) {
                let [_, d_model] = x.dims();
                return x.reshape([batch, len, d_model]);
            }
        }
        let x = if self.shared_parts.is_empty() {
            self.shared.val().select(0, ids)
        } else {
            // Each part gives the rows it holds (ids shifted into its range, others clamped and
            // then zeroed); exactly one part holds each id, so the sum is the row itself.
            let mut start = 0i64;
            let mut sum: Option<Tensor<2>> = None;
            for part in &self.shared_parts {
                let part = part.val();
                let [rows, _] = part.dims();
                let end = start + rows as i64;
                let inside = ids
                    .clone()
                    .greater_equal_elem(start)
                    .bool_and(ids.clone().lower_elem(end));
                let local = ids.clone().sub_scalar(start).clamp(0, rows as i64 - 1);
                let got = part.select(0, local);
                let outside = inside.bool_not().unsqueeze_dim::<2>(1).expand(got.dims());
                let got = got.mask_fill(outside, 0.0);
                sum = Some(match sum {
                    Some(acc) => acc + got,
                    None => got,
                });
                start = end;
            }
            sum.expect("shared_parts is not empty")
        };
        let [_, d_model] = x.dims();
        let x = x.cast(DType::F32).reshape([batch, len, d_model]);
        let x = if self.training { x.autodiff() } else { x };
        if self.embed_scale != 1.0 {
            x.mul_scalar(self.embed_scale)
        } else {
            x
        }
    }

    /// Output projection tied to the shared embedding, plus `final_logits_bias`.
    fn lm_head(&self, hidden: Tensor<3>) -> Tensor<3> {
        if let Some(w) = &self.lm_head_int8 {
            return project_int8(w, hidden);
        }
        let [rows, len, d_model] = hidden.dims();
        let hidden = hidden.reshape([rows * len, d_model]);
        let project = |table: Tensor<2>| {
            let dtype = product_dtype(&table);
            if rows * len <= FEW_ROWS {
                weight_times(table, hidden.clone().cast(dtype).transpose())
                    .transpose()
                    .cast(DType::F32)
            } else {
                times_weight(hidden.clone(), table.transpose(), dtype)
            }
        };
        let logits = if self.shared_parts.is_empty() {
            project(self.shared.val())
        } else {
            Tensor::cat(
                self.shared_parts.iter().map(|p| project(p.val())).collect(),
                1,
            )
        };
        let [_, vocab] = logits.dims();
        (logits + self.final_logits_bias.val().unsqueeze::<2>()).reshape([rows, len, vocab])
    }
}

/// The precision a product with weight `w` is computed in: `w`'s own when it is held in half
/// precision ([`Bart::hold_matrices_in`]), otherwise f32 (also for quantized weights, which
/// burn dequantizes).
fn product_dtype<const D: usize>(w: &Tensor<D>) -> DType {
    match w.dtype() {
        dtype @ (DType::F16 | DType::BF16) => dtype,
        _ => DType::F32,
    }
}

/// Below this many rows, `x W` is computed as `(W x^T)^T`: gemm then streams the weight in
/// its stored (HF `[out, in]`) order, which is what decoding (a few rows per step) is bound by.
const FEW_ROWS: usize = 64;

/// `w xᵀ` for a weight `w` `[out, in]` and a few rows `xᵀ` `[in, rows]`: burn's matmul, or on
/// a GPU the kernel [`crate::gpu::weight_times`] picks for this shape.
fn weight_times(w: Tensor<2>, xt: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "gpu")]
    if let Some(y) = crate::gpu::weight_times(&w, &xt) {
        return y;
    }
    w.matmul(xt)
}

/// `x w` in `dtype`'s precision for many rows of `x` `[rows, in]` and a weight `w` `[in, out]`:
/// [`crate::fused::matmul_in`], or on a GPU where [`crate::gpu::times_weight`] applies, its kernel.
fn times_weight(x: Tensor<2>, w: Tensor<2>, dtype: DType) -> Tensor<2> {
    #[cfg(feature = "gpu")]
    if dtype == DType::F32 {
        if let Some(y) = crate::gpu::times_weight(&x, &w) {
            return y;
        }
    }
    crate::fused::matmul_in(x, w, dtype)
}

/// A linear projection `x W + b`, optionally with a LoRA branch (Hu et al., 2021):
/// `x W + b + s · (dropout(x) A) B`, as PEFT's `lora.Linear` computes it unmerged.
#[derive(Module, Debug)]
pub struct Proj {
    pub linear: Linear,
    pub lora: Option<LoraBranch>,
    /// A q8/q4 bundle's weight kept as int8 and computed in integers on the CPU
    /// ([`crate::int8`]; [`crate::weights::LoadOptions::int8_matmul`]). When set, it is the
    /// weight and bias, and `linear.weight` is a zero-memory placeholder of the right shape
    /// ([`Proj::expand_int8`] / [`Bart::materialize`] turn it back into f32).
    #[module(skip)]
    pub int8: Option<std::sync::Arc<crate::int8::Int8Weight>>,
}

/// The low-rank update of one projection. PEFT stores `lora_A` `[r, in]` and `lora_B`
/// `[out, r]`; burn's layout is their transposes.
#[derive(Module, Debug)]
pub struct LoraBranch {
    /// `[in, r]`
    pub a: Param<Tensor<2>>,
    /// `[r, out]`
    pub b: Param<Tensor<2>>,
    /// `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub scaling: f64,
    /// On the branch input; active only on an autodiff (training) device.
    pub dropout: Dropout,
}

impl Proj {
    /// `x` `[batch, len, d_in]` → `[batch, len, d_out]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let base = match &self.int8 {
            Some(w) => project_int8(w, x.clone()),
            None => project(&self.linear, x.clone()),
        };
        match &self.lora {
            None => base,
            Some(lora) => base + lora.forward(x),
        }
    }

    /// `activation(x W + b)`: on a GPU, for a few rows, GELU in the projection's kernel.
    fn forward_activated(&self, x: Tensor<3>, activation: ActivationFn) -> Tensor<3> {
        #[cfg(feature = "gpu")]
        if let (Activation::Gelu, Some((w, b))) = (activation.0, self.plain_f32()) {
            let [batch, len, d_in] = x.dims();
            let rows = x.clone().reshape([batch * len, d_in]);
            if let Some(y) = crate::gpu::linear_gelu_rows(&rows, &w, b.as_ref()) {
                let [_, d_out] = y.dims();
                return y.reshape([batch, len, d_out]);
            }
        }
        activation.apply(self.forward(x))
    }

    /// The weight `[out, in]` and bias of a projection that is just `x W + b` in f32: no int8
    /// weight, no LoRA branch, not held in half precision.
    #[cfg(feature = "gpu")]
    fn plain_f32(&self) -> Option<(Tensor<2>, Option<Tensor<1>>)> {
        let weight = self.linear.weight.val();
        if self.int8.is_some() || self.lora.is_some() || weight.dtype() != DType::F32 {
            return None;
        }
        Some((
            weight.transpose(),
            self.linear.bias.as_ref().map(|b| b.val()),
        ))
    }

    /// Replaces an int8 weight ([`Proj::int8`]) by its f32 values (`q × scale`).
    pub fn expand_int8(&mut self, device: &Device) {
        if let Some(w) = self.int8.take() {
            let (d_out, d_in) = (w.d_out(), w.d_in());
            let stored =
                Tensor::<2>::from_data(TensorData::new(w.dequantize(), [d_out, d_in]), device);
            self.linear.weight = Param::from_tensor(stored.transpose());
        }
    }

    /// Folds the LoRA branch into the weight: `W + s · A B` (PEFT's `merge_and_unload`).
    pub fn merge(&mut self) {
        if let Some(lora) = self.lora.take() {
            let device = lora.a.val().device();
            self.expand_int8(&device);
            let delta = lora.a.val().matmul(lora.b.val()).mul_scalar(lora.scaling);
            let weight = self.linear.weight.val() + delta;
            self.linear.weight = Param::from_tensor(weight);
        }
    }
}

impl LoraBranch {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, len, d_in] = x.dims();
        // While training (the factors on the autodiff device) dropout needs `x` there too, even
        // where it comes from the frozen, plain-tensor base.
        let a = self.a.val();
        let x = if a.is_autodiff() { x.autodiff() } else { x };
        let x = crate::fused::dropout(&self.dropout, x);
        let b = self.b.val();
        let [_, d_out] = b.dims();
        x.reshape([batch * len, d_in])
            .matmul(a)
            .matmul(b)
            .mul_scalar(self.scaling)
            .reshape([batch, len, d_out])
    }
}

/// `x W + b` for `x` `[batch, len, d_in]`.
fn project(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, len, d_in] = x.dims();
    let weight = linear.weight.val(); // [d_in, d_out]
    let [_, d_out] = weight.dims();
    let x = x.reshape([batch * len, d_in]);
    let dtype = product_dtype(&weight);
    // On a GPU, a few rows: product and bias in one kernel.
    #[cfg(feature = "gpu")]
    if dtype == DType::F32 {
        let bias = linear.bias.as_ref().map(|b| b.val());
        if let Some(y) = crate::gpu::linear_rows(&x, &weight.clone().transpose(), bias.as_ref()) {
            return y.reshape([batch, len, d_out]);
        }
    }
    let y = if batch * len <= FEW_ROWS {
        weight_times(weight.transpose(), x.cast(dtype).transpose())
            .transpose()
            .cast(DType::F32)
    } else {
        times_weight(x, weight, dtype)
    };
    let y = match &linear.bias {
        Some(b) => y + b.val().unsqueeze::<2>(),
        None => y,
    };
    y.reshape([batch, len, d_out])
}

/// [`project`] with an int8 weight, which holds its own bias (CPU devices: the activations are
/// read back, computed by [`crate::int8`] and put back).
fn project_int8(w: &crate::int8::Int8Weight, x: Tensor<3>) -> Tensor<3> {
    let [batch, len, _] = x.dims();
    let device = x.device();
    let data = x.into_data().convert::<f32>();
    let values = data.as_slice::<f32>().expect("f32 activations");
    let y = w.forward(values);
    Tensor::from_data(TensorData::new(y, [batch, len, w.d_out()]), &device)
}

/// Rows `past_len + 2 ..` of a learned position table, as `[1, len, d_model]`.
fn positions(table: &Param<Tensor<2>>, past_len: usize, len: usize) -> Tensor<3> {
    let start = past_len + POSITION_OFFSET;
    table
        .val()
        .slice([start..start + len])
        .cast(DType::F32)
        .unsqueeze::<3>()
}

impl Encoder {
    fn forward(&self, embedded: Tensor<3>, key_mask: &Tensor<4>) -> Tensor<3> {
        let [_, len, _] = embedded.dims();
        let mut x = crate::fused::dropout(
            &self.dropout,
            crate::fused::layer_norm(
                &self.layernorm_embedding,
                self.layer_norm_eps,
                embedded + positions(&self.embed_positions, 0, len),
            ),
        );
        for layer in &self.layers {
            x = layer.forward(x, key_mask);
        }
        x
    }
}

impl EncoderLayer {
    fn forward(&self, x: Tensor<3>, key_mask: &Tensor<4>) -> Tensor<3> {
        let (k, v) = self.self_attn.keys_values(x.clone());
        let attended = self.self_attn.attend(x.clone(), &k, &v, Some(key_mask), 1);
        let x = crate::fused::add_layer_norm(
            &self.self_attn_layer_norm,
            self.layer_norm_eps,
            x,
            crate::fused::dropout(&self.dropout, attended),
        );
        let hidden = self.fc1.forward_activated(x.clone(), self.activation);
        let ffn = self
            .fc2
            .forward(crate::fused::dropout(&self.activation_dropout, hidden));
        crate::fused::add_layer_norm(
            &self.final_layer_norm,
            self.layer_norm_eps,
            x,
            crate::fused::dropout(&self.dropout, ffn),
        )
    }
}

impl Decoder {
    /// Cross-attention keys/values are projected once per input; its beams attend to them
    /// together (see [`Attention::attend`]).
    fn init_cache(&self, encoded: &Encoded, rows_per_input: usize) -> DecoderCache {
        let layers = self
            .layers
            .iter()
            .map(|layer| LayerCache {
                self_kv: None,
                cross_kv: layer.encoder_attn.keys_values(encoded.hidden.clone()),
            })
            .collect();
        DecoderCache {
            layers,
            key_mask: encoded.key_mask.clone(),
            rows_per_input,
            past_len: 0,
        }
    }

    fn forward(&self, embedded: Tensor<3>, cache: &mut DecoderCache) -> Tensor<3> {
        let [_, len, _] = embedded.dims();
        let past_len = cache.past_len;
        let mut x = crate::fused::dropout(
            &self.dropout,
            crate::fused::layer_norm(
                &self.layernorm_embedding,
                self.layer_norm_eps,
                embedded + positions(&self.embed_positions, past_len, len),
            ),
        );
        // Causal mask over [past + new] keys, needed only when several tokens come at once.
        let causal = (len > 1).then(|| {
            let device = x.device();
            // burn's tril_mask is true OUTSIDE the lower triangle: exactly the future keys.
            let future: Tensor<2, Bool> =
                Tensor::tril_mask([len, past_len + len], past_len as i64, &device);
            Tensor::<2>::zeros([len, past_len + len], &device)
                .mask_fill(future, MASKED)
                .reshape([1, 1, len, past_len + len])
        });
        for (layer, layer_cache) in self.layers.iter().zip(&mut cache.layers) {
            x = layer.forward(
                x,
                layer_cache,
                causal.as_ref(),
                &cache.key_mask,
                cache.rows_per_input,
            );
        }
        cache.past_len += len;
        x
    }
}

impl DecoderLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        cache: &mut LayerCache,
        causal: Option<&Tensor<4>>,
        key_mask: &Tensor<4>,
        rows_per_input: usize,
    ) -> Tensor<3> {
        // Masked self-attention over everything decoded so far.
        let (q, k, v) = self.self_attn.queries_keys_values(x.clone());
        let (k, v) = match cache.self_kv.take() {
            Some((pk, pv)) => append_keys_values(pk, k, pv, v),
            None => (k, v),
        };
        let attended = self.self_attn.attend_queries(q, &k, &v, causal, 1);
        cache.self_kv = Some((k, v));
        let x = crate::fused::add_layer_norm(
            &self.self_attn_layer_norm,
            self.layer_norm_eps,
            x,
            crate::fused::dropout(&self.dropout, attended),
        );

        // Cross-attention to the encoder output.
        let (ck, cv) = &cache.cross_kv;
        let attended = self
            .encoder_attn
            .attend(x.clone(), ck, cv, Some(key_mask), rows_per_input);
        let x = crate::fused::add_layer_norm(
            &self.encoder_attn_layer_norm,
            self.layer_norm_eps,
            x,
            crate::fused::dropout(&self.dropout, attended),
        );

        let hidden = self.fc1.forward_activated(x.clone(), self.activation);
        let ffn = self
            .fc2
            .forward(crate::fused::dropout(&self.activation_dropout, hidden));
        crate::fused::add_layer_norm(
            &self.final_layer_norm,
            self.layer_norm_eps,
            x,
            crate::fused::dropout(&self.dropout, ffn),
        )
    }
}

/// `[k_old | k_new]`, `[v_old | v_new]` along the length axis (on a GPU, one kernel for both).
fn append_keys_values(
    k_old: Tensor<4>,
    k_new: Tensor<4>,
    v_old: Tensor<4>,
    v_new: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    #[cfg(feature = "gpu")]
    if let Some(kv) = crate::gpu::append_keys_values(&k_old, &k_new, &v_old, &v_new) {
        return kv;
    }
    (
        Tensor::cat(vec![k_old, k_new], 2),
        Tensor::cat(vec![v_old, v_new], 2),
    )
}

impl Attention {
    /// Projects `x` `[b, len, d]` to keys and values `[b, heads, len, head_dim]`.
    fn keys_values(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (
            self.split_heads(self.k_proj.forward(x.clone())),
            self.split_heads(self.v_proj.forward(x)),
        )
    }

    /// Projects `x` `[b, len, d]` to queries `[b, len, d]` and keys and values as
    /// [`Attention::keys_values`] (on a GPU, for a few rows, in one kernel).
    fn queries_keys_values(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
        #[cfg(feature = "gpu")]
        {
            let [b, len, d] = x.dims();
            let projs = [&self.q_proj, &self.k_proj, &self.v_proj];
            if let [Some(q), Some(k), Some(v)] = projs.map(|p| p.plain_f32()) {
                let rows = x.clone().reshape([b * len, d]);
                let weights = [&q.0, &k.0, &v.0];
                let biases = [q.1.as_ref(), k.1.as_ref(), v.1.as_ref()];
                if let Some([q, k, v]) = crate::gpu::linear_rows3(&rows, weights, biases) {
                    let [_, d_out] = q.dims();
                    let shape = [b, len, d_out];
                    let (k, v) = (k.reshape(shape), v.reshape(shape));
                    return (q.reshape(shape), self.split_heads(k), self.split_heads(v));
                }
            }
        }
        let (k, v) = self.keys_values(x.clone());
        (self.q_proj.forward(x), k, v)
    }

    /// `softmax(q kᵀ / sqrt(head_dim) + mask) v`, heads merged and projected.
    ///
    /// `x` has `group` consecutive rows per row of `k`/`v`/`mask` (the beams of one input
    /// attending to its encoder output): their queries are stacked along the length axis, so
    /// the keys and values are neither copied per beam nor reordered.
    fn attend(
        &self,
        x: Tensor<3>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<4>>,
        group: usize,
    ) -> Tensor<3> {
        self.attend_queries(self.q_proj.forward(x), k, v, mask, group)
    }

    /// [`Attention::attend`] given the projected queries `q_proj(x)` `[rows, len, d]`.
    fn attend_queries(
        &self,
        q: Tensor<3>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<4>>,
        group: usize,
    ) -> Tensor<3> {
        let [rows, len, d_model] = q.dims();
        let (heads, head_dim) = (self.num_heads, d_model / self.num_heads);
        let inputs = rows / group;
        // [rows, len, d] → [inputs, group·len, d] (rows of an input are consecutive) → heads.
        let scale = (head_dim as f64).powf(-0.5);
        let q = q.reshape([inputs, group * len, d_model]);
        // Both products in the projections' precision ([`Bart::hold_matrices_in`]). In f32 the
        // scale goes on the (smaller) queries; in half precision on the f32 scores, as
        // transformers applies it, so that the queries are rounded unscaled as there.
        let dtype = product_dtype(&self.q_proj.linear.weight.val());
        // On a GPU in f32: three kernels reading the keys and values where they lie.
        #[cfg(feature = "gpu")]
        if dtype == DType::F32 {
            let queries = q.clone().reshape([rows * len, d_model]);
            if let Some(out) = crate::gpu::attention(&queries, k, v, mask, scale) {
                return self.out_proj.forward(out.reshape([rows, len, d_model]));
            }
        }
        let q = self.split_heads(q);
        let mut scores = if dtype == DType::F32 {
            crate::fused::matmul(q.mul_scalar(scale), k.clone().swap_dims(2, 3))
        } else {
            crate::fused::matmul_in(q, k.clone().swap_dims(2, 3), dtype).mul_scalar(scale)
        };
        if let Some(mask) = mask {
            scores = scores + mask.clone();
        }
        let weights = crate::fused::dropout(&self.dropout, crate::fused::softmax_last(scores));
        let out = crate::fused::matmul_in(weights, v.clone(), dtype)
            .swap_dims(1, 2)
            .reshape([rows, len, heads * head_dim]);
        self.out_proj.forward(out)
    }

    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, len, d_model] = x.dims();
        x.reshape([batch, len, self.num_heads, d_model / self.num_heads])
            .swap_dims(1, 2)
    }
}

/// Builds a model whose parameters are uninitialised placeholders of the right shapes, to be
/// filled by [`crate::weights`].
pub fn skeleton(config: &BartConfig, device: &Device) -> Bart {
    use burn::nn::{DropoutConfig, LayerNormConfig};
    let d = config.d_model;
    // Broadcast views of a single zero: the right shapes, no memory.
    let empty2 =
        |shape: [usize; 2]| Param::from_tensor(Tensor::<2>::zeros([1, 1], device).expand(shape));
    let empty1 = |n: usize| Param::from_tensor(Tensor::<1>::zeros([1], device).expand([n]));
    let linear = |i: usize, o: usize| Proj {
        linear: Linear {
            weight: empty2([i, o]),
            bias: Some(empty1(o)),
        },
        lora: None,
        int8: None,
    };
    let layer_norm = || {
        LayerNormConfig::new(d)
            .with_epsilon(config.layer_norm_eps)
            .init(device)
    };
    let dropout = |p: f64| DropoutConfig::new(p).init();
    let attention = |heads: usize| Attention {
        q_proj: linear(d, d),
        k_proj: linear(d, d),
        v_proj: linear(d, d),
        out_proj: linear(d, d),
        dropout: dropout(config.attention_dropout),
        num_heads: heads,
    };
    let activation = ActivationFn(config.activation);
    let positions = config.max_position_embeddings + POSITION_OFFSET;
    Bart {
        shared: empty2([config.vocab_size, d]),
        shared_parts: Vec::new(),
        encoder: Encoder {
            embed_positions: empty2([positions, d]),
            layernorm_embedding: layer_norm(),
            dropout: dropout(config.dropout),
            layer_norm_eps: config.layer_norm_eps,
            layers: (0..config.encoder_layers)
                .map(|_| EncoderLayer {
                    self_attn: attention(config.encoder_attention_heads),
                    self_attn_layer_norm: layer_norm(),
                    fc1: linear(d, config.encoder_ffn_dim),
                    fc2: linear(config.encoder_ffn_dim, d),
                    final_layer_norm: layer_norm(),
                    dropout: dropout(config.dropout),
                    activation_dropout: dropout(config.activation_dropout),
                    activation,
                    layer_norm_eps: config.layer_norm_eps,
                })
                .collect(),
        },
        decoder: Decoder {
            embed_positions: empty2([positions, d]),
            layernorm_embedding: layer_norm(),
            dropout: dropout(config.dropout),
            layer_norm_eps: config.layer_norm_eps,
            layers: (0..config.decoder_layers)
                .map(|_| DecoderLayer {
                    self_attn: attention(config.decoder_attention_heads),
                    self_attn_layer_norm: layer_norm(),
                    encoder_attn: attention(config.decoder_attention_heads),
                    encoder_attn_layer_norm: layer_norm(),
                    fc1: linear(d, config.decoder_ffn_dim),
                    fc2: linear(config.decoder_ffn_dim, d),
                    final_layer_norm: layer_norm(),
                    dropout: dropout(config.dropout),
                    activation_dropout: dropout(config.activation_dropout),
                    activation,
                    layer_norm_eps: config.layer_norm_eps,
                })
                .collect(),
        },
        final_logits_bias: empty1(config.vocab_size),
        lm_head_int8: None,
        embed_scale: if config.scale_embedding {
            (d as f64).sqrt()
        } else {
            1.0
        },
        training: false,
    }
}
