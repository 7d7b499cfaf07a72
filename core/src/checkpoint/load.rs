//! Filling a model's parameters from a checkpoint — the part of loading every architecture
//! shares: shape checks, f32/f16/bf16 or quantized (q8/q4) storage, the device's limits
//! ([`LoadOptions`]: an embedding table in row blocks, int8 or half-precision weights kept for
//! the CPU's own products). Which stored name is which parameter comes from the model ([`Names`], and the
//! walk of [`Params`]).

use super::{read_f32, Checkpoint, LoadOptions, LoadReport, Params, Slot};
use crate::ops::dense::{F32Weight, Half, HalfWeight};
use crate::ops::int8::Int8Weight;
use crate::ops::HostWeight;
use crate::{Error, Result};
use burn::module::Param;
use burn::tensor::{DType, Device, Tensor, TensorData};
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
    /// Projection weights kept on the host for the CPU's own products, by module name: int8
    /// ([`LoadOptions::int8_matmul`]) or as stored ([`LoadOptions::host_weights`]).
    pub host: HashMap<String, HostWeight>,
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
    let mut host = HashMap::new();
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
                let t: Tensor<2> = Tensor::from_data(TensorData::new(data, expected), device);
                // The embedding table and an untied output projection (`lm_head.weight` in
                // every architecture that has one) are held as stored (exactly: the values came
                // from halves); the output projection made from them is a host weight
                // (`attach_host_with_head`). Other matrices (position tables, T5's relative
                // attention bias) are small and read in f32 by their ops.
                let head = name == table || name == "lm_head.weight";
                let t = match half_kind(view.dtype()).filter(|_| options.host_weights && head) {
                    Some(kind) => t.cast(kind.dtype()),
                    None => t,
                };
                *p = Param::from_tensor(t);
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
                        hold_on_host(p, &name, HostWeight::Int8(weight), &mut host, device);
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
                if let Some(kind) = half_kind(view.dtype()).filter(|_| options.host_weights) {
                    // The stored halves are the weight.
                    let weight = HalfWeight::from_le_bytes(view.data(), kind, d_out, d_in)
                        .ok_or_else(|| mismatch(&[d_out, d_in]))?;
                    hold_on_host(p, &name, HostWeight::Half(weight), &mut host, device);
                    converted(view.data());
                    return Ok(());
                }
                // Kept in HF's [out, in] memory order; burn sees the transposed view (no copy).
                let data = read_f32(file, &name, view)?;
                if options.host_weights {
                    // Held for the CPU's own products.
                    let weight = F32Weight::new(&data, d_out, d_in)
                        .ok_or_else(|| mismatch(&[d_out, d_in]))?;
                    hold_on_host(p, &name, HostWeight::F32(weight), &mut host, device);
                    converted(view.data());
                    return Ok(());
                }
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
    // Tables are held in half only beside half projections (whose head then is a host weight
    // too); otherwise (an f32 or int8 checkpoint with a half table) they go back to f32, so that
    // no product rounds to half — except an int8 bundle's embedding table, which stays in half
    // for its lookups when its output projection is held in int8 ([`attach_host_with_head`],
    // [`widen_unless_head_held`]): half the memory of an f32 copy, the same values.
    if options.host_weights && !host.values().any(|w| matches!(w, HostWeight::Half(_))) {
        let int8 = host.values().any(|w| matches!(w, HostWeight::Int8(_)));
        super::widen_held_tables(model, !int8);
    }
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
        host,
    })
}

/// Keeps `weight` as the host weight of the projection `name` (its `.weight` tensor) and puts a
/// zero-memory placeholder of its burn shape `[d_in, d_out]` in `p`.
fn hold_on_host(
    p: &mut Param<Tensor<2>>,
    name: &str,
    weight: HostWeight,
    host: &mut HashMap<String, HostWeight>,
    device: &Device,
) {
    *p = Param::from_tensor(
        Tensor::<2>::zeros([1, 1], device).expand([weight.d_in(), weight.d_out()]),
    );
    host.insert(name.trim_end_matches(".weight").to_string(), weight);
}

/// The half-precision format of a stored dtype.
fn half_kind(dtype: Dtype) -> Option<Half> {
    match dtype {
        Dtype::F16 => Some(Half::F16),
        Dtype::BF16 => Some(Half::Bf16),
        _ => None,
    }
}

/// Attaches the host weights [`fill`] kept to their projections, each with its bias.
pub fn attach_host<M: Params>(model: &mut M, mut host: HashMap<String, HostWeight>) -> Result<()> {
    model.visit_projections(&mut |name, proj| {
        let Some(weight) = host.remove(&name) else {
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
        proj.host = Some(std::sync::Arc::new(weight));
        Ok(())
    })
}

/// Attaches the host weights `fill` kept and holds the output projection the same way (`head`:
/// its name and table — an untied head, or the shared table when it is held whole; `None` when
/// it is in row blocks), for a model whose head has no bias (T5, Llama). Returns the head's
/// host weight.
pub fn attach_host_with_head<M: Params>(
    model: &mut M,
    host: HashMap<String, HostWeight>,
    head: Option<(&str, Tensor<2>)>,
) -> Result<Option<std::sync::Arc<HostWeight>>> {
    let Some(like) = head_like(&host) else {
        return Ok(None);
    };
    let head = match head {
        Some((name, table)) => host_table(name, table, None, like)?.map(std::sync::Arc::new),
        None => None,
    };
    widen_unless_head_held(model, like, head.is_some());
    attach_host(model, host)?;
    Ok(head)
}

/// An int8 bundle's embedding table left in half precision by [`fill`] goes to f32 when the
/// output projection is not held on the host after all (row blocks, a block size that does not
/// divide the width): then the table is that projection.
pub fn widen_unless_head_held<M: Params>(model: &mut M, like: &HostWeight, held: bool) {
    if matches!(like, HostWeight::Int8(_)) && !held {
        super::widen_held_tables(model, true);
    }
}

/// Which of the kept host weights the output projection is held like: int8 when the bundle has
/// any, else halves when the checkpoint has any, else f32 (not the map's arbitrary first entry:
/// a q8 bundle's head must be int8 on every load).
pub fn head_like(host: &HashMap<String, HostWeight>) -> Option<&HostWeight> {
    let rank = |w: &HostWeight| match w {
        HostWeight::Int8(_) => 0,
        HostWeight::Half(_) => 1,
        HostWeight::F32(_) => 2,
    };
    host.values().min_by_key(|w| rank(w))
}

/// `t` in f32 (as it is when it is).
fn f32_table(t: Tensor<2>) -> Tensor<2> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    }
}

/// [`Int8Weight::quantize`] of a half-precision table held by burn's CPU backend, read in place
/// and widened ~16 MB of rows at a time (no f32 copy of the whole table: 1 GB for Llama 3.2 1B's).
/// `None` when the table is not such a tensor.
fn int8_from_half_table(
    table: &Tensor<2>,
    vocab: usize,
    d_model: usize,
    block: usize,
) -> Option<Option<Int8Weight>> {
    if block == 0 || d_model == 0 || !d_model.is_multiple_of(block) {
        return Some(None);
    }
    let dtype = table.dtype();
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return None;
    }
    let t = table.clone().try_into_primitive::<burn_flex::Flex>().ok()?;
    let slab = ((1usize << 22) / d_model).max(1) * d_model;
    let mut values = Vec::with_capacity(vocab * d_model);
    let mut scales = Vec::with_capacity(vocab * d_model / block);
    let mut buf = vec![0f32; slab];
    // Each slab widened into `buf`, then quantized.
    let mut slabs = |widen: &mut dyn FnMut(usize, &mut [f32]) -> usize| {
        for start in (0..vocab * d_model).step_by(slab) {
            let n = widen(start, &mut buf);
            let (q, s) = crate::ops::int8::quantize_blocks(&buf[..n], block);
            values.extend_from_slice(&q);
            scales.extend_from_slice(&s);
        }
    };
    fn widen<H: Copy>(halves: &[H], to_f32: fn(H) -> f32, start: usize, buf: &mut [f32]) -> usize {
        let part = &halves[start..(start + buf.len()).min(halves.len())];
        for (b, &h) in buf.iter_mut().zip(part) {
            *b = to_f32(h);
        }
        part.len()
    }
    match dtype {
        DType::F16 => {
            let halves = t.as_slice::<half::f16>()?;
            slabs(&mut |start, buf| widen(halves, half::f16::to_f32, start, buf));
        }
        _ => {
            let halves = t.as_slice::<half::bf16>()?;
            slabs(&mut |start, buf| widen(halves, half::bf16::to_f32, start, buf));
        }
    }
    Some(Int8Weight::new(values, scales, vocab, d_model))
}

/// An output projection table `[vocab, d]` (+ bias) held for the CPU's own products as the
/// projections are (`like`), since it is most of a decoding step's bytes: int8 with their block
/// size, its halves when the table itself is held in half precision, or f32 (a copy). `None` when it
/// cannot be (a block that does not divide `d`, an f32 table beside half projections).
pub fn host_table(
    name: &str,
    table: Tensor<2>,
    bias: Option<Tensor<1>>,
    like: &HostWeight,
) -> Result<Option<HostWeight>> {
    let read = |t: Tensor<1>| t.into_data().try_to_vec::<f32>();
    let [vocab, d_model] = table.dims();
    let weight = match like {
        HostWeight::Int8(w) => {
            // (A table held in half precision is read as its exact f32 values, a slab of rows
            // at a time; an f32 one in place, without a copy.)
            match int8_from_half_table(&table, vocab, d_model, w.block()) {
                Some(weight) => weight,
                None => crate::ops::linear::with_host_values(f32_table(table), |values| {
                    Int8Weight::quantize(values, vocab, d_model, w.block())
                }),
            }
            .map(HostWeight::Int8)
        }
        HostWeight::Half(_) => {
            let kind = match table.dtype() {
                DType::F16 => Half::F16,
                DType::BF16 => Half::Bf16,
                _ => return Ok(None),
            };
            let data = table.into_data();
            HalfWeight::from_le_bytes(data.as_bytes(), kind, vocab, d_model).map(HostWeight::Half)
        }
        HostWeight::F32(_) => crate::ops::linear::with_host_values(f32_table(table), |values| {
            F32Weight::new(values, vocab, d_model)
        })
        .map(HostWeight::F32),
    };
    Ok(match bias {
        None => weight,
        Some(b) => {
            let bias = read(b).map_err(|e| Error::Weights(format!("{name} bias: {e:?}")))?;
            weight.and_then(|w| w.with_bias(bias))
        }
    })
}
