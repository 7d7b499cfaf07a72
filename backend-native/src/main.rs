//! `bartleby`: summarize dialogues with BART on CPU, Vulkan (wgpu) or CUDA.

fn main() -> std::process::ExitCode {
    bartleby::memory::keep_freed_memory();
    bartleby::cli::main()
}
