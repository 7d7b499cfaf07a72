//! The native side of Bartleby: command line, files, hub downloads, devices.
//! Model math lives in `bartleby-core`; this crate only moves bytes in and out of it.

pub mod blas;
pub mod cli;
pub mod compare_cmd;
pub mod data_cmd;
pub mod dataset;
pub mod device;
pub mod eval_cmd;
pub mod export_cmd;
pub mod host;
pub mod input;
pub mod memory;
pub mod merge_cmd;
pub mod model_files;
pub mod output;
pub mod plots;
pub mod score_cmd;
pub mod summarize_cmd;
pub mod train_cmd;
