//! Allocator tuning. burn's CPU backend allocates a fresh buffer for nearly every tensor op, many
//! of them large (one attention-score tensor of a bart-large training step is 151 MB). With
//! glibc's defaults, buffers above the (adaptive) mmap threshold are mmapped and unmapped each
//! time, and freed heap tops are returned to the kernel, so the next op page-faults its memory in
//! again, zero-filled: a LoRA training step of bart-large spent a fifth to a quarter of its time
//! clearing pages (perf: `clear_page_erms`). Serving every allocation from the heap and never
//! trimming it removes that (docs/benchmarks.md). Peak memory does not change: the buffers are
//! reused, not added. (jemalloc was tried instead: with its defaults it still purged the large
//! buffers, and with purging off it fragmented — the step was slower either way.)

/// glibc: serve every allocation from the heap (no mmap, whatever the size) and never trim it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called once at start-up, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1); // as size_t: never
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

/// Peak resident memory of this process (Linux `VmHWM`), when known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
