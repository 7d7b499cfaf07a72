//! The training-parity check of `train.rs` as `bartleby train` runs on the CPU: the products on
//! OpenBLAS where the system has it and the element-wise ops on rayon's threads
//! (backend-native/src/host.rs).
//! `tests/run.sh` installs OpenBLAS (Debian's libopenblas0-pthread).

#[path = "train_common.rs"]
mod train_common;

use burn::tensor::DType;
use burn::tensor::Device;
use train_common::{check_training, check_training_in};

#[test]
fn lora_training_on_openblas_matches_pytorch_peft() {
    openblas();
    check_training(&Device::flex(), 1e-3);
}

/// Mixed precision through the same host products (f16/bf16 operands widened to f32 for
/// OpenBLAS, the result rounded once), against the same fixtures and bounds as `train.rs`.
#[test]
fn lora_training_half_on_openblas_matches_pytorch_peft() {
    openblas();
    check_training_in(&Device::flex(), Some(DType::BF16), 1.5e-3, 2e-2, 1e-1);
    check_training_in(&Device::flex(), Some(DType::F16), 1e-3, 2e-3, 2e-2);
}

/// Installs OpenBLAS and the parallel hook as `train` does, once per process (the tests here
/// share it).
fn openblas() {
    static LENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let what = LENT.get_or_init(|| bartleby::host::lend("auto").unwrap());
    assert!(
        what.starts_with("OpenBLAS"),
        "needs OpenBLAS (apt install libopenblas0-pthread); got: {what}"
    );
}
