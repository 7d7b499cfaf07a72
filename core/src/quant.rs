//! Weight quantization of the projections (burn's quantized tensors): the frozen base of QLoRA
//! training, and smaller models for inference. The tied embedding / output table stays float.

use crate::model::Bart;
use crate::weights::visit_projections;
use crate::Result;
use burn::module::Param;
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};

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
pub fn quantize_projections(model: &mut Bart, bits: QuantBits, block: u8) -> Result<usize> {
    let scheme = scheme(bits, block);
    let mut n = 0;
    let device = model.device();
    visit_projections(model, &mut |name, proj| {
        proj.expand_int8(&device);
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
