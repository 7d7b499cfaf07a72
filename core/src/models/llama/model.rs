//! The Llama family (Touvron et al., 2023; Llama 3, Phi-3, Qwen2) as transformers'
//! `LlamaForCausalLM` computes it: a pre-norm decoder-only Transformer with RMSNorm, rotary
//! position embeddings on queries and keys, grouped-query attention (each key/value head serves
//! `heads / kv_heads` consecutive query heads), and a SwiGLU feed-forward
//! `down(act(gate x) ⊙ up x)`. The output projection is its own `lm_head` or the embedding.
//!
//! Reading order: [`Llama`] → [`Layer`] → [`SelfAttention`] and [`Mlp`]; generation state is a
//! [`CausalCache`] (keys and values per layer, each row's positions and padding). Weight names
//! live in [`super::params`]; every op in [`crate::ops`].

use crate::ops::attention::{KeysValues, MASKED};
use crate::ops::rope::{apply_rotary, Rope, RopeState};
use crate::ops::{rms_norm, Activation, Proj};
use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// The whole decoder-only model.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding `[vocab, hidden]` (`model.embed_tokens`).
    pub shared: Param<Tensor<2>>,
    /// The same table as row blocks when a device cannot hold it as one buffer; empty otherwise.
    pub shared_parts: Vec<Param<Tensor<2>>>,
    pub layers: Vec<Layer>,
    pub norm: Param<Tensor<1>>,
    /// An untied output projection `[vocab, hidden]` (HF layout); `None` when tied.
    pub lm_head: Option<Param<Tensor<2>>>,
    /// The output projection held for the CPU's own products (int8 or halves, as the
    /// projections: [`crate::checkpoint::LoadOptions`]).
    #[module(skip)]
    pub lm_head_host: Option<std::sync::Arc<crate::ops::HostWeight>>,
    #[module(skip)]
    pub rope: Rope,
    /// Phi-3's sliding window (keys more than this many places back are masked).
    #[module(skip)]
    pub sliding_window: Option<usize>,
    /// Phi-3 with `rope_scaling`: generation drops its cache and runs the whole sequence again
    /// when the sequence reaches this many tokens (`original_max_position_embeddings + 1`), so
    /// that every key is rotated with the long factors (`Phi3ForCausalLM.prepare_inputs_for_generation`).
    #[module(skip)]
    pub recompute_at: Option<usize>,
    pub eps: f64,
    /// Training: activations on the autodiff device from the embeddings on.
    pub training: bool,
}

/// One layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct Layer {
    pub input_layernorm: Param<Tensor<1>>,
    pub attn: SelfAttention,
    pub post_attention_layernorm: Param<Tensor<1>>,
    pub mlp: Mlp,
    pub eps: f64,
}

/// Grouped-query self-attention with rotary positions. Queries, keys and values come from
/// separate projections (Llama, Qwen2) or from one fused `qkv_proj` (Phi-3), in that order.
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub q: Option<Proj>,
    pub k: Option<Proj>,
    pub v: Option<Proj>,
    pub qkv: Option<Proj>,
    pub o: Proj,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// `down(act(gate x) ⊙ up x)`, gate and up separate (Llama, Qwen2) or fused as `gate_up_proj`
/// (Phi-3: the gate first).
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate: Option<Proj>,
    pub up: Option<Proj>,
    pub gate_up: Option<Proj>,
    pub down: Proj,
    #[module(skip)]
    pub activation: Activation,
}

/// A generation's state: each layer's keys and values `[rows, kv_heads, len, head_dim]`, and per
/// row which cached places are real tokens (left padding is not) and the next position id.
#[derive(Debug, Clone)]
pub struct CausalCache {
    /// Each layer's keys and values (on the host when the attention's weights are: see
    /// [`KeysValues`]).
    pub(crate) layers: Vec<Option<KeysValues>>,
    /// `[rows][len]`: whether cached place j of a row is a token (attention mask 1).
    pub(crate) real: Vec<Vec<bool>>,
    /// The position id the next token of each row gets.
    pub(crate) next_position: Vec<usize>,
    pub(crate) rope: RopeState,
}

impl CausalCache {
    /// Tokens cached so far (padding included).
    pub fn len(&self) -> usize {
        self.real.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows (inputs × beams).
    pub fn rows(&self) -> usize {
        self.real.len()
    }

    /// Row `i` of the new cache continues row `src[i]` of the old one (beam search; also the
    /// expansion of each prompt to its beams).
    pub fn reorder(&mut self, src: &[usize], device: &Device) -> crate::Result<()> {
        if src.iter().any(|&s| s >= self.rows()) {
            return Err(crate::Error::Generation(
                "cache reorder names a row that does not exist".into(),
            ));
        }
        for layer in &mut self.layers {
            if let Some(kv) = layer.take() {
                *layer = Some(kv.reorder(src, device));
            }
        }
        self.real = src.iter().map(|&s| self.real[s].clone()).collect();
        self.next_position = src.iter().map(|&s| self.next_position[s]).collect();
        Ok(())
    }
}

impl Llama {
    pub fn device(&self) -> Device {
        self.shared.val().device()
    }

    /// An empty cache for `rows` rows.
    pub fn start(&self, rows: usize) -> CausalCache {
        CausalCache {
            layers: vec![None; self.layers.len()],
            real: vec![Vec::new(); rows],
            next_position: vec![0; rows],
            rope: RopeState::default(),
        }
    }

    /// Feeds `ids` `[rows, len]` after what `cache` holds; `attention_mask` `[rows][len]` marks
    /// the real tokens (a left-padded prompt's padding is 0; generated tokens are all 1).
    /// Position ids continue each row's real tokens (`attention_mask.cumsum(-1) - 1`, padding at
    /// 1, as transformers' `prepare_inputs_for_generation` makes them). Returns the logits
    /// `[rows, len, vocab]`, or of the last place only `[rows, 1, vocab]` when `last_only`.
    pub fn forward_cached(
        &self,
        ids: Tensor<2, Int>,
        attention_mask: &[Vec<u32>],
        cache: &mut CausalCache,
        last_only: bool,
    ) -> Tensor<3> {
        self.forward_windowed(ids, attention_mask, cache, last_only, self.sliding_window)
    }

    /// [`Self::forward_cached`] of a whole sequence into an empty cache without the sliding
    /// window: Phi-3's recomputation when generation reaches [`Self::recompute_at`]
    /// (transformers builds no mask for that call: SDPA's plain causal attention; checked against
    /// it for unpadded rows — for left-padded batches transformers' mask there is built for one
    /// query and Bartleby keeps the plain causal one, see docs).
    pub fn forward_recompute(
        &self,
        ids: Tensor<2, Int>,
        attention_mask: &[Vec<u32>],
        cache: &mut CausalCache,
    ) -> Tensor<3> {
        self.forward_windowed(ids, attention_mask, cache, true, None)
    }

    fn forward_windowed(
        &self,
        ids: Tensor<2, Int>,
        attention_mask: &[Vec<u32>],
        cache: &mut CausalCache,
        last_only: bool,
        window: Option<usize>,
    ) -> Tensor<3> {
        let device = ids.device();
        let [rows, len] = ids.dims();
        let past = cache.len();
        let mut positions = Vec::with_capacity(rows);
        for (r, mask) in attention_mask.iter().enumerate() {
            let mut row = Vec::with_capacity(len);
            for &m in mask {
                if m != 0 {
                    row.push(cache.next_position[r]);
                    cache.next_position[r] += 1;
                } else {
                    row.push(1);
                }
                cache.real[r].push(m != 0);
            }
            positions.push(row);
        }
        let (cos, sin) = self.rope.tables(&positions, &mut cache.rope, &device);
        let mask = self.mask(&cache.real, past, len, window, &device);
        let mut x =
            crate::ops::embedding::embed(&self.shared, &self.shared_parts, ids, 1.0, self.training);
        for (layer, kv) in self.layers.iter().zip(&mut cache.layers) {
            x = layer.forward(x, &cos, &sin, &mask, kv);
        }
        let x = if last_only && len > 1 {
            let [_, _, d] = x.dims();
            x.slice([0..rows, len - 1..len, 0..d])
        } else {
            x
        };
        let x = rms_norm(&self.norm, self.eps, x);
        self.lm_head(x)
    }

    /// The additive mask `[rows, 1, len, past + len]`: 0 where query i (cache place
    /// `past + i`) may see key j — a real token, not after it, within the sliding window —
    /// [`MASKED`] elsewhere.
    fn mask(
        &self,
        real: &[Vec<bool>],
        past: usize,
        len: usize,
        window: Option<usize>,
        device: &Device,
    ) -> Tensor<4> {
        let total = past + len;
        let mut m = Vec::with_capacity(real.len() * len * total);
        for row in real {
            for i in 0..len {
                let q = past + i;
                for (j, &is_real) in row.iter().enumerate() {
                    let visible = is_real && j <= q && window.is_none_or(|w| q - j < w);
                    m.push(if visible { 0.0 } else { MASKED });
                }
            }
        }
        Tensor::from_data(TensorData::new(m, [real.len(), 1, len, total]), device)
    }

    /// Teacher-forced logits `[batch, len, vocab]` of (right- or left-padded) `ids` with their
    /// attention mask, as `model(input_ids, attention_mask).logits`.
    pub fn forward(&self, ids: Tensor<2, Int>, attention_mask: &[Vec<u32>]) -> Tensor<3> {
        let [rows, _] = ids.dims();
        let mut cache = self.start(rows);
        self.forward_cached(ids, attention_mask, &mut cache, false)
    }

    /// Puts every weight back into its plain f32 tensor (whole table, no host weights).
    pub fn materialize(&mut self) {
        crate::ops::embedding::join_parts(&mut self.shared, &mut self.shared_parts);
        let head = self.lm_head_host.take();
        crate::checkpoint::release_host(self, head);
    }

    fn lm_head(&self, hidden: Tensor<3>) -> Tensor<3> {
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

impl Layer {
    fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: &Tensor<4>,
        kv: &mut Option<KeysValues>,
    ) -> Tensor<3> {
        let h = rms_norm(&self.input_layernorm, self.eps, x.clone());
        let x = x + self.attn.forward(h, cos, sin, mask, kv);
        let h = rms_norm(&self.post_attention_layernorm, self.eps, x.clone());
        x + self.mlp.forward(h)
    }
}

impl SelfAttention {
    /// Queries `[rows, heads, len, hd]`, keys and values `[rows, kv_heads, len, hd]`.
    fn project(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [rows, len, _] = x.dims();
        let (hd, q_width, kv_width) = (
            self.head_dim,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
        );
        let (q, k, v) = match (&self.qkv, &self.q, &self.k, &self.v) {
            (Some(qkv), ..) => {
                let all = qkv.forward(x);
                (
                    all.clone().slice([0..rows, 0..len, 0..q_width]),
                    all.clone()
                        .slice([0..rows, 0..len, q_width..q_width + kv_width]),
                    all.slice([0..rows, 0..len, q_width + kv_width..q_width + 2 * kv_width]),
                )
            }
            (None, Some(q), Some(k), Some(v)) => {
                (q.forward(x.clone()), k.forward(x.clone()), v.forward(x))
            }
            _ => unreachable!("a model has fused or separate q/k/v projections"),
        };
        let heads = |t: Tensor<3>, n: usize| t.reshape([rows, len, n, hd]).swap_dims(1, 2);
        (
            heads(q, self.heads),
            heads(k, self.kv_heads),
            heads(v, self.kv_heads),
        )
    }

    fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: &Tensor<4>,
        cache: &mut Option<KeysValues>,
    ) -> Tensor<3> {
        let [rows, len, _] = x.dims();
        let (q, k, v) = self.project(x);
        let q = apply_rotary(q, cos, sin);
        let k = apply_rotary(k, cos, sin);
        let scale = (self.head_dim as f64).powf(-0.5);
        // Weights held on the host (CPU inference): the cache and the attention there too.
        let kv = KeysValues::append(cache.take(), k, v, self.o.host.is_some());
        let (k, v) = match &kv {
            KeysValues::Tensors(k, v) => (k.clone(), v.clone()),
            KeysValues::Host(_) => {
                let q = q
                    .swap_dims(1, 2)
                    .reshape([rows, len, self.heads * self.head_dim]);
                let out = kv.host_attention(q, Some(mask), 1, scale, self.heads);
                *cache = Some(kv);
                return self.o.forward(out.expect("host keys attend on the host"));
            }
        };
        *cache = Some(kv);
        // Grouped-query attention: kv head j serves query heads j·g .. (j+1)·g (`repeat_kv`).
        let group = self.heads / self.kv_heads;
        let (k, v) = if group > 1 {
            let [_, kvh, keys, hd] = k.dims();
            let repeat = |t: Tensor<4>| {
                t.unsqueeze_dim::<5>(2)
                    .expand([rows, kvh, group, keys, hd])
                    .reshape([rows, kvh * group, keys, hd])
            };
            (repeat(k), repeat(v))
        } else {
            (k, v)
        };
        let scores = crate::ops::matmul(q.mul_scalar(scale), k.swap_dims(2, 3)) + mask.clone();
        let weights = crate::ops::softmax_last(scores);
        let out = crate::ops::matmul(weights, v).swap_dims(1, 2).reshape([
            rows,
            len,
            self.heads * self.head_dim,
        ]);
        self.o.forward(out)
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = match (&self.gate_up, &self.gate, &self.up) {
            (Some(gate_up), ..) => {
                let both = gate_up.forward(x);
                let [rows, len, width] = both.dims();
                let half = width / 2;
                let gate = both.clone().slice([0..rows, 0..len, 0..half]);
                let up = both.slice([0..rows, 0..len, half..width]);
                up * self.activation.apply(gate)
            }
            (None, Some(gate), Some(up)) => {
                gate.forward_activated(x.clone(), self.activation) * up.forward(x)
            }
            _ => unreachable!("a model has fused or separate gate/up projections"),
        };
        self.down.forward(hidden)
    }
}

impl super::LlamaConfig {
    /// The model with every parameter an uninitialised placeholder of the right shape, to be
    /// filled from a checkpoint by [`super::params`].
    pub fn init(&self, device: &Device) -> Llama {
        use super::config::Family;
        let d = self.hidden_size;
        let empty2 = |shape: [usize; 2]| {
            Param::from_tensor(Tensor::<2>::zeros([1, 1], device).expand(shape))
        };
        let empty1 = |n: usize| Param::from_tensor(Tensor::<1>::zeros([1], device).expand([n]));
        let linear = |i: usize, o: usize, bias: bool| Proj::placeholder(i, o, bias, device);
        let (q_width, kv_width) = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        let ff = self.intermediate_size;
        let fused = self.family == Family::Phi3;
        let layer = || Layer {
            input_layernorm: empty1(d),
            attn: SelfAttention {
                q: (!fused).then(|| linear(d, q_width, self.qkv_bias)),
                k: (!fused).then(|| linear(d, kv_width, self.qkv_bias)),
                v: (!fused).then(|| linear(d, kv_width, self.qkv_bias)),
                qkv: fused.then(|| linear(d, q_width + 2 * kv_width, false)),
                o: linear(q_width, d, self.o_bias),
                heads: self.num_attention_heads,
                kv_heads: self.num_key_value_heads,
                head_dim: self.head_dim,
            },
            post_attention_layernorm: empty1(d),
            mlp: Mlp {
                gate: (!fused).then(|| linear(d, ff, self.mlp_bias)),
                up: (!fused).then(|| linear(d, ff, self.mlp_bias)),
                gate_up: fused.then(|| linear(d, 2 * ff, false)),
                down: linear(ff, d, self.mlp_bias),
                activation: self.activation,
            },
            eps: self.rms_norm_eps,
        };
        Llama {
            shared: empty2([self.vocab_size, d]),
            shared_parts: Vec::new(),
            layers: (0..self.num_hidden_layers).map(|_| layer()).collect(),
            norm: empty1(d),
            lm_head: (!self.tie_word_embeddings).then(|| empty2([self.vocab_size, d])),
            lm_head_host: None,
            rope: self.rope.clone(),
            sliding_window: self.sliding_window,
            recompute_at: self.recompute_at(),
            eps: self.rms_norm_eps,
            training: false,
        }
    }
}
