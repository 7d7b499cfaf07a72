//! Hugging Face checkpoint ⇄ [`T5`]: the one walk over `T5ForConditionalGeneration`'s weight
//! names (loading, saving, LoRA, merging and quantization all use it) and T5's loader.

use super::config::T5Config;
use super::model::{Block, FeedForward, Stack, T5};
use crate::checkpoint::load::{attach_host_with_head, fill, Names};
use crate::checkpoint::{Checkpoint, LoadOptions, LoadReport, Node, Params, Slot, Walker};
use crate::ops::attention::Attention;
use crate::ops::Proj;
use crate::Result;
use burn::tensor::Device;
use safetensors::tensor::TensorView;

/// Calls `f` for every parameter with its transformers name (tied copies omitted).
pub fn visit(model: &mut T5, f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>) -> Result<()> {
    crate::checkpoint::visit_tensors(model, walk, f)
}

/// Calls `f` for every projection with its module name, e.g.
/// `encoder.block.0.layer.0.SelfAttention.q` — the names PEFT's `target_modules` match
/// (`q`, `k`, `v`, `o`, `wi`, `wo`, `wi_0`, `wi_1`).
pub fn visit_projections(
    model: &mut T5,
    f: &mut dyn FnMut(String, &mut Proj) -> Result<()>,
) -> Result<()> {
    crate::checkpoint::visit_projections(model, walk, f)
}

/// The one walk over the model in transformers' naming.
fn walk(model: &mut T5, f: &mut Walker<'_>) -> Result<()> {
    f(
        "shared.weight".into(),
        Node::Tensor(Slot::Matrix(&mut model.shared)),
    )?;
    stack("encoder", &mut model.encoder, f)?;
    stack("decoder", &mut model.decoder, f)?;
    if let Some(head) = model.lm_head.as_mut() {
        f("lm_head.weight".into(), Node::Tensor(Slot::Matrix(head)))?;
    }
    Ok(())
}

fn stack(prefix: &str, s: &mut Stack, f: &mut Walker<'_>) -> Result<()> {
    f(
        format!("{prefix}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        Node::Tensor(Slot::Matrix(&mut s.relative_attention_bias)),
    )?;
    for (i, b) in s.blocks.iter_mut().enumerate() {
        block(&format!("{prefix}.block.{i}"), b, f)?;
    }
    f(
        format!("{prefix}.final_layer_norm.weight"),
        Node::Tensor(Slot::Vector(&mut s.final_layer_norm)),
    )
}

fn block(p: &str, b: &mut Block, f: &mut Walker<'_>) -> Result<()> {
    attention(&format!("{p}.layer.0.SelfAttention"), &mut b.self_attn, f)?;
    f(
        format!("{p}.layer.0.layer_norm.weight"),
        Node::Tensor(Slot::Vector(&mut b.self_attn_norm)),
    )?;
    let mut ff_layer = 1;
    if let (Some(cross), Some(norm)) = (b.cross_attn.as_mut(), b.cross_attn_norm.as_mut()) {
        attention(&format!("{p}.layer.1.EncDecAttention"), cross, f)?;
        f(
            format!("{p}.layer.1.layer_norm.weight"),
            Node::Tensor(Slot::Vector(norm)),
        )?;
        ff_layer = 2;
    }
    feed_forward(
        &format!("{p}.layer.{ff_layer}.DenseReluDense"),
        &mut b.ff,
        f,
    )?;
    f(
        format!("{p}.layer.{ff_layer}.layer_norm.weight"),
        Node::Tensor(Slot::Vector(&mut b.ff_norm)),
    )
}

fn attention(p: &str, a: &mut Attention, f: &mut Walker<'_>) -> Result<()> {
    f(format!("{p}.q"), Node::Proj(&mut a.q))?;
    f(format!("{p}.k"), Node::Proj(&mut a.k))?;
    f(format!("{p}.v"), Node::Proj(&mut a.v))?;
    f(format!("{p}.o"), Node::Proj(&mut a.o))
}

fn feed_forward(p: &str, ff: &mut FeedForward, f: &mut Walker<'_>) -> Result<()> {
    match ff.wi_1.as_mut() {
        None => f(format!("{p}.wi"), Node::Proj(&mut ff.wi))?,
        Some(wi_1) => {
            f(format!("{p}.wi_0"), Node::Proj(&mut ff.wi))?;
            f(format!("{p}.wi_1"), Node::Proj(wi_1))?;
        }
    }
    f(format!("{p}.wo"), Node::Proj(&mut ff.wo))
}

impl Params for T5 {
    fn embedding_table(&self) -> &'static str {
        "shared.weight"
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
        T5::device(self)
    }

    fn materialize(&mut self) {
        T5::materialize(self)
    }
}

/// Tied copies of the shared embedding that checkpoints may also (or only) store.
const SHARED_ALIASES: [&str; 2] = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"];

/// T5's names: the shared embedding may be stored under its tied copies (and `lm_head.weight`
/// of a tied model is one of them).
struct T5Names {
    tied: bool,
}

impl Names for T5Names {
    fn find<'c, 'a>(
        &self,
        checkpoint: &'c Checkpoint<'a>,
        name: &str,
    ) -> Result<Option<&'c (String, TensorView<'a>)>> {
        let found = checkpoint.get(name);
        if found.is_some() || name != "shared.weight" {
            return Ok(found);
        }
        Ok(SHARED_ALIASES.iter().find_map(|a| checkpoint.get(a)))
    }

    fn is_alias(&self, stored: &str) -> bool {
        SHARED_ALIASES.contains(&stored) || (self.tied && stored == "lm_head.weight")
    }
}

/// Builds a [`T5`] on `device` from a checkpoint: every tensor present with the shape the
/// config implies.
pub fn load_t5(
    config: &T5Config,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
    options: LoadOptions,
    converted: &mut dyn FnMut(&[u8]),
) -> Result<(T5, LoadReport)> {
    let mut model = config.init(device);
    let names = T5Names {
        tied: config.tie_word_embeddings,
    };
    let filled = fill(&mut model, &names, checkpoint, device, options, converted)?;
    model.shared_parts = filled.table_parts;
    let head = match &model.lm_head {
        Some(head) => Some(("lm_head.weight", head.val())),
        None if model.shared_parts.is_empty() => Some(("shared.weight", model.shared.val())),
        None => None,
    };
    model.lm_head_host = attach_host_with_head(&mut model, filled.host, head)?;
    Ok((model, filled.report))
}
