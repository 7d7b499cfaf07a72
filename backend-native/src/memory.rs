//! Allocator tuning. burn's CPU backend allocates a fresh buffer for nearly every tensor op; with
//! glibc's defaults, buffers above the (adaptive) mmap threshold are mmapped and unmapped each
//! time, and freed heap tops are returned to the kernel, so the next op page-faults its memory in
//! again, zero-filled. A LoRA training step of bart-large spent a quarter of its time clearing
//! pages (perf: `clear_page_erms`); keeping freed memory in the process made it ~25% faster
//! (docs/benchmarks.md). Peak memory does not change: the buffers are reused, not added.

/// glibc: serve allocations up to 32 MiB (glibc's maximum) from the heap and never trim it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called once at start-up, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1); // as size_t: never
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
