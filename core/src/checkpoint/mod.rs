//! Checkpoints in and out: safetensors (one codec for every model: f32/f16/bf16 per tensor,
//! sharded or not), the quantized codec of q8/q4 bundles, the bundle manifest, and PEFT adapter
//! files. Which tensor is which parameter is each model's business (`models/<family>/params.rs`,
//! one walk over its Hugging Face names); this module only holds the shared vocabulary of that
//! walk ([`Slot`], [`Node`]) and how the weights are held on a device ([`LoadOptions`]).

pub mod adapter;
pub mod bundle;
pub mod gguf;
pub mod kquants;
pub mod load;
pub mod quantized;
mod safetensors;

pub use self::safetensors::{
    encode_safetensors, read_f32, save_safetensors, visit_f32, Checkpoint, SaveDtype,
};

use crate::ops::Proj;
use crate::Result;
use burn::module::Param;
use burn::tensor::{Device, Tensor};

/// The walk a model's `params.rs` writes: every parameter, as a tensor or a whole projection,
/// with its Hugging Face name.
pub type Walker<'f> = dyn FnMut(String, Node<'_>) -> Result<()> + 'f;

/// Runs a model's `walk` calling `f` for every tensor: a projection gives its `.weight` (HF
/// `[out, in]`) and `.bias`.
pub fn visit_tensors<M>(
    model: &mut M,
    walk: fn(&mut M, &mut Walker<'_>) -> Result<()>,
    f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>,
) -> Result<()> {
    walk(model, &mut |name, node| match node {
        Node::Tensor(slot) => f(name, slot),
        Node::Proj(p) => {
            f(
                format!("{name}.weight"),
                Slot::LinearWeight(&mut p.linear.weight),
            )?;
            match p.linear.bias.as_mut() {
                Some(bias) => f(format!("{name}.bias"), Slot::Vector(bias)),
                None => Ok(()),
            }
        }
    })
}

/// Runs a model's `walk` calling `f` for every projection with its module name (the names
/// PEFT's `target_modules` match).
pub fn visit_projections<M>(
    model: &mut M,
    walk: fn(&mut M, &mut Walker<'_>) -> Result<()>,
    f: &mut dyn FnMut(String, &mut Proj) -> Result<()>,
) -> Result<()> {
    walk(model, &mut |name, node| match node {
        Node::Tensor(_) => Ok(()),
        Node::Proj(p) => f(name, p),
    })
}

/// Replaces every host projection weight of `model` ([`crate::ops::Proj::host`]) by its f32
/// values.
pub fn expand_host<M: Params>(model: &mut M) {
    let device = model.device();
    let _ = model.visit_projections(&mut |_, proj| {
        proj.expand_host(&device);
        Ok(())
    });
}

/// A copy of `model` materialized ([`Params::materialize`]) except its host-held projections,
/// which keep their zero-memory placeholders (right shapes) and are returned by weight name.
pub fn materialized_but_projections<M: Params>(
    model: &M,
) -> Result<(
    M,
    std::collections::HashMap<String, std::sync::Arc<crate::ops::HostWeight>>,
)> {
    let mut model = model.clone();
    let mut host = std::collections::HashMap::new();
    model.visit_projections(&mut |name, proj| {
        if let Some(w) = proj.host.take() {
            host.insert(format!("{name}.weight"), w);
        }
        Ok(())
    })?;
    model.materialize();
    Ok((model, host))
}

/// [`Params::visit`] of `model` with every weight as [`Params::materialize`] gives it, except
/// that each projection held for the CPU's host products is widened to f32 only for its own call
/// (one matrix at a time: a 3.8 B-parameter model held in bf16 is never copied whole into f32 —
/// 15 GB — to be saved or quantized).
pub fn visit_materialized<M: Params>(
    model: &M,
    f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>,
) -> Result<()> {
    let (mut model, mut host) = materialized_but_projections(model)?;
    let device = model.device();
    model.visit(&mut |name, slot| match (slot, host.remove(&name)) {
        (Slot::LinearWeight(_), Some(w)) => {
            let mut p = Param::from_tensor(w.burn_weight(&device));
            f(name, Slot::LinearWeight(&mut p))
        }
        (slot, _) => f(name, slot),
    })
}

/// Puts every weight a model held for the CPU's host products back into plain tensors: the
/// projections' host weights expanded ([`expand_host`]) and, when the output projection `head`
/// (already taken from the model) was held in halves, the tables widened ([`widen_held_tables`]).
pub fn release_host<M: Params>(
    model: &mut M,
    head: Option<std::sync::Arc<crate::ops::HostWeight>>,
) {
    // A head held in halves or int8 leaves its table in half precision (lookups only); as the
    // output projection again, it is widened.
    let held = matches!(
        head.as_deref(),
        Some(crate::ops::HostWeight::Half(_) | crate::ops::HostWeight::Int8(_))
    );
    expand_host(model);
    if held {
        widen_held_tables(model, true);
    }
}

/// Puts an embedding table and an untied `lm_head.weight` held in their stored half precision
/// ([`LoadOptions::host_weights`] of a half checkpoint) back into f32 (the same values). Only for models loaded for
/// the CPU's host products: training's mixed precision holds its matrices in half on purpose.
/// `with_table: false` leaves the embedding table as it is.
pub fn widen_held_tables<M: Params>(model: &mut M, with_table: bool) {
    let table = with_table.then(|| model.embedding_table());
    let _ = model.visit(&mut |name, slot| {
        if let Slot::Matrix(p) = slot {
            let t = p.val();
            let half = matches!(
                t.dtype(),
                burn::tensor::DType::F16 | burn::tensor::DType::BF16
            );
            if half && (Some(name.as_str()) == table || name == "lm_head.weight") {
                *p = Param::from_tensor(t.cast(burn::tensor::DType::F32));
            }
        }
        Ok(())
    });
}

/// What the checkpoint code (saving, quantizing, adapters, bundles) needs of a model: the one
/// walk over its parameters in Hugging Face naming, which each model implements in its
/// `params.rs`.
pub trait Params: Clone {
    /// Calls `f` for every parameter with its canonical transformers name (tied copies omitted).
    fn visit(&mut self, f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>) -> Result<()>;
    /// Calls `f` for every projection (`nn.Linear`) with its module name — the names PEFT's
    /// `target_modules` match.
    fn visit_projections(
        &mut self,
        f: &mut dyn FnMut(String, &mut Proj) -> Result<()>,
    ) -> Result<()>;
    /// The device the weights are on.
    fn device(&self) -> Device;
    /// Puts every weight back into its plain f32 tensor (whole tables, no int8), e.g. before
    /// saving or counting.
    fn materialize(&mut self);
    /// The name of the embedding table a device may hold as row blocks (excluded from
    /// [`crate::checkpoint::bundle::Requirements::min_buffer_bytes`]).
    fn embedding_table(&self) -> &'static str;
    /// How vector parameters are stored: the shape of vector `name` of length `n` (`[n]`
    /// unless the model's checkpoints store it otherwise).
    fn vector_shapes(&self) -> fn(&str, usize) -> Vec<usize> {
        |_, n| vec![n]
    }
}

/// How a Hugging Face tensor maps onto a burn parameter.
pub enum Slot<'a> {
    /// Same layout on both sides (embeddings): `[rows, cols]`.
    Matrix(&'a mut Param<Tensor<2>>),
    /// `nn.Linear` weight: HF stores `[out, in]`, burn `[in, out]`.
    LinearWeight(&'a mut Param<Tensor<2>>),
    /// A vector; HF may store it as `[1, n]` (`final_logits_bias`).
    Vector(&'a mut Param<Tensor<1>>),
}

/// A parameter tensor, or a whole projection (its weight, bias and any LoRA branch).
pub enum Node<'a> {
    Tensor(Slot<'a>),
    Proj(&'a mut Proj),
}

/// What loading found besides the model: tensors it did not use, defaults it filled in.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub unused: Vec<String>,
    pub defaulted: Vec<String>,
}

/// How the weights are held on the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The largest single tensor the device can hold, in bytes (WebGPU: the smaller of the
    /// adapter's `maxStorageBufferBindingSize` and `maxBufferSize`). A larger shared embedding
    /// table is held as blocks of rows under it ([`crate::Bart::shared_parts`]); any other tensor over
    /// it is an error naming the tensor. `None`: no limit.
    pub max_tensor_bytes: Option<u64>,
    /// Keep a q8/q4 bundle's projection weights as int8 and compute them in integers
    /// ([`crate::ops::int8`], as ONNX Runtime's and CTranslate2's int8 CPU paths do) instead of
    /// expanding them to f32. CPU devices only (the activations are read back on every
    /// projection); for inference, not training.
    pub int8_matmul: bool,
    /// Keep the projection weights of a checkpoint on the host as stored — f32, or f16/bf16 with
    /// the embedding table and an untied output projection held in half too — and take every
    /// product with the CPU's own kernels ([`crate::ops::dense`]), each weight widened exactly
    /// inside the kernel: the same values as f32, half the memory and half the bytes per
    /// decoding step for a half checkpoint, and for every checkpoint a decoding step at the
    /// memory bound (burn's matrix product packs the weight on every call). The output
    /// projection is held the same way (a copy beside the embedding table). CPU devices only;
    /// for inference.
    pub host_weights: bool,
}
