//! The training-parity check of `train.rs` as `bartleby train` runs on the CPU: the products on
//! OpenBLAS where the system has it and the element-wise ops on rayon's threads
//! (backend-native/src/host.rs).
//! `tests/run.sh` installs OpenBLAS (Debian's libopenblas0-pthread).

#[path = "train_common.rs"]
mod train_common;

use burn::tensor::Device;
use train_common::check_training;

#[test]
fn lora_training_on_openblas_matches_pytorch_peft() {
    let what = bartleby::host::lend("auto").unwrap();
    assert!(
        what.starts_with("OpenBLAS"),
        "needs OpenBLAS (apt install libopenblas0-pthread); got: {what}"
    );
    check_training(&Device::flex(), 1e-3);
}
