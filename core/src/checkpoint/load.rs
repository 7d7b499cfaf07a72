//! Filling a model's parameters from a checkpoint — the part of loading every architecture
//! shares: shape checks, f32/f16/bf16 or quantized (q8/q4) storage, the device's limits
//! ([`LoadOptions`]: an embedding table in row blocks, int8 weights kept for the CPU's integer
//! products). Which stored name is which parameter comes from the model ([`Names`], and the
//! walk of [`Params`]).

use super::{read_f32, Checkpoint, LoadOptions, LoadReport, Params, Slot};
use crate::ops::int8::Int8Weight;
use crate::{Error, Result};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{HashMap, HashSet};

/// How a model's canonical parameter names map onto what checkpoints store.
pub trait Names {
    /// The stored tensor (with its file) for canonical name `name`: stored under that name by
    /// default; a model adds its aliases.
    fn find<'c, 'a>(
        &self,
        checkpoint: &'c Checkpoint<'a>,
        name: &str,
    ) -> Result<Option<&'c (String, TensorView<'a>)>> {
        Ok(checkpoint.get(name))
    }
    /// Whether a missing tensor keeps its default (zero) instead of being an error.
    fn optional(&self, _name: &str) -> bool {
        false
    }
    /// The canonical name a stored name stands for (for the report's unused tensors).
    fn canonical(&self, stored: &str) -> String {
        stored.to_string()
    }
    /// Stored names that are tied copies of a parameter (not reported unused).
    fn is_alias(&self, _stored: &str) -> bool {
        false
    }
}

/// What [`fill`] found besides the parameters it set.
pub struct Filled {
    pub report: LoadReport,
    /// The embedding table ([`Params::embedding_table`]) in row blocks, when over the device's
    /// limit (the parameter itself is then a one-row stand-in).
    pub table_parts: Vec<Param<Tensor<2>>>,
    /// Quantized projection weights kept as int8 ([`LoadOptions::int8_matmul`]), by module name.
    pub int8: HashMap<String, Int8Weight>,
}

/// Sets every parameter of `model` (a skeleton of placeholders) from `checkpoint`: each tensor
/// must be present (unless [`Names::optional`]) with the shape the model has.
/// `converted(bytes)` gets each tensor's stored bytes once copied.
pub fn fill<M: Params>(
    model: &mut M,
    names: &dyn Names,
    checkpoint: &Checkpoint<'_>,
    device: &Device,
    options: LoadOptions,
    converted: &mut dyn FnMut(&[u8]),
) -> Result<Filled> {
    let mut report = LoadReport::default();
    let mut used = HashSet::new();
    let mut table_parts = Vec::new();
    let mut int8 = HashMap::new();
    let table = model.embedding_table();
    let vector_shape = model.vector_shapes();
    model.visit(&mut |name, slot| {
        let Some((file, view)) = names.find(checkpoint, &name)? else {
            if names.optional(&name) {
                report.defaulted.push(name);
                return Ok(());
            }
            return Err(Error::Weights(format!(
                "missing tensor {name} (checkpoint has {} tensors)",
                checkpoint.len()
            )));
        };
        used.insert(name.clone());
        let found = view.shape().to_vec();
        let mismatch = |expected: &[usize]| {
            Error::Weights(format!(
                "{file}: tensor {name} has shape {found:?}, expected {expected:?}"
            ))
        };
        // Held in f32 on the device, whatever the file stores.
        let elements = match &slot {
            Slot::Matrix(p) | Slot::LinearWeight(p) => p.val().shape().num_elements(),
            Slot::Vector(p) => p.val().shape().num_elements(),
        };
        let bytes = 4 * elements as u64;
        let limit = options.max_tensor_bytes;
        let split = name == table && limit.is_some_and(|l| bytes > l);
        if let Some(limit) = limit.filter(|&l| bytes > l && !split) {
            return Err(Error::Weights(format!(
                "{file}: tensor {name} needs {bytes} bytes on the device, over its limit of \
                 {limit} bytes per buffer"
            )));
        }
        match slot {
            Slot::Matrix(p) if split => {
                let [rows, cols] = p.val().dims();
                if found != [rows, cols] {
                    return Err(mismatch(&[rows, cols]));
                }
                let limit = limit.unwrap_or(u64::MAX);
                let per_part = (limit / (4 * cols as u64)) as usize;
                if per_part == 0 {
                    return Err(Error::Weights(format!(
                        "{file}: tensor {name}: one row needs {} bytes, over the device's limit \
                         of {limit} bytes per buffer",
                        4 * cols
                    )));
                }
                let data = read_f32(file, &name, view)?;
                for block in data.chunks(per_part * cols) {
                    let n = block.len() / cols;
                    let t = Tensor::from_data(TensorData::new(block.to_vec(), [n, cols]), device);
                    table_parts.push(Param::from_tensor(t));
                }
                // A one-row stand-in: a full-size placeholder can end up allocated in full.
                *p = Param::from_tensor(Tensor::zeros([1, cols], device));
            }
            Slot::Matrix(p) => {
                let expected = p.val().dims();
                if found != expected {
                    return Err(mismatch(&expected));
                }
                let data = read_f32(file, &name, view)?;
                *p = Param::from_tensor(Tensor::from_data(TensorData::new(data, expected), device));
            }
            Slot::LinearWeight(p) => {
                let [d_in, d_out] = p.val().dims();
                if matches!(view.dtype(), Dtype::I8 | Dtype::U8) {
                    // A quantized bundle (super::bundle): values + per-block scales. Either kept
                    // as int8 (`int8_matmul`, attached to the projection below) or expanded to
                    // f32 (value × scale, exactly what burn's dequantize computes) and computed
                    // in f32: burn 0.22's CPU backend re-quantizes a block-quantized weight on
                    // every transpose and dequantizes it element by element on every matmul (28×
                    // slower than f32 on distilbart-6-6, docs/benchmarks.md), so burn's quantized
                    // tensors are not used for inference.
                    let scale_name = format!("{name}_scale");
                    let Some((_, scales)) = names.find(checkpoint, &scale_name)? else {
                        return Err(Error::Weights(format!(
                            "{file}: quantized tensor {name} has no {scale_name}"
                        )));
                    };
                    used.insert(scale_name);
                    let (weight, _bits) =
                        super::quantized::read_quantized(file, &name, view, scales, d_out, d_in)?;
                    if options.int8_matmul {
                        // A zero-memory placeholder of the right shape; the int8 weight is it.
                        *p = Param::from_tensor(
                            Tensor::<2>::zeros([1, 1], device).expand([d_in, d_out]),
                        );
                        int8.insert(name.trim_end_matches(".weight").to_string(), weight);
                    } else {
                        let data = TensorData::new(weight.dequantize(), [d_out, d_in]);
                        let stored = Tensor::<2>::from_data(data, device);
                        *p = Param::from_tensor(stored.transpose());
                    }
                    converted(view.data());
                    return Ok(());
                }
                if found != [d_out, d_in] {
                    return Err(mismatch(&[d_out, d_in]));
                }
                // Kept in HF's [out, in] memory order; burn sees the transposed view (no copy).
                let data = read_f32(file, &name, view)?;
                let stored = Tensor::<2>::from_data(TensorData::new(data, [d_out, d_in]), device);
                *p = Param::from_tensor(stored.transpose());
            }
            Slot::Vector(p) => {
                let [n] = p.val().dims();
                let ok = found == [n] || found == vector_shape(&name, n);
                if !ok {
                    return Err(mismatch(&[n]));
                }
                let data = read_f32(file, &name, view)?;
                *p = Param::from_tensor(Tensor::from_data(TensorData::new(data, [n]), device));
            }
        }
        converted(view.data());
        Ok(())
    })?;
    let mut unused: Vec<String> = checkpoint
        .names()
        .filter(|k| !names.is_alias(k))
        .map(|k| names.canonical(k))
        .filter(|k| !used.contains(k))
        .collect();
    unused.sort();
    report.unused = unused;
    Ok(Filled {
        report,
        table_parts,
        int8,
    })
}

/// Attaches the int8 weights [`fill`] kept to their projections, each with its bias.
pub fn attach_int8<M: Params>(model: &mut M, mut int8: HashMap<String, Int8Weight>) -> Result<()> {
    model.visit_projections(&mut |name, proj| {
        let Some(weight) = int8.remove(&name) else {
            return Ok(());
        };
        let weight = match &proj.linear.bias {
            Some(b) => {
                let bias = b
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| Error::Weights(format!("{name}.bias: {e:?}")))?;
                weight.with_bias(bias).ok_or_else(|| {
                    Error::Weights(format!(
                        "{name}.bias: length differs from the weight's rows"
                    ))
                })?
            }
            None => weight,
        };
        proj.int8 = Some(std::sync::Arc::new(weight));
        Ok(())
    })
}

/// An output projection table `[vocab, d]` (+ bias) quantized for the int8 products, with the
/// projections' block size (it is most of a decoding step's bytes).
/// Attaches the int8 projection weights `fill` kept and quantizes the output projection the same
/// way (`head`: its name and table — an untied head, or the shared table when it is held whole;
/// `None` when it is in row blocks), for a model whose head has no bias (T5, Llama). Returns the
/// head's int8 weight.
pub fn attach_int8_with_head<M: Params>(
    model: &mut M,
    int8: HashMap<String, Int8Weight>,
    head: Option<(&str, Tensor<2>)>,
) -> Result<Option<std::sync::Arc<Int8Weight>>> {
    if int8.is_empty() {
        return Ok(None);
    }
    let block = int8.values().next().map(|w| w.block()).unwrap_or(1);
    let head = match head {
        Some((name, table)) => int8_table(name, table, None, block)?.map(std::sync::Arc::new),
        None => None,
    };
    attach_int8(model, int8)?;
    Ok(head)
}

pub fn int8_table(
    name: &str,
    table: Tensor<2>,
    bias: Option<Tensor<1>>,
    block: usize,
) -> Result<Option<Int8Weight>> {
    let read = |t: Tensor<1>| t.into_data().try_to_vec::<f32>();
    let [vocab, d_model] = table.dims();
    let values = read(table.reshape([vocab * d_model]))
        .map_err(|e| Error::Weights(format!("{name}: {e:?}")))?;
    let weight = Int8Weight::quantize(&values, vocab, d_model, block);
    Ok(match bias {
        None => weight,
        Some(b) => {
            let bias = read(b).map_err(|e| Error::Weights(format!("{name} bias: {e:?}")))?;
            weight.and_then(|w| w.with_bias(bias))
        }
    })
}
