//! Placeholder for the in-browser app (Leptos CSR, built with trunk). It links the same
//! `bartleby-core` the CLI uses; the UI, worker and WebGPU backend come with the web issue.

fn main() {
    let config = bartleby_core::GenerationConfig::default();
    println!(
        "bartleby-web placeholder; default num_beams = {}",
        config.num_beams
    );
}
