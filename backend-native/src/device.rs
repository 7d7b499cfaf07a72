//! Picking the burn device from `--device`.

use anyhow::{bail, Result};
use bartleby_core::checkpoint::LoadOptions;
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

/// WebGPU's default (and guaranteed) `maxStorageBufferBindingSize`: on wgpu, a tensor larger
/// than this (the embedding table of bart-large: 206 MB) is held in parts under it, as in the
/// browser; some Vulkan drivers (lavapipe) refuse larger buffers.
const WGPU_MAX_TENSOR_BYTES: u64 = 128 << 20;

/// A device and how model weights are held on it (handed to every load; no global state).
#[derive(Debug, Clone)]
pub struct Target {
    pub device: Device,
    pub options: LoadOptions,
}

pub fn init(arg: DeviceArg) -> Result<Target> {
    init_with(arg, false, false)
}

/// [`init`] for generating: on the CPU, q8/q4 bundles are computed in int8
/// ([`LoadOptions::int8_matmul`]) and f32/f16/bf16 checkpoints held on the host for the CPU's
/// own products ([`LoadOptions::host_weights`]) unless `f32_matmul` (burn's f32 matrix product).
pub fn init_inference(arg: DeviceArg, f32_matmul: bool) -> Result<Target> {
    let host = arg == DeviceArg::Cpu && !f32_matmul;
    init_with(arg, host, host)
}

/// [`init`] for reading a model to write it out (`export`): on the CPU its weights are held as
/// stored ([`LoadOptions::host_weights`]: a bf16 checkpoint stays bf16 — 7.6 GB for Phi-3-mini,
/// not 15 GB of f32) and written out one tensor at a time; a q8/q4 source is read as its f32
/// values, as before.
pub fn init_export(arg: DeviceArg) -> Result<Target> {
    init_with(arg, false, arg == DeviceArg::Cpu)
}

fn init_with(arg: DeviceArg, int8_matmul: bool, host_weights: bool) -> Result<Target> {
    if host_weights {
        // The host products (q8/q4 bundles, f32/f16/bf16 checkpoints on the CPU) split their
        // outputs over rayon's threads; the bits do not depend on the split
        // (bartleby_core::ops::int8, bartleby_core::ops::dense).
        bartleby_core::ops::int8::set_parallel(bartleby_core::ops::int8::Parallel {
            threads: rayon::current_num_threads(),
            run: |n, job| {
                use rayon::prelude::*;
                (0..n).into_par_iter().for_each(job);
            },
        });
    }
    let device = match arg {
        DeviceArg::Cpu => Device::flex(),
        DeviceArg::Wgpu => wgpu()?,
        DeviceArg::Cuda => cuda()?,
    };
    let max_tensor_bytes = (arg == DeviceArg::Wgpu).then_some(WGPU_MAX_TENSOR_BYTES);
    let options = LoadOptions {
        max_tensor_bytes,
        int8_matmul,
        host_weights,
    };
    Ok(Target { device, options })
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device> {
    use burn::tensor::wgpu::WgpuBackend;
    let api = match std::env::var("BARTLEBY_WGPU_API").as_deref() {
        Ok("vulkan") | Err(_) => WgpuBackend::Vulkan,
        Ok("auto") => WgpuBackend::Auto,
        Ok(other) => bail!("BARTLEBY_WGPU_API={other:?}: expected vulkan or auto"),
    };
    // What the web app does on a software adapter (SwiftShader): encoding's many-row products on
    // the register-blocked kernel. A knob for measuring the browser's kernels natively.
    match std::env::var("BARTLEBY_BLOCKED_MATMUL").as_deref() {
        Ok("1") => blocked_matmul(true),
        Ok("0") | Err(_) => {}
        Ok(other) => bail!("BARTLEBY_BLOCKED_MATMUL={other:?}: expected 0 or 1"),
    }
    quiet_wayland();
    Device::wgpu_options()
        .graphics_api(api)
        .init()
        .map_err(|e| anyhow::anyhow!("--device wgpu: no usable GPU adapter ({e:?})"))
}

/// Vulkan's loader opens the Wayland client library, which prints "XDG_RUNTIME_DIR is invalid or
/// not set" on stderr (three times) on a headless machine, although nothing is wrong. Without a
/// valid one, point it at a private 0700 folder under the temp dir before the loader starts.
#[cfg(feature = "wgpu")]
fn quiet_wayland() {
    let valid =
        std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir());
    if valid {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let uid = unsafe { libc::getuid() };
        let dir = std::env::temp_dir().join(format!("bartleby-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let ours = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
        if ours {
            // SAFETY: set once during start-up, before the Vulkan loader's threads exist.
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}

/// Whether encoding's many-row products and attention on a GPU device use the register-blocked
/// kernel the web app picks for a software adapter (`bartleby_core::ops::gpu`); a GPU-less build has
/// nothing to switch.
pub fn blocked_matmul(on: bool) {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    bartleby_core::ops::gpu::use_blocked_products(on);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    let _ = on;
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
