//! Hugging Face checkpoint ⇄ [`Llama`]: the one walk over `LlamaForCausalLM`'s weight names
//! (`Phi3ForCausalLM`'s fused `qkv_proj` / `gate_up_proj` and `Qwen2ForCausalLM`'s are the same
//! walk over other fields) — loading, saving, LoRA, merging and quantization all use it.

use super::config::LlamaConfig;
use super::model::{Layer, Llama};
use crate::checkpoint::load::{attach_host_with_head, fill, Names};
use crate::checkpoint::{Checkpoint, LoadOptions, LoadReport, Node, Params, Slot, Walker};
use crate::ops::Proj;
use crate::Result;
use burn::tensor::Device;

/// The embedding table's name.
pub const EMBED: &str = "model.embed_tokens.weight";

/// Calls `f` for every parameter with its transformers name (a tied head omitted).
pub fn visit(model: &mut Llama, f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>) -> Result<()> {
    crate::checkpoint::visit_tensors(model, walk, f)
}

/// Calls `f` for every projection with its module name, e.g. `model.layers.0.self_attn.q_proj`
/// — the names PEFT's `target_modules` match.
pub fn visit_projections(
    model: &mut Llama,
    f: &mut dyn FnMut(String, &mut Proj) -> Result<()>,
) -> Result<()> {
    crate::checkpoint::visit_projections(model, walk, f)
}

/// The one walk over the model in transformers' naming.
fn walk(model: &mut Llama, f: &mut Walker<'_>) -> Result<()> {
    f(EMBED.into(), Node::Tensor(Slot::Matrix(&mut model.shared)))?;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        walk_layer(&format!("model.layers.{i}"), layer, f)?;
    }
    f(
        "model.norm.weight".into(),
        Node::Tensor(Slot::Vector(&mut model.norm)),
    )?;
    if let Some(head) = model.lm_head.as_mut() {
        f("lm_head.weight".into(), Node::Tensor(Slot::Matrix(head)))?;
    }
    Ok(())
}

fn walk_layer(p: &str, layer: &mut Layer, f: &mut Walker<'_>) -> Result<()> {
    f(
        format!("{p}.input_layernorm.weight"),
        Node::Tensor(Slot::Vector(&mut layer.input_layernorm)),
    )?;
    let a = &mut layer.attn;
    let projections = [
        ("q_proj", a.q.as_mut()),
        ("k_proj", a.k.as_mut()),
        ("v_proj", a.v.as_mut()),
        ("qkv_proj", a.qkv.as_mut()),
        ("o_proj", Some(&mut a.o)),
    ];
    for (name, proj) in projections {
        if let Some(proj) = proj {
            f(format!("{p}.self_attn.{name}"), Node::Proj(proj))?;
        }
    }
    f(
        format!("{p}.post_attention_layernorm.weight"),
        Node::Tensor(Slot::Vector(&mut layer.post_attention_layernorm)),
    )?;
    let m = &mut layer.mlp;
    let projections = [
        ("gate_proj", m.gate.as_mut()),
        ("up_proj", m.up.as_mut()),
        ("gate_up_proj", m.gate_up.as_mut()),
        ("down_proj", Some(&mut m.down)),
    ];
    for (name, proj) in projections {
        if let Some(proj) = proj {
            f(format!("{p}.mlp.{name}"), Node::Proj(proj))?;
        }
    }
    Ok(())
}

impl Params for Llama {
    fn embedding_table(&self) -> &'static str {
        EMBED
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
        Llama::device(self)
    }

    fn materialize(&mut self) {
        Llama::materialize(self)
    }
}

/// A tied model's checkpoint may also store `lm_head.weight` (a copy of the embedding).
struct LlamaNames {
    tied: bool,
}

impl Names for LlamaNames {
    fn is_alias(&self, stored: &str) -> bool {
        self.tied && stored == "lm_head.weight"
    }
}

/// Builds a [`Llama`] on `device` from a checkpoint: every tensor present with the shape the
/// config implies.
pub fn load_llama(
    config: &LlamaConfig,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
    options: LoadOptions,
    converted: &mut dyn FnMut(&[u8]),
) -> Result<(Llama, LoadReport)> {
    let mut model = config.init(device);
    let names = LlamaNames {
        tied: config.tie_word_embeddings,
    };
    let filled = fill(&mut model, &names, checkpoint, device, options, converted)?;
    model.shared_parts = filled.table_parts;
    let head = match &model.lm_head {
        Some(head) => Some(("lm_head.weight", head.val())),
        None if model.shared_parts.is_empty() => Some((EMBED, model.shared.val())),
        None => None,
    };
    model.lm_head_host = attach_host_with_head(&mut model, filled.host, head)?;
    Ok((model, filled.report))
}
