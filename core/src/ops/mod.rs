//! Every op the model code calls. Each one chooses its kernel *inside*: burn's ops, the fused
//! CPU autodiff ops and the host BLAS hook ([`fused`]), the GPU kernels ([`gpu`], feature
//! `gpu`), the int8 products of a quantized bundle ([`int8`]) or the products with weights held on the
//! host as stored, f32 or f16/bf16 ([`dense`]). Model files call these and
//! never branch on a device, a feature or a weight format themselves.

pub mod activation;
pub mod attention;
pub mod dense;
pub mod embedding;
pub mod exp;
pub mod fused;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod int8;
pub mod linear;
pub mod norm;
pub mod rope;

pub use activation::Activation;
#[cfg(feature = "train")]
pub use fused::log_softmax_last;
pub use fused::{add_layer_norm, dropout, gelu, layer_norm, matmul, matmul_in, softmax_last};
pub use linear::{HostWeight, LoraBranch, Proj};
pub use norm::rms_norm;
