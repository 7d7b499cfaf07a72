//! Picking the burn device from `--device`.

use anyhow::{bail, Result};
use burn::tensor::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// burn's pure-Rust CPU backend (flex): always available.
    Cpu,
    /// Vulkan/Metal/DX12 through wgpu (build with `--features wgpu`).
    Wgpu,
    /// NVIDIA CUDA (build with `--features cuda`; needs network access at build time).
    Cuda,
}

/// Whether this build includes the wgpu backend.
pub const WGPU_BUILT: bool = cfg!(feature = "wgpu");

pub fn init(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::flex()),
        DeviceArg::Wgpu => wgpu(),
        DeviceArg::Cuda => cuda(),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device> {
    use burn::tensor::wgpu::WgpuBackend;
    let api = match std::env::var("BARTLEBY_WGPU_API").as_deref() {
        Ok("vulkan") | Err(_) => WgpuBackend::Vulkan,
        Ok("auto") => WgpuBackend::Auto,
        Ok(other) => bail!("BARTLEBY_WGPU_API={other:?}: expected vulkan or auto"),
    };
    Device::wgpu_options()
        .graphics_api(api)
        .init()
        .map_err(|e| anyhow::anyhow!("--device wgpu: no usable GPU adapter ({e:?})"))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device> {
    bail!("--device wgpu: this binary was built without the `wgpu` feature (cargo build --release --features wgpu)")
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
    bail!("--device cuda: this binary was built without the `cuda` feature (cargo build --release --features cuda)")
}
