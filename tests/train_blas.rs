//! The training-parity check of `train.rs` with the frozen-weight products on OpenBLAS, as
//! `bartleby train` runs them on the CPU where the system has it (backend-native/src/blas.rs).
//! `tests/run.sh` installs OpenBLAS (Debian's libopenblas0-pthread).

#[path = "train_common.rs"]
mod train_common;

use burn::tensor::Device;
use train_common::check_training;

#[test]
fn lora_training_on_openblas_matches_pytorch_peft() {
    let what = bartleby::blas::install_choice("auto").unwrap();
    assert!(
        what.starts_with("OpenBLAS"),
        "needs OpenBLAS (apt install libopenblas0-pthread); got: {what}"
    );
    check_training(&Device::flex(), 1e-3);
}
