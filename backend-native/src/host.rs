//! What the native program lends the core for training on the CPU: rayon's threads for the
//! core's element-wise training ops ([`bartleby_core::ops::fused::use_host_parallel`]) and a system
//! BLAS for its matrix products ([`crate::blas`]).

use anyhow::Result;
use rayon::prelude::*;

/// Lends both; `blas` is a `BARTLEBY_BLAS` value. Returns what multiplies matrices.
pub fn lend(blas: &str) -> Result<String> {
    bartleby_core::ops::fused::use_host_parallel(|n, f| (0..n).into_par_iter().for_each(f));
    crate::blas::install_choice(blas)
}
