//! BART (Lewis et al., 2019) as transformers' `BartForConditionalGeneration` computes it:
//! a post-LayerNorm Transformer encoder-decoder with learned positions, a shared token
//! embedding tied to the output projection, and a `final_logits_bias`.
//!
//! Reading order: [`Bart`] (the whole model) → [`Encoder`] / [`Decoder`] → their layers →
//! [`Attention`]. Weight names and their Hugging Face spellings live in [`super::params`]; every
//! op (and the kernel it runs on) in [`crate::ops`].

use super::config::{BartConfig, POSITION_OFFSET};
use crate::ops::attention::{
    causal_mask, key_mask, Attention, DecoderCache, Encoded, KeysValues, LayerCache,
};
use crate::ops::{add_layer_norm, dropout, layer_norm, Activation, Proj};
use burn::module::{Module, Param};
use burn::nn::{Dropout, LayerNorm};
use burn::tensor::{DType, Device, Int, Tensor};

/// The full sequence-to-sequence model.
#[derive(Module, Debug)]
pub struct Bart {
    /// Token embedding shared by encoder, decoder and the output projection: `[vocab, d_model]`.
    pub shared: Param<Tensor<2>>,
    /// The same table as consecutive row blocks, when a device cannot hold it as one buffer
    /// (WebGPU's binding limit; see [`crate::checkpoint::LoadOptions`]). Empty otherwise; when not
    /// empty, `shared` is a one-row placeholder and these are the weights ([`Bart::materialize`]
    /// puts them back).
    pub shared_parts: Vec<Param<Tensor<2>>>,
    pub encoder: Encoder,
    pub decoder: Decoder,
    /// Added to the logits: `[vocab]`.
    pub final_logits_bias: Param<Tensor<1>>,
    /// The output projection (the shared table) with `final_logits_bias` held for the CPU's own
    /// products (int8 or halves, [`crate::checkpoint::LoadOptions`]); the
    /// embedding lookup keeps using `shared`.
    #[module(skip)]
    pub lm_head_host: Option<std::sync::Arc<crate::ops::HostWeight>>,
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
    pub activation: Activation,
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
    pub activation: Activation,
    #[module(skip)]
    pub layer_norm_eps: f64,
}

impl Bart {
    pub fn device(&self) -> Device {
        self.shared.val().device()
    }

    /// Encodes `input_ids` `[batch, src_len]`; `attention_mask` is 1 for tokens, 0 for padding.
    pub fn encode(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Encoded {
        let key_mask = key_mask(attention_mask);
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
    /// embedding table into `shared` (one tensor), and host projections ([`Proj::host`](crate::ops::Proj::host)) into
    /// their `linear.weight`.
    pub fn materialize(&mut self) {
        crate::ops::embedding::join_parts(&mut self.shared, &mut self.shared_parts);
        let head = self.lm_head_host.take();
        crate::checkpoint::release_host(self, head);
    }

    /// Token embedding, scaled by `sqrt(d_model)` when the config says so.
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        crate::ops::embedding::embed(
            &self.shared,
            &self.shared_parts,
            ids,
            self.embed_scale,
            self.training,
        )
    }

    /// Output projection tied to the shared embedding, plus `final_logits_bias`.
    fn lm_head(&self, hidden: Tensor<3>) -> Tensor<3> {
        crate::ops::embedding::tied_output(
            &self.shared,
            &self.shared_parts,
            Some(&self.final_logits_bias),
            self.lm_head_host.as_deref(),
            hidden,
        )
    }
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
        let mut x = dropout(
            &self.dropout,
            layer_norm(
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
        let x = add_layer_norm(
            &self.self_attn_layer_norm,
            self.layer_norm_eps,
            x,
            dropout(&self.dropout, attended),
        );
        let hidden = self.fc1.forward_activated(x.clone(), self.activation);
        let ffn = self.fc2.forward(dropout(&self.activation_dropout, hidden));
        add_layer_norm(
            &self.final_layer_norm,
            self.layer_norm_eps,
            x,
            dropout(&self.dropout, ffn),
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
                cross_kv: layer
                    .encoder_attn
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

    fn forward(&self, embedded: Tensor<3>, cache: &mut DecoderCache) -> Tensor<3> {
        let [_, len, _] = embedded.dims();
        let past_len = cache.past_len;
        let mut x = dropout(
            &self.dropout,
            layer_norm(
                &self.layernorm_embedding,
                self.layer_norm_eps,
                embedded + positions(&self.embed_positions, past_len, len),
            ),
        );
        // Causal mask over [past + new] keys, needed only when several tokens come at once.
        let causal = (len > 1).then(|| causal_mask(len, past_len, &x.device()));
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
        let kv = KeysValues::append(cache.self_kv.take(), k, v, self.self_attn.on_host());
        let attended = self.self_attn.attend_queries_cached(q, &kv, causal, 1);
        cache.self_kv = Some(kv);
        let x = add_layer_norm(
            &self.self_attn_layer_norm,
            self.layer_norm_eps,
            x,
            dropout(&self.dropout, attended),
        );

        // Cross-attention to the encoder output.
        let attended = self.encoder_attn.attend_cached(
            x.clone(),
            &cache.cross_kv,
            Some(key_mask),
            rows_per_input,
        );
        let x = add_layer_norm(
            &self.encoder_attn_layer_norm,
            self.layer_norm_eps,
            x,
            dropout(&self.dropout, attended),
        );

        let hidden = self.fc1.forward_activated(x.clone(), self.activation);
        let ffn = self.fc2.forward(dropout(&self.activation_dropout, hidden));
        add_layer_norm(
            &self.final_layer_norm,
            self.layer_norm_eps,
            x,
            dropout(&self.dropout, ffn),
        )
    }
}

impl BartConfig {
    /// The model with every parameter an uninitialised placeholder of the right shape (burn's
    /// `XConfig::init(device)` idiom), to be filled from a checkpoint by [`super::params`].
    pub fn init(&self, device: &Device) -> Bart {
        skeleton(self, device)
    }
}

fn skeleton(config: &BartConfig, device: &Device) -> Bart {
    use burn::nn::{DropoutConfig, LayerNormConfig};
    let d = config.d_model;
    // Broadcast views of a single zero: the right shapes, no memory.
    let empty2 =
        |shape: [usize; 2]| Param::from_tensor(Tensor::<2>::zeros([1, 1], device).expand(shape));
    let empty1 = |n: usize| Param::from_tensor(Tensor::<1>::zeros([1], device).expand([n]));
    let linear = |i: usize, o: usize| Proj::placeholder(i, o, true, device);
    let layer_norm = || {
        LayerNormConfig::new(d)
            .with_epsilon(config.layer_norm_eps)
            .init(device)
    };
    let dropout = |p: f64| DropoutConfig::new(p).init();
    let attention = |heads: usize| Attention {
        q: linear(d, d),
        k: linear(d, d),
        v: linear(d, d),
        o: linear(d, d),
        dropout: dropout(config.attention_dropout),
        num_heads: heads,
        scale: ((d / heads) as f64).powf(-0.5),
    };
    let activation = config.activation;
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
        lm_head_host: None,
        embed_scale: if config.scale_embedding {
            (d as f64).sqrt()
        } else {
            1.0
        },
        training: false,
    }
}
