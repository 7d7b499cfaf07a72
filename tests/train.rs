//! Training parity with PyTorch + PEFT (tools/reference/make_train_fixtures.py): the same tiny
//! model, the same initial LoRA weights and the same 80 real dialogues give the same collated
//! batches, a loss within 1e-3 (relative) at each of 20 AdamW steps, and the same final adapter.

#[path = "train_common.rs"]
mod train_common;

use bartleby_tests::*;
use burn::tensor::Device;
use train_common::check_training;

#[test]
fn lora_training_matches_pytorch_peft() {
    check_training(&Device::flex(), 1e-3);
}

/// The same 20 steps on wgpu (Vulkan; lavapipe in CI), when the `bartleby` crate is built with
/// its `wgpu` feature, as `tests/run.sh` does.
#[test]
fn lora_training_matches_pytorch_peft_wgpu() {
    let Some(device) = wgpu_device("lora_training_matches_pytorch_peft_wgpu") else {
        return;
    };
    // The loss and gradient norm keep the 1e-3 bound at every step (measured on lavapipe: loss
    // 2e-6, grad norm 3e-4); the final adapter gets 1e-2 of its scale (measured 5.6e-3; flex:
    // 3.7e-6): the GPU sums in another order, and AdamW's normalized updates turn rounding in
    // near-zero gradients into ±lr steps. A wrong gradient moves it by the order of the scale.
    check_training(&device, 1e-2);
}
