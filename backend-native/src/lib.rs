//! The native side of Bartleby: command line, files, hub downloads, devices.
//! Model math lives in `bartleby-core`; this crate only moves bytes in and out of it.

pub mod blas;
pub mod checkpoint_files;
pub mod cleanup;
pub mod cli;
pub mod commands;
pub mod dataset;
pub mod device;
pub mod evaluation;
pub mod generation_args;
pub mod host;
pub mod hub_upload;
pub mod input;
pub mod memory;
pub mod mlflow;
pub mod model_card;
pub mod model_files;
pub mod output;
pub mod plots;
pub mod progress;
pub mod scoring;
pub mod server;
pub mod summarizer;
pub mod tensorboard;
pub mod train_config;
