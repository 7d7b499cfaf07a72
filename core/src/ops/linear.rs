//! Linear projections — `x W + b`, with an optional LoRA branch (Hu et al., 2021) or an int8
//! weight — and the matrix products under them. The kernel is chosen here, never in model code:
//! burn's matmul, a host BLAS routine while training ([`crate::ops::fused::matmul_in`]), the
//! GPU kernels of [`crate::ops::gpu`] for the shapes they win, or — on the CPU, for weights held
//! on the host ([`HostWeight`]) — the integer products of [`crate::ops::int8`] for a q8/q4 bundle
//! and the products of [`crate::ops::dense`] for an f32 or f16/bf16 checkpoint.

use crate::ops::Activation;
use burn::module::{Module, Param};
use burn::nn::{Dropout, Linear};
use burn::tensor::{DType, Device, Tensor, TensorData};

/// The precision a product with weight `w` is computed in: `w`'s own when it is held in half
/// precision ([`crate::models::Model::hold_matrices_in`]), otherwise f32 (also for quantized weights, which
/// burn dequantizes).
pub fn product_dtype<const D: usize>(w: &Tensor<D>) -> DType {
    match w.dtype() {
        dtype @ (DType::F16 | DType::BF16) => dtype,
        _ => DType::F32,
    }
}

/// Below this many rows, `x W` is computed as `(W x^T)^T`: gemm then streams the weight in
/// its stored (HF `[out, in]`) order, which is what decoding (a few rows per step) is bound by.
pub const FEW_ROWS: usize = 64;

/// `w xᵀ` for a weight `w` `[out, in]` and a few rows `xᵀ` `[in, rows]`: burn's matmul, or on
/// a GPU the kernel [`crate::ops::gpu::weight_times`] picks for this shape.
pub fn weight_times(w: Tensor<2>, xt: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "gpu")]
    if let Some(y) = crate::ops::gpu::weight_times(&w, &xt) {
        return y;
    }
    w.matmul(xt)
}

/// `x w` in `dtype`'s precision for many rows of `x` `[rows, in]` and a weight `w` `[in, out]`:
/// [`crate::ops::fused::matmul_in`], or on a GPU where [`crate::ops::gpu::times_weight`] applies, its kernel.
pub fn times_weight(x: Tensor<2>, w: Tensor<2>, dtype: DType) -> Tensor<2> {
    #[cfg(feature = "gpu")]
    if dtype == DType::F32 {
        if let Some(y) = crate::ops::gpu::times_weight(&x, &w) {
            return y;
        }
    }
    crate::ops::fused::matmul_in(x, w, dtype)
}

/// A linear projection `x W + b`, optionally with a LoRA branch (Hu et al., 2021):
/// `x W + b + s · (dropout(x) A) B`, as PEFT's `lora.Linear` computes it unmerged.
#[derive(Module, Debug)]
pub struct Proj {
    pub linear: Linear,
    pub lora: Option<LoraBranch>,
    /// A weight held on the host and computed by the CPU's own kernels ([`HostWeight`]: a
    /// q8/q4 bundle's int8, [`crate::checkpoint::LoadOptions::int8_matmul`]; an f32 or f16/bf16
    /// checkpoint's values, [`crate::checkpoint::LoadOptions::host_weights`]). When set, it is
    /// the weight and bias, and `linear.weight` is a zero-memory placeholder of the right shape
    /// ([`Proj::expand_host`] / [`crate::Bart::materialize`] turn it back into f32).
    #[module(skip)]
    pub host: Option<std::sync::Arc<HostWeight>>,
}

/// A projection weight `[d_out, d_in]` held on the host for the CPU's own products (the
/// activations are read back, computed and put back on every projection; inference only).
#[derive(Debug)]
pub enum HostWeight {
    /// A q8/q4 bundle's values and scales, computed in integers ([`crate::ops::int8`]).
    Int8(crate::ops::int8::Int8Weight),
    /// An f16/bf16 checkpoint's values as stored, widened to f32 in the product
    /// ([`crate::ops::dense`]).
    Half(crate::ops::dense::HalfWeight),
    /// An f32 checkpoint's values ([`crate::ops::dense`]).
    F32(crate::ops::dense::F32Weight),
}

impl HostWeight {
    pub fn d_out(&self) -> usize {
        match self {
            HostWeight::Int8(w) => w.d_out(),
            HostWeight::Half(w) => w.d_out(),
            HostWeight::F32(w) => w.d_out(),
        }
    }

    pub fn d_in(&self) -> usize {
        match self {
            HostWeight::Int8(w) => w.d_in(),
            HostWeight::Half(w) => w.d_in(),
            HostWeight::F32(w) => w.d_in(),
        }
    }

    /// The weight's f32 values `[d_out, d_in]` (int8: `q × scale`; halves: widened exactly).
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            HostWeight::Int8(w) => w.dequantize(),
            HostWeight::Half(w) => w.widen(),
            HostWeight::F32(w) => w.widen(),
        }
    }

    /// The weight as a plain f32 tensor in burn's `[d_in, d_out]` layout (a transposed view of
    /// the `[d_out, d_in]` values).
    pub fn burn_weight(&self, device: &Device) -> Tensor<2> {
        let data = TensorData::new(self.dequantize(), [self.d_out(), self.d_in()]);
        Tensor::<2>::from_data(data, device).transpose()
    }

    /// Adds `bias` `[d_out]` to every output. `None` when its length is not `d_out`.
    pub fn with_bias(self, bias: Vec<f32>) -> Option<Self> {
        match self {
            HostWeight::Int8(w) => w.with_bias(bias).map(HostWeight::Int8),
            HostWeight::Half(w) => w.with_bias(bias).map(HostWeight::Half),
            HostWeight::F32(w) => w.with_bias(bias).map(HostWeight::F32),
        }
    }
}

/// The low-rank update of one projection. PEFT stores `lora_A` `[r, in]` and `lora_B`
/// `[out, r]`; burn's layout is their transposes.
#[derive(Module, Debug)]
pub struct LoraBranch {
    /// `[in, r]`
    pub a: Param<Tensor<2>>,
    /// `[r, out]`
    pub b: Param<Tensor<2>>,
    /// `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub scaling: f64,
    /// On the branch input; active only on an autodiff (training) device.
    pub dropout: Dropout,
}

impl Proj {
    /// `x` `[batch, len, d_in]` → `[batch, len, d_out]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let base = match &self.host {
            Some(w) => project_host(w, x.clone()),
            None => project(&self.linear, x.clone()),
        };
        match &self.lora {
            None => base,
            Some(lora) => base + lora.forward(x),
        }
    }

    /// `activation(x W + b)`: on a GPU, for a few rows, GELU in the projection's kernel.
    pub fn forward_activated(&self, x: Tensor<3>, activation: Activation) -> Tensor<3> {
        #[cfg(feature = "gpu")]
        if let (Activation::Gelu, Some((w, b))) = (activation, self.plain_f32()) {
            let [batch, len, d_in] = x.dims();
            let rows = x.clone().reshape([batch * len, d_in]);
            if let Some(y) = crate::ops::gpu::linear_gelu_rows(&rows, &w, b.as_ref()) {
                let [_, d_out] = y.dims();
                return y.reshape([batch, len, d_out]);
            }
        }
        if let (Some(w), None, Activation::Gelu) = (&self.host, &self.lora, activation) {
            // Held on the host: GELU over the product's values on the host's threads.
            return project_host_with(w, x, crate::ops::activation::gelu_in_place);
        }
        activation.apply(self.forward(x))
    }

    /// The weight `[out, in]` and bias of a projection that is just `x W + b` in f32: no host
    /// weight, no LoRA branch, not held in half precision.
    #[cfg(feature = "gpu")]
    pub fn plain_f32(&self) -> Option<(Tensor<2>, Option<Tensor<1>>)> {
        let weight = self.linear.weight.val();
        if self.host.is_some() || self.lora.is_some() || weight.dtype() != DType::F32 {
            return None;
        }
        Some((
            weight.transpose(),
            self.linear.bias.as_ref().map(|b| b.val()),
        ))
    }

    /// Replaces a host weight ([`Proj::host`]) by its f32 values (int8: `q × scale`; halves:
    /// widened exactly; f32 as held).
    pub fn expand_host(&mut self, device: &Device) {
        if let Some(w) = self.host.take() {
            self.linear.weight = Param::from_tensor(w.burn_weight(device));
        }
    }

    /// Folds the LoRA branch into the weight: `W + s · A B` (PEFT's `merge_and_unload`).
    pub fn merge(&mut self) {
        if let Some(lora) = self.lora.take() {
            let device = lora.a.val().device();
            self.expand_host(&device);
            let delta = lora.a.val().matmul(lora.b.val()).mul_scalar(lora.scaling);
            let weight = self.linear.weight.val() + delta;
            self.linear.weight = Param::from_tensor(weight);
        }
    }
}

impl LoraBranch {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, len, d_in] = x.dims();
        // While training (the factors on the autodiff device) dropout needs `x` there too, even
        // where it comes from the frozen, plain-tensor base.
        let a = self.a.val();
        let x = if a.is_autodiff() { x.autodiff() } else { x };
        let x = crate::ops::fused::dropout(&self.dropout, x);
        let b = self.b.val();
        let [_, d_out] = b.dims();
        x.reshape([batch * len, d_in])
            .matmul(a)
            .matmul(b)
            .mul_scalar(self.scaling)
            .reshape([batch, len, d_out])
    }
}

/// `x W + b` for `x` `[batch, len, d_in]`.
fn project(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, len, d_in] = x.dims();
    let weight = linear.weight.val(); // [d_in, d_out]
    let [_, d_out] = weight.dims();
    let x = x.reshape([batch * len, d_in]);
    let dtype = product_dtype(&weight);
    // On a GPU, a few rows: product and bias in one kernel.
    #[cfg(feature = "gpu")]
    if dtype == DType::F32 {
        let bias = linear.bias.as_ref().map(|b| b.val());
        if let Some(y) =
            crate::ops::gpu::linear_rows(&x, &weight.clone().transpose(), bias.as_ref())
        {
            return y.reshape([batch, len, d_out]);
        }
    }
    let y = if batch * len <= FEW_ROWS {
        weight_times(weight.transpose(), x.cast(dtype).transpose())
            .transpose()
            .cast(DType::F32)
    } else {
        times_weight(x, weight, dtype)
    };
    let y = match &linear.bias {
        Some(b) => y + b.val().unsqueeze::<2>(),
        None => y,
    };
    y.reshape([batch, len, d_out])
}

/// [`project`] with a host weight, which holds its own bias (CPU devices: the activations are
/// read back, computed by [`crate::ops::int8`] or [`crate::ops::dense`] and put back).
pub fn project_host(w: &HostWeight, x: Tensor<3>) -> Tensor<3> {
    project_host_with(w, x, |_| ())
}

/// [`project_host`], `then` applied to the product's values before they become a tensor.
fn project_host_with(w: &HostWeight, x: Tensor<3>, then: impl Fn(&mut [f32])) -> Tensor<3> {
    let [batch, len, _] = x.dims();
    let device = x.device();
    let y = with_host_values(x, |x| match w {
        HostWeight::Half(h) => h.forward(x),
        HostWeight::F32(h) => h.forward(x),
        HostWeight::Int8(q) => q.forward(x),
    });
    let mut y = y;
    then(&mut y);
    Tensor::from_data(TensorData::new(y, [batch, len, w.d_out()]), &device)
}

/// `f` of `x`'s values (row-major f32): read in place from a contiguous f32 tensor of burn's
/// CPU backend (no copy, whoever else holds it), otherwise copied out.
pub fn with_host_values<const D: usize, R>(x: Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> R {
    if x.dtype() == DType::F32 {
        if let Ok(t) = x.clone().try_into_primitive::<burn_flex::Flex>() {
            if let Some(values) = t.as_slice::<f32>() {
                return f(values);
            }
        }
    }
    let data = x.into_data().convert::<f32>();
    f(data.as_slice::<f32>().expect("f32 values"))
}

impl Proj {
    /// A projection `[d_in] → [d_out]` (with a bias when `bias`) whose weights are
    /// zero-memory placeholders of the right shapes, to be filled from a checkpoint.
    pub fn placeholder(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Self {
        Proj {
            linear: Linear {
                weight: Param::from_tensor(
                    Tensor::<2>::zeros([1, 1], device).expand([d_in, d_out]),
                ),
                bias: bias
                    .then(|| Param::from_tensor(Tensor::<1>::zeros([1], device).expand([d_out]))),
            },
            lora: None,
            host: None,
        }
    }
}

/// Three projections of the same input (attention's queries, keys and values) `[b, len, d]`
/// → three `[b, len, d_out]`: on a GPU, for a few rows of plain f32 projections, one kernel for
/// all three; otherwise each projection on its own.
pub fn project3(x: Tensor<3>, projs: [&Proj; 3]) -> [Tensor<3>; 3] {
    #[cfg(feature = "gpu")]
    {
        let [b, len, d] = x.dims();
        if let [Some(q), Some(k), Some(v)] = projs.map(|p| p.plain_f32()) {
            let rows = x.clone().reshape([b * len, d]);
            let weights = [&q.0, &k.0, &v.0];
            let biases = [q.1.as_ref(), k.1.as_ref(), v.1.as_ref()];
            if let Some(out) = crate::ops::gpu::linear_rows3(&rows, weights, biases) {
                return out.map(|y| {
                    let [_, d_out] = y.dims();
                    y.reshape([b, len, d_out])
                });
            }
        }
    }
    projs.map(|p| p.forward(x.clone()))
}
