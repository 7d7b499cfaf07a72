//! T5 (Raffel et al., 2020) as transformers' `T5ForConditionalGeneration` computes it: a
//! pre-norm Transformer encoder-decoder with RMS LayerNorm, no biases, unscaled attention, and
//! a bucketed relative position bias (computed by the first layer of each stack, shared by the
//! others; bidirectional in the encoder, causal in the decoder). The output projection is the
//! shared embedding (decoder output scaled by `d_model^-0.5`) or, untied, its own `lm_head`.
//!
//! Reading order: [`T5`] → [`Stack`] (encoder / decoder) → [`Block`] → attention
//! ([`crate::ops::attention::Attention`]) and [`FeedForward`]. Weight names live in [`super::params`]; every op in [`crate::ops`].

use super::config::T5Config;
use crate::ops::attention::{
    causal_mask, key_mask, Attention, DecoderCache, Encoded, KeysValues, LayerCache,
};
use crate::ops::{dropout, rms_norm, Activation, Proj};
use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// The full sequence-to-sequence model.
#[derive(Module, Debug)]
pub struct T5 {
    /// Token embedding shared by encoder and decoder: `[vocab, d_model]`.
    pub shared: Param<Tensor<2>>,
    /// The same table as row blocks when a device cannot hold it as one buffer (see
    /// [`crate::checkpoint::LoadOptions`]); empty otherwise.
    pub shared_parts: Vec<Param<Tensor<2>>>,
    /// An untied output projection `[vocab, d_model]` (HF layout); `None` when tied.
    pub lm_head: Option<Param<Tensor<2>>>,
    /// The output projection held for the CPU's own products (int8 or halves, as the
    /// projections: [`crate::checkpoint::LoadOptions`]).
    #[module(skip)]
    pub lm_head_host: Option<std::sync::Arc<crate::ops::HostWeight>>,
    pub encoder: Stack,
    pub decoder: Stack,
    /// `d_model^-0.5` on the decoder output when the head is tied, else 1.
    pub output_scale: f64,
    /// Training: activations on the autodiff device from the embeddings on.
    pub training: bool,
}

/// The encoder or the decoder: blocks, a final RMS norm, and the relative position bias table
/// of its first block.
#[derive(Module, Debug)]
pub struct Stack {
    /// `[num_buckets, num_heads]`
    pub relative_attention_bias: Param<Tensor<2>>,
    pub blocks: Vec<Block>,
    pub final_layer_norm: Param<Tensor<1>>,
    pub dropout: Dropout,
    /// Decoder: causal attention and unidirectional buckets; cross-attention in every block.
    pub is_decoder: bool,
    pub num_buckets: usize,
    pub max_distance: usize,
    pub eps: f64,
}

/// One layer: self-attention, (decoder) cross-attention, feed-forward — each `x + f(norm(x))`.
#[derive(Module, Debug)]
pub struct Block {
    pub self_attn: Attention,
    pub self_attn_norm: Param<Tensor<1>>,
    pub cross_attn: Option<Attention>,
    pub cross_attn_norm: Option<Param<Tensor<1>>>,
    pub ff: FeedForward,
    pub ff_norm: Param<Tensor<1>>,
    pub dropout: Dropout,
    pub eps: f64,
}

/// `wo(act(wi x))`, or gated: `wo(act(wi_0 x) ⊙ wi_1 x)`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `wi` (plain) or `wi_0` (gated).
    pub wi: Proj,
    /// `wi_1` (gated only).
    pub wi_1: Option<Proj>,
    pub wo: Proj,
    pub dropout: Dropout,
    #[module(skip)]
    pub activation: Activation,
}

impl T5 {
    pub fn device(&self) -> Device {
        self.shared.val().device()
    }

    /// Encodes `input_ids` `[batch, src_len]`; `attention_mask` is 1 for tokens, 0 for padding.
    pub fn encode(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Encoded {
        let key_mask = key_mask(attention_mask);
        let x = self.embed(input_ids);
        let [_, len, _] = x.dims();
        // The first block's bias, shared by every block, plus the padding mask.
        let bias = self.encoder.position_bias(len, len, 0, &x.device()) + key_mask.clone();
        let mut x = dropout(&self.encoder.dropout, x);
        for block in &self.encoder.blocks {
            x = block.forward_encoder(x, &bias);
        }
        let hidden = dropout(
            &self.encoder.dropout,
            rms_norm(&self.encoder.final_layer_norm, self.encoder.eps, x),
        );
        Encoded { hidden, key_mask }
    }

    /// Starts decoding `rows_per_input` rows (beams) for each input of `encoded`.
    pub fn start_decoding(&self, encoded: &Encoded, rows_per_input: usize) -> DecoderCache {
        let layers = self
            .decoder
            .blocks
            .iter()
            .map(|block| LayerCache {
                self_kv: None,
                cross_kv: block
                    .cross_attn
                    .as_ref()
                    .expect("decoder blocks have cross-attention")
                    .cached_keys_values(encoded.hidden.clone()),
            })
            .collect();
        DecoderCache {
            layers,
            key_mask: encoded.key_mask.clone(),
            rows_per_input,
            past_len: 0,
        }
    }

    /// Feeds `tokens` `[rows, new_len]` and returns the logits `[rows, new_len, vocab]`.
    pub fn decode(&self, tokens: Tensor<2, Int>, cache: &mut DecoderCache) -> Tensor<3> {
        let x = self.embed(tokens);
        let [_, len, _] = x.dims();
        let past = cache.past_len;
        let device = x.device();
        let mut bias = self.decoder.position_bias(len, past + len, past, &device);
        if len > 1 {
            bias = bias + causal_mask(len, past, &device);
        }
        let mut x = dropout(&self.decoder.dropout, x);
        for (block, layer_cache) in self.decoder.blocks.iter().zip(&mut cache.layers) {
            x = block.forward_decoder(x, layer_cache, &bias, &cache.key_mask, cache.rows_per_input);
        }
        cache.past_len += len;
        let x = dropout(
            &self.decoder.dropout,
            rms_norm(&self.decoder.final_layer_norm, self.decoder.eps, x),
        );
        self.lm_head(x)
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

    /// Overrides the training dropout probability (T5 has one, `dropout_rate`).
    pub fn set_dropout(&mut self, p: f64) {
        for stack in [&mut self.encoder, &mut self.decoder] {
            stack.dropout.prob = p;
            for b in &mut stack.blocks {
                b.dropout.prob = p;
                b.ff.dropout.prob = p;
                b.self_attn.dropout.prob = p;
                if let Some(c) = b.cross_attn.as_mut() {
                    c.dropout.prob = p;
                }
            }
        }
    }

    /// Puts every weight back into its plain f32 tensor (whole table, no host weights).
    pub fn materialize(&mut self) {
        crate::ops::embedding::join_parts(&mut self.shared, &mut self.shared_parts);
        let head = self.lm_head_host.take();
        crate::checkpoint::release_host(self, head);
    }

    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        crate::ops::embedding::embed(&self.shared, &self.shared_parts, ids, 1.0, self.training)
    }

    fn lm_head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let hidden = if self.output_scale != 1.0 {
            hidden.mul_scalar(self.output_scale)
        } else {
            hidden
        };
        let host = self.lm_head_host.as_deref();
        match &self.lm_head {
            Some(head) => crate::ops::embedding::tied_output(head, &[], None, host, hidden),
            None => crate::ops::embedding::tied_output(
                &self.shared,
                &self.shared_parts,
                None,
                host,
                hidden,
            ),
        }
    }
}

impl Stack {
    /// The relative position bias `[1, heads, queries, keys]` of `queries` positions starting at
    /// `first` against `keys` positions starting at 0 (`T5Attention.compute_bias`).
    fn position_bias(
        &self,
        queries: usize,
        keys: usize,
        first: usize,
        device: &Device,
    ) -> Tensor<4> {
        let mut buckets = Vec::with_capacity(queries * keys);
        for q in first..first + queries {
            for k in 0..keys {
                let relative = k as i64 - q as i64;
                buckets.push(relative_position_bucket(
                    relative,
                    !self.is_decoder,
                    self.num_buckets,
                    self.max_distance,
                ) as i64);
            }
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(buckets, [queries * keys]), device);
        let table = self.relative_attention_bias.val(); // [buckets, heads]
        let [_, heads] = table.dims();
        table
            .select(0, index)
            .reshape([queries, keys, heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }
}

/// `T5Attention._relative_position_bucket`: exact buckets for distances under half the
/// buckets, logarithmic ones up to `max_distance`, the last bucket beyond (each direction
/// getting half the buckets when bidirectional). The logarithm is taken in f32 as torch does.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = num_buckets / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let ratio = (distance as f32 / max_exact as f32).ln();
        let scale = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
        let large = max_exact + (ratio / scale * (num_buckets - max_exact) as f32) as i64;
        bucket += large.min(num_buckets - 1);
    }
    bucket as usize
}

impl Block {
    fn forward_encoder(&self, x: Tensor<3>, bias: &Tensor<4>) -> Tensor<3> {
        let normed = rms_norm(&self.self_attn_norm, self.eps, x.clone());
        let (k, v) = self.self_attn.keys_values(normed.clone());
        let attended = self.self_attn.attend(normed, &k, &v, Some(bias), 1);
        let x = x + dropout(&self.dropout, attended);
        self.feed_forward(x)
    }

    fn forward_decoder(
        &self,
        x: Tensor<3>,
        cache: &mut LayerCache,
        bias: &Tensor<4>,
        key_mask: &Tensor<4>,
        rows_per_input: usize,
    ) -> Tensor<3> {
        // Causal self-attention over everything decoded so far.
        let normed = rms_norm(&self.self_attn_norm, self.eps, x.clone());
        let (q, k, v) = self.self_attn.queries_keys_values(normed);
        let kv = KeysValues::append(cache.self_kv.take(), k, v, self.self_attn.on_host());
        let attended = self.self_attn.attend_queries_cached(q, &kv, Some(bias), 1);
        cache.self_kv = Some(kv);
        let x = x + dropout(&self.dropout, attended);

        // Cross-attention to the encoder output (no position bias, the padding mask only).
        let cross = self.cross_attn.as_ref().expect("decoder block");
        let norm = self.cross_attn_norm.as_ref().expect("decoder block");
        let normed = rms_norm(norm, self.eps, x.clone());
        let attended = cross.attend_cached(normed, &cache.cross_kv, Some(key_mask), rows_per_input);
        let x = x + dropout(&self.dropout, attended);
        self.feed_forward(x)
    }

    fn feed_forward(&self, x: Tensor<3>) -> Tensor<3> {
        let normed = rms_norm(&self.ff_norm, self.eps, x.clone());
        x + dropout(&self.dropout, self.ff.forward(normed))
    }
}

impl FeedForward {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = match &self.wi_1 {
            None => self.wi.forward_activated(x, self.activation),
            Some(wi_1) => self.wi.forward_activated(x.clone(), self.activation) * wi_1.forward(x),
        };
        self.wo.forward(dropout(&self.dropout, hidden))
    }
}

impl T5Config {
    /// The model with every parameter an uninitialised placeholder of the right shape, to be
    /// filled from a checkpoint by [`super::params`].
    pub fn init(&self, device: &Device) -> T5 {
        use burn::nn::DropoutConfig;
        let (d, inner) = (self.d_model, self.inner_dim());
        let empty2 = |shape: [usize; 2]| {
            Param::from_tensor(Tensor::<2>::zeros([1, 1], device).expand(shape))
        };
        let empty1 = |n: usize| Param::from_tensor(Tensor::<1>::zeros([1], device).expand([n]));
        let linear = |i: usize, o: usize| Proj::placeholder(i, o, false, device);
        let drop = || DropoutConfig::new(self.dropout_rate).init();
        let attention = || Attention {
            q: linear(d, inner),
            k: linear(d, inner),
            v: linear(d, inner),
            o: linear(inner, d),
            dropout: drop(),
            num_heads: self.num_heads,
            // Unscaled: T5 folds the scale into its initialization.
            scale: 1.0,
        };
        let ff = || FeedForward {
            wi: linear(d, self.d_ff),
            wi_1: self.gated.then(|| linear(d, self.d_ff)),
            wo: linear(self.d_ff, d),
            dropout: drop(),
            activation: self.activation,
        };
        let stack = |layers: usize, is_decoder: bool| Stack {
            relative_attention_bias: empty2([self.relative_attention_num_buckets, self.num_heads]),
            blocks: (0..layers)
                .map(|_| Block {
                    self_attn: attention(),
                    self_attn_norm: empty1(d),
                    cross_attn: is_decoder.then(attention),
                    cross_attn_norm: is_decoder.then(|| empty1(d)),
                    ff: ff(),
                    ff_norm: empty1(d),
                    dropout: drop(),
                    eps: self.layer_norm_epsilon,
                })
                .collect(),
            final_layer_norm: empty1(d),
            dropout: drop(),
            is_decoder,
            num_buckets: self.relative_attention_num_buckets,
            max_distance: self.relative_attention_max_distance,
            eps: self.layer_norm_epsilon,
        };
        T5 {
            shared: empty2([self.vocab_size, d]),
            shared_parts: Vec::new(),
            lm_head: (!self.tie_word_embeddings).then(|| empty2([self.vocab_size, d])),
            lm_head_host: None,
            encoder: stack(self.num_layers, false),
            decoder: stack(self.num_decoder_layers, true),
            output_scale: if self.tie_word_embeddings {
                (d as f64).powf(-0.5)
            } else {
                1.0
            },
            training: false,
        }
    }
}
