//! One module per subcommand: its arguments (clap) and its `run`. Commands never use each other;
//! what several of them share lives in the crate's other modules (`summarizer`, `scoring`,
//! `generation_args`, `checkpoint_files`, `input`, `output`, `progress`, ...).

pub mod benchmark;
pub mod card;
pub mod compare;
pub mod data;
pub mod eval;
pub mod export;
pub mod merge;
pub mod plan;
pub mod push;
pub mod score;
pub mod serve;
pub mod summarize;
pub mod train;
