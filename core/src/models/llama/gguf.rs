//! [`Llama`] → GGUF as llama.cpp's `convert_hf_to_gguf.py` writes a `LlamaForCausalLM` (architecture
//! `llama`): its tensor names, q/k rows permuted from Hugging Face's rotate-half layout to ggml's
//! interleaved one, the `llama.*` hyperparameters, llama3 rope scaling as a `rope_freqs` tensor,
//! linear scaling as `llama.rope.scaling.*`, and the file type (f32, f16 or q8_0: norms and vectors
//! stay f32; a matrix whose rows do not split into 32-value blocks falls back to f16, as convert does).
//! Phi-3 (`phi3`: fused qkv/gate_up, longrope factors as tensors) and Qwen2 (`qwen2`: q/k/v biases)
//! the same way, with their own hyperparameter keys and without the q/k permutation.

use super::config::{Family, LlamaConfig};
use super::model::Llama;
use crate::checkpoint::gguf::{
    encode_f16, encode_f32, quantize_q4_0, quantize_q8_0, GgmlType, GgufTensor, GgufValue,
};
use crate::checkpoint::kquants::{quantize_q4_k, quantize_q5_0, quantize_q6_k};
use crate::checkpoint::{Params, Slot};
use crate::ops::rope::RopeScaling;
use crate::{Error, Result};

/// The GGUF file types Bartleby writes (llama.cpp's names).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufQuant {
    F32,
    F16,
    Q8_0,
    /// Projections in `Q4_0`; the embedding table and output projection in `Q8_0` (llama.cpp's
    /// `llama-quantize` puts the output in `Q6_K`; `Q4_K_M` does).
    Q4_0,
    /// llama-quantize's `Q4_K_M` mix (no importance matrix), type for type and byte for byte:
    /// `Q4_K`, with `Q6_K` for the output (and a tied embedding table), and for the `attn_v` /
    /// `attn_qkv` and `ffn_down` of the layers `use_more_bits` picks; rows that are not whole
    /// 256-value super-blocks fall back as llama-quantize does (`Q4_K` → `Q5_0`, `Q6_K` → `Q8_0`,
    /// then `F16`). Tensors in llama-quantize's order (by name).
    Q4_K_M,
}

impl GgufQuant {
    /// `general.file_type` (llama.cpp's `LlamaFileType`).
    fn file_type(self) -> u32 {
        match self {
            GgufQuant::F32 => 0,
            GgufQuant::F16 => 1,
            GgufQuant::Q8_0 => 7,
            GgufQuant::Q4_0 => 2,
            GgufQuant::Q4_K_M => 15,
        }
    }
}

/// transformers' name → llama.cpp's, for every tensor of the model.
fn gguf_name(hf: &str) -> Option<String> {
    if hf == "model.embed_tokens.weight" {
        return Some("token_embd.weight".into());
    }
    if hf == "model.norm.weight" {
        return Some("output_norm.weight".into());
    }
    if hf == "lm_head.weight" {
        return Some("output.weight".into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let (module, kind) = part.rsplit_once('.')?;
    let to = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.qkv_proj" => "attn_qkv",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "mlp.gate_up_proj" => "ffn_up",
        _ => return None,
    };
    Some(format!("blk.{layer}.{to}.{kind}"))
}

/// `LlamaModel.permute`: the rows of each head from `[first halves | second halves]` (rotate-half)
/// to pairs (ggml's rope): reshape `(heads, 2, rows / heads / 2, cols)`, swap axes 1 and 2.
fn permute(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for two in 0..2 {
            for i in 0..half {
                let from = (h * 2 + two) * half + i; // (h, two, i)
                let to = (h * half + i) * 2 + two; // (h, i, two)
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// llama3 rope scaling as convert_hf_to_gguf.py's `rope_freqs` factors (one per frequency).
fn llama3_rope_factors(config: &LlamaConfig) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings: old,
    } = config.rope.scaling
    else {
        return None;
    };
    let dim = config.head_dim;
    let base = config.rope.base;
    let low_wavelen = old / low_freq_factor;
    let high_wavelen = old / high_freq_factor;
    Some(
        (0..dim)
            .step_by(2)
            .map(|i| {
                let freq = 1.0 / base.powf(i as f32 / dim as f32);
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect(),
    )
}

/// `general.architecture` … `general.quantization_version` for a Llama (`arch` "llama": with
/// `LlamaModel`'s own vocab size and rope dimensions, llama3 scaling as a tensor), or for a
/// model whose convert class writes just `TextModel`'s keys under `arch`, as convert writes them.
fn llama_metadata(
    arch: &str,
    config: &LlamaConfig,
    quant: GgufQuant,
    general: Vec<(String, GgufValue)>,
) -> Result<Vec<(String, GgufValue)>> {
    let llama = arch == "llama";
    let rope_meta = match &config.rope.scaling {
        RopeScaling::Default => Vec::new(),
        RopeScaling::Llama3 { .. } if llama => Vec::new(),
        RopeScaling::Linear { factor } => vec![
            (
                format!("{arch}.rope.scaling.type"),
                GgufValue::Str("linear".into()),
            ),
            (
                format!("{arch}.rope.scaling.factor"),
                GgufValue::F32(*factor),
            ),
        ],
        other => {
            return Err(Error::Config {
                file: "config.json".into(),
                message: format!("rope_scaling {other:?} has no GGUF form in Bartleby yet"),
            })
        }
    };
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            GgufValue::Str(arch.into()),
        ),
        ("general.type".to_string(), GgufValue::Str("model".into())),
    ];
    meta.extend(general);
    let u = |k: &str, v: usize| (format!("{arch}.{k}"), GgufValue::U32(v as u32));
    meta.extend([
        u("block_count", config.num_hidden_layers),
        u("context_length", config.max_position_embeddings),
        u("embedding_length", config.hidden_size),
        u("feed_forward_length", config.intermediate_size),
        u("attention.head_count", config.num_attention_heads),
        u("attention.head_count_kv", config.num_key_value_heads),
        (
            format!("{arch}.rope.freq_base"),
            GgufValue::F32(config.rope.base),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            GgufValue::F32(config.rms_norm_eps as f32),
        ),
    ]);
    if config.raw.get("head_dim").is_some_and(|v| !v.is_null()) {
        meta.push(u("attention.key_length", config.head_dim));
        meta.push(u("attention.value_length", config.head_dim));
    }
    meta.push((
        "general.file_type".to_string(),
        GgufValue::U32(quant.file_type()),
    ));
    if llama {
        // LlamaModel.set_gguf_parameters' own keys.
        meta.push(u("vocab_size", config.vocab_size));
        meta.push(u("rope.dimension_count", config.head_dim));
    }
    meta.extend(rope_meta);
    meta.push((
        "general.quantization_version".to_string(),
        GgufValue::U32(2),
    ));
    Ok(meta)
}

/// Qwen2 (`Qwen2Model`: `TextModel.set_gguf_parameters`, the generic keys under `qwen2.*`).
/// llama.cpp's `qwen2` has no sliding window: a config that turns it on is refused rather than
/// written as a model llama.cpp would run differently.
fn qwen2_metadata(
    config: &LlamaConfig,
    quant: GgufQuant,
    general: Vec<(String, GgufValue)>,
) -> Result<Vec<(String, GgufValue)>> {
    if config
        .raw
        .get("use_sliding_window")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
    {
        return Err(Error::Config {
            file: "config.json".into(),
            message: "use_sliding_window: llama.cpp's qwen2 has no sliding window; no GGUF form"
                .into(),
        });
    }
    llama_metadata("qwen2", config, quant, general)
}

/// The same for Phi-3 (`Phi3MiniModel.set_gguf_parameters`): longrope's attention factor
/// `sqrt(1 + ln(s) / ln(original))` with `s = max_position_embeddings / original` (its short and
/// long factors are tensors), the original context length, the sliding window (0 when none).
fn phi3_metadata(
    config: &LlamaConfig,
    quant: GgufQuant,
    general: Vec<(String, GgufValue)>,
) -> Result<Vec<(String, GgufValue)>> {
    let original = config
        .raw
        .get("original_max_position_embeddings")
        .and_then(serde_json::Value::as_u64)
        .map(|v| v as usize);
    let mut meta = vec![(
        "general.architecture".to_string(),
        GgufValue::Str("phi3".into()),
    )];
    match &config.rope.scaling {
        RopeScaling::Default => {}
        RopeScaling::LongRope {
            original_max_position_embeddings: old,
            ..
        } => {
            let scale = config.max_position_embeddings as f64 / *old as f64;
            let attn = if scale > 1.0 {
                (1.0 + scale.ln() / (*old as f64).ln()).sqrt()
            } else {
                1.0
            };
            meta.push((
                "phi3.rope.scaling.attn_factor".to_string(),
                GgufValue::F32(attn as f32),
            ));
        }
        other => {
            return Err(Error::Config {
                file: "config.json".into(),
                message: format!("rope_scaling {other:?} has no Phi-3 GGUF form"),
            })
        }
    }
    let original = match (&config.rope.scaling, original) {
        (
            RopeScaling::LongRope {
                original_max_position_embeddings,
                ..
            },
            _,
        ) => *original_max_position_embeddings,
        (_, Some(o)) => o,
        _ => {
            return Err(Error::Config {
                file: "config.json".into(),
                message: "a Phi-3 GGUF needs original_max_position_embeddings".into(),
            })
        }
    };
    meta.push(("general.type".to_string(), GgufValue::Str("model".into())));
    meta.extend(general);
    let u = |k: &str, v: usize| (format!("phi3.{k}"), GgufValue::U32(v as u32));
    meta.extend([
        u("context_length", config.max_position_embeddings),
        u("rope.scaling.original_context_length", original),
        u("embedding_length", config.hidden_size),
        u("feed_forward_length", config.intermediate_size),
        u("block_count", config.num_hidden_layers),
        u("attention.head_count", config.num_attention_heads),
        u("attention.head_count_kv", config.num_key_value_heads),
        (
            "phi3.attention.layer_norm_rms_epsilon".to_string(),
            GgufValue::F32(config.rms_norm_eps as f32),
        ),
        u(
            "rope.dimension_count",
            config.hidden_size / config.num_attention_heads,
        ),
        (
            "phi3.rope.freq_base".to_string(),
            GgufValue::F32(config.rope.base),
        ),
        (
            "general.file_type".to_string(),
            GgufValue::U32(quant.file_type()),
        ),
        u(
            "attention.sliding_window",
            config.sliding_window.unwrap_or(0),
        ),
        (
            "general.quantization_version".to_string(),
            GgufValue::U32(2),
        ),
    ]);
    Ok(meta)
}

/// The metadata and tensors of `model` (a Llama; materialized here), `extra` (general.name,
/// sampling, tokenizer: the caller's) placed where convert puts them.
pub fn to_gguf(
    model: &Llama,
    config: &LlamaConfig,
    quant: GgufQuant,
    general: Vec<(String, GgufValue)>,
    tokenizer: Vec<(String, GgufValue)>,
) -> Result<Vec<u8>> {
    let mut meta = match config.family {
        Family::Llama => llama_metadata("llama", config, quant, general)?,
        Family::Phi3 => phi3_metadata(config, quant, general)?,
        Family::Qwen2 => qwen2_metadata(config, quant, general)?,
    };
    meta.extend(tokenizer);
    let mut tensors = Vec::new();
    if let Some(factors) = llama3_rope_factors(config) {
        tensors.push(GgufTensor {
            name: "rope_freqs.weight".into(),
            dims: vec![factors.len() as u64],
            kind: GgmlType::F32,
            data: encode_f32(&factors),
        });
    }
    if let (
        Family::Phi3,
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        },
    ) = (config.family, &config.rope.scaling)
    {
        for (name, factors) in [
            ("rope_factors_long.weight", long_factor),
            ("rope_factors_short.weight", short_factor),
        ] {
            tensors.push(GgufTensor {
                name: name.into(),
                dims: vec![factors.len() as u64],
                kind: GgmlType::F32,
                data: encode_f32(factors),
            });
        }
    }
    // Q4_K_M picks each matrix's type from the names and shapes of them all.
    let q4_k_m_types = if quant == GgufQuant::Q4_K_M {
        let mut shapes: Vec<(String, Vec<u64>)> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone()))
            .collect();
        model.clone().visit(&mut |hf, slot| {
            let dims: Vec<u64> = match slot {
                // ggml order: the input width first.
                Slot::LinearWeight(p) => p.val().dims().iter().map(|&d| d as u64).collect(),
                Slot::Matrix(p) => p.val().dims().iter().rev().map(|&d| d as u64).collect(),
                Slot::Vector(p) => vec![p.val().dims()[0] as u64],
            };
            let name =
                gguf_name(&hf).ok_or_else(|| Error::Weights(format!("{hf}: no GGUF name")))?;
            shapes.push((name, dims));
            Ok(())
        })?;
        q4_k_m_types(shapes, config.num_hidden_layers)
    } else {
        Default::default()
    };
    // The weights in transformers' names and layout, f32, one at a time (the model may hold them
    // in half precision: no f32 copy of it all), in the order of their names.
    let mut encoded = std::collections::BTreeMap::new();
    crate::checkpoint::visit_f32(model, &mut |hf, shape, values| {
        let Some(name) = gguf_name(&hf) else {
            return Err(Error::Weights(format!("{hf}: no GGUF name")));
        };
        let mut values = values;
        let rows = shape[0];
        let cols = shape.get(1).copied().unwrap_or(1);
        // Llama's q/k rows from rotate-half to ggml's pairs (Phi-3 and Qwen2 run NEOX-style rope
        // in llama.cpp: their q/k stay as they are).
        let llama = config.family == Family::Llama;
        if llama && hf.contains("self_attn.q_proj.") {
            values = permute(&values, rows, cols, config.num_attention_heads);
        } else if llama && hf.contains("self_attn.k_proj.") {
            values = permute(&values, rows, cols, config.num_key_value_heads);
        }
        let vector = shape.len() <= 1 || name.ends_with("_norm.weight");
        let table = name == "token_embd.weight" || name == "output.weight";
        let kind = match quant {
            _ if vector => GgmlType::F32,
            GgufQuant::F32 => GgmlType::F32,
            GgufQuant::F16 => GgmlType::F16,
            GgufQuant::Q8_0 if cols % 32 == 0 => GgmlType::Q8_0,
            GgufQuant::Q4_0 if cols % 32 == 0 && table => GgmlType::Q8_0,
            GgufQuant::Q4_0 if cols % 32 == 0 => GgmlType::Q4_0,
            GgufQuant::Q8_0 | GgufQuant::Q4_0 => GgmlType::F16,
            GgufQuant::Q4_K_M => q4_k_m_types.get(&name).copied().unwrap_or(GgmlType::F32),
        };
        encoded.insert(
            hf,
            GgufTensor {
                name,
                dims: shape.iter().rev().map(|&d| d as u64).collect(),
                kind,
                data: encode(kind, &values),
            },
        );
        Ok(())
    })?;
    tensors.extend(encoded.into_values());
    if quant == GgufQuant::Q4_K_M {
        // llama-quantize writes its tensors in the order of their names.
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(crate::checkpoint::gguf::write(&meta, &tensors))
}

fn encode(kind: GgmlType, values: &[f32]) -> Vec<u8> {
    match kind {
        GgmlType::F32 => encode_f32(values),
        GgmlType::F16 => encode_f16(values),
        GgmlType::Q8_0 => quantize_q8_0(values),
        GgmlType::Q4_0 => quantize_q4_0(values),
        GgmlType::Q5_0 => quantize_q5_0(values),
        GgmlType::Q4_K => quantize_q4_k(values),
        GgmlType::Q6_K => quantize_q6_k(values),
    }
}

/// llama-quantize's `LLAMA_FTYPE_MOSTLY_Q4_K_M` type for each matrix (`llama_tensor_get_type`
/// without an importance matrix, user overrides or experts), from every tensor's GGUF name and
/// ggml dims: in the order of their names (its `weights_map` order, which its `attn_v` /
/// `ffn_down` counters follow); a matrix is 2-D, named `*weight`, not a norm (others stay f32).
fn q4_k_m_types(
    mut shapes: Vec<(String, Vec<u64>)>,
    n_layer: usize,
) -> std::collections::HashMap<String, GgmlType> {
    shapes.sort_by(|a, b| a.0.cmp(&b.0));
    let use_more_bits = |i: i64, n: i64| i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    let attn_v = |name: &str| name.contains("attn_qkv.weight") || name.contains("attn_v.weight");
    let n_attention_wv = shapes.iter().filter(|(n, _)| attn_v(n)).count() as i64;
    let tied = !shapes.iter().any(|(n, _)| n == "output.weight");
    let (mut i_attention_wv, mut i_ffn_down) = (0i64, 0i64);
    let mut types = std::collections::HashMap::new();
    for (name, dims) in shapes {
        if dims.len() < 2 || !name.ends_with("weight") || name.contains("_norm.weight") {
            continue;
        }
        let cols = dims[0] as usize;
        let mut kind = GgmlType::Q4_K;
        if name == "output.weight" || (tied && name == "token_embd.weight") {
            kind = if !cols.is_multiple_of(256) {
                GgmlType::Q8_0
            } else {
                GgmlType::Q6_K
            };
        } else if name == "token_embd.weight" {
        } else if attn_v(&name) {
            if use_more_bits(i_attention_wv, n_attention_wv) {
                kind = GgmlType::Q6_K;
            }
            i_attention_wv += 1;
        } else if name.contains("ffn_down") {
            if use_more_bits(i_ffn_down, n_layer as i64) {
                kind = GgmlType::Q6_K;
            }
            i_ffn_down += 1;
        }
        // tensor_type_fallback: rows that are not whole blocks of the chosen type.
        if !cols.is_multiple_of(kind.block().0) {
            kind = match kind {
                GgmlType::Q4_K => GgmlType::Q5_0,
                GgmlType::Q6_K => GgmlType::Q8_0,
                other => other,
            };
            if !cols.is_multiple_of(kind.block().0) {
                kind = GgmlType::F16;
            }
        }
        types.insert(name, kind);
    }
    types
}
