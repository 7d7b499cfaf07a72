//! Rotary position embeddings (Su et al., 2021) as transformers 4.57 computes them
//! (`modeling_rope_utils.py`, `LlamaRotaryEmbedding`, `apply_rotary_pos_emb`): inverse
//! frequencies for the `rope_scaling` types `default`, `linear`, `dynamic`, `llama3` and
//! `longrope`, computed in f32 as torch does; cos/sin tables for each row's position ids; the
//! rotation `x·cos + rotate_half(x)·sin`.

use burn::tensor::{Device, Tensor, TensorData};

/// How the rotary frequencies are scaled (config.json's `rope_scaling`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// No `rope_scaling`, or `rope_type: "default"`.
    Default,
    /// Positions divided by `factor`.
    Linear { factor: f32 },
    /// Dynamic NTK: the base grows with the sequence once it passes `max_position_embeddings`.
    Dynamic { factor: f32 },
    /// Llama 3.1+: low frequencies divided by `factor`, high ones kept, smoothed between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    /// Phi-3: per-frequency factors, short ones up to `original_max_position_embeddings` and
    /// long ones beyond (chosen per forward call by its largest position), with the attention
    /// scaling on cos and sin.
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position_embeddings: usize,
        attention_factor: f32,
    },
}

/// A model's rotary embedding: head width, base, scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// The rotated width (`head_dim`; partial rotary factors other than 1 are refused by the
    /// configs).
    pub dim: usize,
    pub base: f32,
    pub scaling: RopeScaling,
    /// `max_position_embeddings` (where dynamic scaling starts).
    pub max_position_embeddings: usize,
}

/// The dynamic state of a rotary embedding over one generation (what transformers keeps in the
/// module between forward calls: dynamic NTK's grown frequencies).
#[derive(Debug, Clone, Default)]
pub struct RopeState {
    /// Dynamic NTK: the longest sequence the frequencies were computed for, and them.
    dynamic: Option<(usize, Vec<f32>)>,
}

/// `1 / base^(2i/dim)` for i < dim/2, in f32 (`torch.arange(0, dim, 2).float() / dim`).
fn default_inv_freq(base: f32, dim: usize) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
        .collect()
}

impl Rope {
    /// The inverse frequencies and attention scaling for a forward call whose largest position
    /// id is `max_position` (`seq_len = max_position + 1`), updating `state` as transformers'
    /// `dynamic_rope_update` does.
    pub fn frequencies(&self, max_position: usize, state: &mut RopeState) -> (Vec<f32>, f32) {
        let seq_len = max_position + 1;
        let (dim, base) = (self.dim, self.base);
        match &self.scaling {
            RopeScaling::Default => (default_inv_freq(base, dim), 1.0),
            RopeScaling::Linear { factor } => (
                default_inv_freq(base, dim)
                    .into_iter()
                    .map(|f| f / factor)
                    .collect(),
                1.0,
            ),
            RopeScaling::Dynamic { factor } => {
                let original = self.max_position_embeddings;
                // `_dynamic_frequency_update`: grow past the longest length seen; back to the
                // original frequencies when a call is short again.
                let cached = state.dynamic.as_ref().map_or(original, |(n, _)| *n);
                if seq_len > cached {
                    // `_compute_dynamic_ntk_parameters` with a tensor seq_len, in f32.
                    let ratio = (factor * seq_len as f32 / original as f32) - (factor - 1.0);
                    let exponent = dim as f32 / (dim as f32 - 2.0);
                    let grown = base * ratio.powf(exponent);
                    state.dynamic = Some((seq_len, default_inv_freq(grown, dim)));
                }
                if seq_len < original && state.dynamic.is_some() {
                    state.dynamic = None;
                }
                match &state.dynamic {
                    Some((_, inv)) => (inv.clone(), 1.0),
                    None => (default_inv_freq(base, dim), 1.0),
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let inv = default_inv_freq(base, dim)
                    .into_iter()
                    .map(|f| {
                        let wavelen = (2.0 * std::f32::consts::PI) / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                        let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                        if medium {
                            smoothed
                        } else {
                            scaled
                        }
                    })
                    .collect();
                (inv, 1.0)
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let factors = if seq_len > *original_max_position_embeddings {
                    long_factor
                } else {
                    short_factor
                };
                let inv = (0..dim)
                    .step_by(2)
                    .zip(factors)
                    .map(|(i, &e)| 1.0 / (e * base.powf(i as f32 / dim as f32)))
                    .collect();
                (inv, *attention_factor)
            }
        }
    }

    /// cos and sin `[rows, 1, len, dim]` for position ids `positions` (`rows` rows of `len`), as
    /// `LlamaRotaryEmbedding.forward`: `emb = cat(freqs, freqs)`, times the attention scaling.
    pub fn tables(
        &self,
        positions: &[Vec<usize>],
        state: &mut RopeState,
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>) {
        let rows = positions.len();
        let len = positions.first().map_or(0, Vec::len);
        let max_position = positions.iter().flatten().copied().max().unwrap_or(0);
        let (inv, scaling) = self.frequencies(max_position, state);
        let half = inv.len();
        let dim = 2 * half;
        let mut cos = Vec::with_capacity(rows * len * dim);
        let mut sin = Vec::with_capacity(rows * len * dim);
        for row in positions {
            for &p in row {
                let freqs: Vec<f32> = inv.iter().map(|f| f * p as f32).collect();
                for _ in 0..2 {
                    cos.extend(freqs.iter().map(|x| x.cos() * scaling));
                    sin.extend(freqs.iter().map(|x| x.sin() * scaling));
                }
            }
        }
        let shape = [rows, 1, len, dim];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// `x·cos + rotate_half(x)·sin` for `x` `[rows, heads, len, dim]`, `rotate_half(x) =
/// cat(-x₂, x₁)` over the two halves of the last axis.
pub fn apply_rotary(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [rows, heads, len, dim] = x.dims();
    let half = dim / 2;
    let x1 = x.clone().slice([0..rows, 0..heads, 0..len, 0..half]);
    let x2 = x.clone().slice([0..rows, 0..heads, 0..len, half..dim]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}
