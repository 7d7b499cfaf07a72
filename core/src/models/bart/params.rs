//! Hugging Face checkpoint ⇄ [`Bart`]: the one place that knows how transformers names each
//! BART weight — the walk over `BartForConditionalGeneration`'s state dict that loading, saving,
//! LoRA, merging and quantization all use — and BART's loader and saver on top of it.

use super::config::BartConfig;
use super::model::Bart;
use crate::checkpoint::load::{
    attach_host, fill, head_like, host_table, widen_unless_head_held, Names,
};
use crate::checkpoint::{Checkpoint, LoadOptions, LoadReport, Node, Params, Slot, Walker};
use crate::ops::attention::Attention;
use crate::ops::Proj;
use crate::{Error, Result};
use burn::nn::LayerNorm;
use burn::tensor::Device;
use safetensors::tensor::TensorView;

/// Calls `f` for every parameter with its canonical transformers name
/// (`BartForConditionalGeneration`'s state dict, tied copies omitted).
pub fn visit(model: &mut Bart, f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>) -> Result<()> {
    crate::checkpoint::visit_tensors(model, walk, f)
}

/// Calls `f` for every projection (`nn.Linear` in transformers) with its module name, e.g.
/// `model.encoder.layers.0.self_attn.q_proj` — the names PEFT's `target_modules` match.
pub fn visit_projections(
    model: &mut Bart,
    f: &mut dyn FnMut(String, &mut Proj) -> Result<()>,
) -> Result<()> {
    crate::checkpoint::visit_projections(model, walk, f)
}

/// The one walk over the model in transformers' naming.
fn walk(model: &mut Bart, f: &mut Walker<'_>) -> Result<()> {
    f(
        "model.shared.weight".into(),
        Node::Tensor(Slot::Matrix(&mut model.shared)),
    )?;
    f(
        "final_logits_bias".into(),
        Node::Tensor(Slot::Vector(&mut model.final_logits_bias)),
    )?;
    let enc = &mut model.encoder;
    f(
        "model.encoder.embed_positions.weight".into(),
        Node::Tensor(Slot::Matrix(&mut enc.embed_positions)),
    )?;
    layer_norm(
        "model.encoder.layernorm_embedding",
        &mut enc.layernorm_embedding,
        f,
    )?;
    for (i, layer) in enc.layers.iter_mut().enumerate() {
        let p = format!("model.encoder.layers.{i}");
        attention(&format!("{p}.self_attn"), &mut layer.self_attn, f)?;
        layer_norm(
            &format!("{p}.self_attn_layer_norm"),
            &mut layer.self_attn_layer_norm,
            f,
        )?;
        linear(&format!("{p}.fc1"), &mut layer.fc1, f)?;
        linear(&format!("{p}.fc2"), &mut layer.fc2, f)?;
        layer_norm(
            &format!("{p}.final_layer_norm"),
            &mut layer.final_layer_norm,
            f,
        )?;
    }
    let dec = &mut model.decoder;
    f(
        "model.decoder.embed_positions.weight".into(),
        Node::Tensor(Slot::Matrix(&mut dec.embed_positions)),
    )?;
    layer_norm(
        "model.decoder.layernorm_embedding",
        &mut dec.layernorm_embedding,
        f,
    )?;
    for (i, layer) in dec.layers.iter_mut().enumerate() {
        let p = format!("model.decoder.layers.{i}");
        attention(&format!("{p}.self_attn"), &mut layer.self_attn, f)?;
        layer_norm(
            &format!("{p}.self_attn_layer_norm"),
            &mut layer.self_attn_layer_norm,
            f,
        )?;
        attention(&format!("{p}.encoder_attn"), &mut layer.encoder_attn, f)?;
        layer_norm(
            &format!("{p}.encoder_attn_layer_norm"),
            &mut layer.encoder_attn_layer_norm,
            f,
        )?;
        linear(&format!("{p}.fc1"), &mut layer.fc1, f)?;
        linear(&format!("{p}.fc2"), &mut layer.fc2, f)?;
        layer_norm(
            &format!("{p}.final_layer_norm"),
            &mut layer.final_layer_norm,
            f,
        )?;
    }
    Ok(())
}

fn attention(prefix: &str, a: &mut Attention, f: &mut Walker<'_>) -> Result<()> {
    linear(&format!("{prefix}.q_proj"), &mut a.q, f)?;
    linear(&format!("{prefix}.k_proj"), &mut a.k, f)?;
    linear(&format!("{prefix}.v_proj"), &mut a.v, f)?;
    linear(&format!("{prefix}.out_proj"), &mut a.o, f)
}

fn linear(prefix: &str, p: &mut Proj, f: &mut Walker<'_>) -> Result<()> {
    f(prefix.to_string(), Node::Proj(p))
}

fn layer_norm(prefix: &str, ln: &mut LayerNorm, f: &mut Walker<'_>) -> Result<()> {
    f(
        format!("{prefix}.weight"),
        Node::Tensor(Slot::Vector(&mut ln.gamma)),
    )?;
    if let Some(beta) = ln.beta.as_mut() {
        f(format!("{prefix}.bias"), Node::Tensor(Slot::Vector(beta)))?;
    }
    Ok(())
}

/// Builds a [`Bart`] on `device` from a checkpoint. Every tensor must be present with the shape
/// the config implies (except `final_logits_bias`, zero when absent, as in transformers).
pub fn load_bart(
    config: &BartConfig,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
) -> Result<(Bart, LoadReport)> {
    load_bart_with(config, checkpoint, device, &mut |_| {})
}

/// [`load_bart`], calling `converted(bytes)` with each tensor's stored bytes once they have
/// been copied into the model (a memory-mapped caller can release those pages then, which
/// keeps peak memory near the model's own size).
pub fn load_bart_with(
    config: &BartConfig,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
    converted: &mut dyn FnMut(&[u8]),
) -> Result<(Bart, LoadReport)> {
    load_bart_opts(
        config,
        checkpoint,
        device,
        LoadOptions::default(),
        converted,
    )
}

/// [`load_bart_with`] with [`LoadOptions`].
pub fn load_bart_opts(
    config: &BartConfig,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
    options: LoadOptions,
    converted: &mut dyn FnMut(&[u8]),
) -> Result<(Bart, LoadReport)> {
    let mut model = config.init(device);
    let filled = fill(
        &mut model, &BartNames, checkpoint, device, options, converted,
    )?;
    model.shared_parts = filled.table_parts;
    if let Some(like) = head_like(&filled.host) {
        // The output projection joins the host products (it is most of a decoding step's
        // bytes: 50,265 × 1,024 for bart-large).
        if model.shared_parts.is_empty() {
            model.lm_head_host = host_table(
                "model.shared.weight",
                model.shared.val(),
                Some(model.final_logits_bias.val()),
                like,
            )?
            .map(std::sync::Arc::new);
        }
        let held = model.lm_head_host.is_some();
        widen_unless_head_held(&mut model, like, held);
        attach_host(&mut model, filled.host)?;
    }
    Ok((model, filled.report))
}

/// BART's names: `BartModel` state dicts (without `model.`) and the shared embedding's tied
/// copies are accepted; a missing `final_logits_bias` is zero, as in transformers.
struct BartNames;

impl Names for BartNames {
    fn find<'c, 'a>(
        &self,
        checkpoint: &'c Checkpoint<'a>,
        name: &str,
    ) -> Result<Option<&'c (String, TensorView<'a>)>> {
        find(checkpoint, name)
    }

    fn optional(&self, name: &str) -> bool {
        name == "final_logits_bias"
    }

    fn canonical(&self, stored: &str) -> String {
        canonical_name(stored)
    }

    fn is_alias(&self, stored: &str) -> bool {
        SHARED_ALIASES.contains(&canonical_name(stored).as_str())
    }
}

impl Params for Bart {
    fn embedding_table(&self) -> &'static str {
        "model.shared.weight"
    }

    fn visit(&mut self, f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>) -> Result<()> {
        visit(self, f)
    }

    fn visit_projections(
        &mut self,
        f: &mut dyn FnMut(String, &mut Proj) -> Result<()>,
    ) -> Result<()> {
        visit_projections(self, f)
    }

    fn device(&self) -> Device {
        Bart::device(self)
    }

    fn materialize(&mut self) {
        Bart::materialize(self)
    }

    /// transformers stores `final_logits_bias` as `[1, vocab]`.
    fn vector_shapes(&self) -> fn(&str, usize) -> Vec<usize> {
        |name, n| {
            if name == "final_logits_bias" {
                vec![1, n]
            } else {
                vec![n]
            }
        }
    }
}

/// Other spellings transformers accepts for the tied shared embedding, in order of preference.
const SHARED_ALIASES: [&str; 3] = [
    "model.encoder.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "lm_head.weight",
];

/// `encoder.layers.0...` (a `BartModel` state dict) → `model.encoder.layers.0...`.
fn canonical_name(name: &str) -> String {
    if name.starts_with("encoder.") || name.starts_with("decoder.") || name.starts_with("shared.") {
        format!("model.{name}")
    } else {
        name.to_string()
    }
}

/// The tensor of canonical name `name` in `checkpoint`: stored under that name or its
/// `BartModel` spelling (without `model.`), or, for the shared embedding, under one of its
/// aliases. Both spellings of one tensor in one checkpoint is an error.
fn find<'c, 'a>(
    checkpoint: &'c Checkpoint<'a>,
    name: &str,
) -> Result<Option<&'c (String, TensorView<'a>)>> {
    let lookup = |name: &str| -> Result<Option<&'c (String, TensorView<'a>)>> {
        let short = name
            .strip_prefix("model.")
            .filter(|s| canonical_name(s) == name)
            .and_then(|s| checkpoint.get(s));
        match (checkpoint.get(name), short) {
            (Some((file, _)), Some(_)) => Err(Error::Weights(format!(
                "{file}: tensor {name} appears twice"
            ))),
            (found, short) => Ok(found.or(short)),
        }
    };
    if let Some(found) = lookup(name)? {
        return Ok(Some(found));
    }
    if name == "model.shared.weight" {
        for alias in SHARED_ALIASES {
            if let Some(found) = lookup(alias)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}
