//! Normalizations other than LayerNorm (whose op lives in [`crate::ops::fused`], with its GPU
//! and training kernels).

use burn::module::Param;
use burn::tensor::Tensor;

/// Root-mean-square normalization over the last axis (T5's `T5LayerNorm`, Llama's `RMSNorm`):
/// `x · rsqrt(mean(x²) + eps) · weight` — no mean subtracted, no bias; statistics in f32.
pub fn rms_norm<const D: usize>(weight: &Param<Tensor<1>>, eps: f64, x: Tensor<D>) -> Tensor<D> {
    let variance = (x.clone() * x.clone()).mean_dim(D - 1);
    let normed = x * variance.add_scalar(eps).sqrt().recip();
    let w = weight.val();
    let shape: [usize; D] = std::array::from_fn(|i| if i == D - 1 { w.dims()[0] } else { 1 });
    normed * w.reshape(shape)
}
