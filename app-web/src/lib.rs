//! The in-browser app. The model runs in a Web Worker (`src/bin/worker.rs`) on the same
//! `bartleby-core` code as the CLI; the page (`src/main.rs`, Leptos) reaches it only through the
//! small JS API in `public/bartleby.js` (`window.bartleby`), which embedders use too.
//!
//! What is plain Rust here (parsing the files `bartleby eval` / `compare` / `train` write) is
//! tested natively; the views are compiled for wasm32 only.

pub mod dashboard;
#[cfg(target_arch = "wasm32")]
pub mod ui;
