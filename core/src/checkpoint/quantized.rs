//! Weight quantization of the projections: burn's quantized tensors (the frozen base of QLoRA
//! training), and the quantized codec of q8/q4 web bundles ([`encode_weights`] /
//! [`read_quantized`]; the layout is described in [`crate::checkpoint::bundle`]). The tied
//! embedding / output table stays float.

use super::{encode_safetensors, save_safetensors, Params, SaveDtype, Slot};
use crate::ops::int8::Int8Weight;
use crate::{Error, Result};
use burn::module::Param;
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, QuantizedBytes, ScaleDtype};
use burn::tensor::{DType, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The `format` a bundle's manifest and quantized model.safetensors header name.
pub const FORMAT: &str = "bartleby-bundle";

/// How the weights of a bundle are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quant {
    F32,
    F16,
    Q8,
    Q4,
}

impl Quant {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8" => Ok(Self::Q8),
            "q4" => Ok(Self::Q4),
            other => Err(Error::Input(format!(
                "quantization {other:?}: expected f32, f16, q8 or q4"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }

    pub fn bits(self) -> Option<QuantBits> {
        match self {
            Self::Q8 => Some(QuantBits::Q8),
            Self::Q4 => Some(QuantBits::Q4),
            _ => None,
        }
    }
}

/// Bits per weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantBits {
    /// Symmetric int8, one f32 scale per block.
    Q8,
    /// Symmetric int4, one f32 scale per block.
    Q4,
}

/// The scheme: symmetric values, blocks of `block` consecutive input features of one output
/// row (HF layout `[out, in]`), each with its own f32 scale.
pub fn scheme(bits: QuantBits, block: u8) -> QuantScheme {
    let value = match bits {
        QuantBits::Q8 => QuantValue::Q8S,
        QuantBits::Q4 => QuantValue::Q4S,
    };
    QuantScheme::default()
        .with_value(value)
        .with_store(QuantStore::PackedU32(0))
        .per_block([1, block], ScaleDtype::F32)
}

/// Replaces every projection weight by its quantized form (biases and LoRA branches stay f32).
/// `block` must divide the input width of every projection. Returns how many were quantized.
pub fn quantize_projections<M: Params>(model: &mut M, bits: QuantBits, block: u8) -> Result<usize> {
    let scheme = scheme(bits, block);
    let mut n = 0;
    let device = model.device();
    model.visit_projections(&mut |name, proj| {
        proj.expand_host(&device);
        let w = proj.linear.weight.val(); // [in, out], a view of the stored [out, in]
        let [d_in, _] = w.dims();
        if block == 0 || d_in % block as usize != 0 {
            return Err(crate::Error::Input(format!(
                "{name}: quantization block {block} does not divide its input width {d_in}"
            )));
        }
        let q = w.transpose().quantize_dynamic(&scheme).transpose();
        proj.linear.weight = Param::from_tensor(q);
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// The bundle's model.safetensors for `quant` (see the module docs for the layout).
pub fn encode_weights<M: Params>(model: &M, quant: Quant, block_size: usize) -> Result<Vec<u8>> {
    let bits = match quant {
        Quant::F32 => return save_safetensors(model, SaveDtype::F32),
        Quant::F16 => return save_safetensors(model, SaveDtype::F16),
        q => q.bits().expect("quantized"),
    };
    let block = u8::try_from(block_size)
        .ok()
        .filter(|&b| b >= 2 && b % 2 == 0)
        .ok_or_else(|| {
            Error::Input(format!(
                "block size {block_size}: expected an even number from 2 to 254"
            ))
        })?;
    let qscheme = scheme(bits, block);
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let read = |t: Tensor<2>| -> Result<Vec<f32>> {
        t.into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Device(format!("{e:?}")))
    };
    let vector_shape = model.vector_shapes();
    super::visit_materialized(model, &mut |name, slot| {
        match slot {
            Slot::Matrix(p) => {
                let dims = p.val().dims();
                let bytes = read(p.val())?
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect();
                tensors.insert(name, (Dtype::F16, dims.to_vec(), bytes));
            }
            Slot::Vector(p) => {
                let [n] = p.val().dims();
                let shape = vector_shape(&name, n);
                let bytes = read(p.val().unsqueeze::<2>())?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                tensors.insert(name, (Dtype::F32, shape, bytes));
            }
            Slot::LinearWeight(p) => {
                let [d_in, d_out] = p.val().dims();
                if d_in % block_size != 0 {
                    return Err(Error::Input(format!(
                        "{name}: block size {block_size} does not divide its input width {d_in} \
                         (pick a block size that divides every projection's input width)"
                    )));
                }
                // burn's quantization of the HF-layout [out, in] matrix, blocks along `in`.
                let w = p.val().transpose().quantize_dynamic(&qscheme);
                let data = w.into_data();
                // The backend may store the values differently from the requested scheme
                // (flex keeps one byte per value): read them with the scheme it reports.
                let DType::QFloat(stored) = data.dtype() else {
                    return Err(Error::Weights(format!(
                        "{name}: the quantizer returned {:?}",
                        data.dtype()
                    )));
                };
                let q = QuantizedBytes {
                    bytes: data.into_bytes(),
                    scheme: stored,
                    shape: [d_out, d_in].into(),
                };
                let (values, scales) = q.into_vec_i8();
                let (dtype, shape, bytes) = match bits {
                    QuantBits::Q8 => (
                        Dtype::I8,
                        vec![d_out, d_in],
                        values.iter().map(|&v| v as u8).collect(),
                    ),
                    QuantBits::Q4 => (
                        Dtype::U8,
                        vec![d_out, d_in / 2],
                        values
                            .chunks_exact(2)
                            .map(|pair| (pair[0] as u8 & 0x0f) | ((pair[1] as u8 & 0x0f) << 4))
                            .collect(),
                    ),
                };
                let n_blocks = d_in / block_size;
                if scales.block.len() != d_out * n_blocks {
                    return Err(Error::Weights(format!(
                        "{name}: {} scales from the quantizer, expected {}",
                        scales.block.len(),
                        d_out * n_blocks
                    )));
                }
                let scale_bytes = scales.block.iter().flat_map(|s| s.to_le_bytes()).collect();
                tensors.insert(name.clone(), (dtype, shape, bytes));
                tensors.insert(
                    format!("{name}_scale"),
                    (Dtype::F32, vec![d_out, n_blocks], scale_bytes),
                );
            }
        }
        Ok(())
    })?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("quantization".to_string(), quant.name().to_string()),
        ("block_size".to_string(), block_size.to_string()),
    ]);
    encode_safetensors(&tensors, metadata)
}

/// One stored quantized projection weight (`[out, in]` values and their per-block scales),
/// with the scheme it was quantized with.
pub fn read_quantized(
    file: &str,
    name: &str,
    values: &TensorView<'_>,
    scales: &TensorView<'_>,
    d_out: usize,
    d_in: usize,
) -> Result<(Int8Weight, QuantBits)> {
    let err = |m: String| Error::Weights(format!("{file}: tensor {name}: {m}"));
    let (bits, q): (QuantBits, Vec<i8>) = match values.dtype() {
        Dtype::I8 => {
            if values.shape() != [d_out, d_in] {
                return Err(err(format!(
                    "shape {:?}, expected {:?}",
                    values.shape(),
                    [d_out, d_in]
                )));
            }
            (
                QuantBits::Q8,
                values.data().iter().map(|&b| b as i8).collect(),
            )
        }
        Dtype::U8 => {
            if d_in % 2 != 0 || values.shape() != [d_out, d_in / 2] {
                return Err(err(format!(
                    "shape {:?}, expected {:?} (q4, two values per byte)",
                    values.shape(),
                    [d_out, d_in / 2]
                )));
            }
            let nibble = |b: u8| ((b << 4) as i8) >> 4;
            (
                QuantBits::Q4,
                values
                    .data()
                    .iter()
                    .flat_map(|&b| [nibble(b & 0x0f), nibble(b >> 4)])
                    .collect(),
            )
        }
        other => return Err(err(format!("dtype {other:?} is not a quantized layout"))),
    };
    if scales.dtype() != Dtype::F32 || scales.shape().len() != 2 || scales.shape()[0] != d_out {
        return Err(err(format!(
            "scale tensor has dtype {:?} shape {:?}, expected F32 [{d_out}, in / block]",
            scales.dtype(),
            scales.shape()
        )));
    }
    let n_blocks = scales.shape()[1];
    if n_blocks == 0 || d_in % n_blocks != 0 {
        return Err(err(format!(
            "{n_blocks} scales per row do not divide {d_in} inputs"
        )));
    }
    let s: Vec<f32> = scales
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let weight = Int8Weight::new(q, s, d_out, d_in).ok_or_else(|| err("sizes disagree".into()))?;
    Ok((weight, bits))
}
