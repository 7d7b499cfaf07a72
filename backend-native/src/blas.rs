//! A system BLAS for the CPU training step, loaded at run time (no link-time dependency: the
//! same binary runs where none is installed).
//!
//! A LoRA step of bart-large spends about 70 % of its time multiplying activations by frozen
//! weights and the tied embedding. burn's CPU matmul (the `gemm` crate) reaches about two thirds
//! of OpenBLAS' rate on those shapes (docs/benchmarks.md), so on the CPU device `bartleby train`
//! hands those products to OpenBLAS when the system has it (Debian/Ubuntu: `libopenblas0`),
//! through [`bartleby_core::ops::fused::use_host_sgemm`]. OpenBLAS runs single-threaded inside each of
//! rayon's threads (the rows split between them), so burn's thread pool and OpenBLAS' never
//! compete for the cores.
//!
//! `BARTLEBY_BLAS` chooses: unset or `auto` (OpenBLAS if found, else burn's matmul), `off`
//! (burn's matmul), or the path of a shared library exporting `cblas_sgemm`.

use anyhow::{bail, Context, Result};
use bartleby_core::ops::fused::{Operand, Sgemm};
use rayon::prelude::*;
use std::ffi::{c_char, c_int, CStr};
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// CBLAS' `cblas_sgemm` (LP64: 32-bit integers).
type CblasSgemm = unsafe extern "C" fn(
    layout: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
);

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// Fewer rows than this per thread are not worth a split.
const MIN_ROWS_PER_THREAD: usize = 64;

struct Blas {
    /// Kept loaded for the life of the process (`sgemm` points into it).
    _lib: libloading::Library,
    sgemm: CblasSgemm,
    /// The library was set to one thread: calls may run side by side on rayon's threads.
    single_threaded: bool,
}

static BLAS: OnceLock<Blas> = OnceLock::new();

/// Libraries tried, in order, when `BARTLEBY_BLAS` names none.
const CANDIDATES: &[&str] = &[
    "libopenblas.so.0",
    "libopenblas.so",
    "libopenblas.dylib",
    "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
    "/usr/local/opt/openblas/lib/libopenblas.dylib",
];

/// Loads the BLAS that `choice` (a `BARTLEBY_BLAS` value) asks for, once per process, and
/// routes the CPU training step's products through it. Returns what multiplies matrices.
pub fn install_choice(choice: &str) -> Result<String> {
    let (blas, what) = match choice {
        "off" | "none" => return Ok("burn's matmul (BARTLEBY_BLAS=off)".into()),
        "" | "auto" => match CANDIDATES.iter().find_map(|name| load(name).ok()) {
            Some(found) => found,
            None => {
                return Ok(
                    "burn's matmul (no OpenBLAS found; install libopenblas0 for a faster step)"
                        .into(),
                )
            }
        },
        path => load(path).with_context(|| format!("BARTLEBY_BLAS={path}"))?,
    };
    if BLAS.set(blas).is_err() {
        bail!("a BLAS is already installed in this process");
    }
    // SAFETY: `host_sgemm` writes every element of `c` (cblas_sgemm with beta = 0).
    unsafe { bartleby_core::ops::fused::use_host_sgemm(host_sgemm) };
    Ok(what)
}

/// Opens `name` and finds `cblas_sgemm`; sets OpenBLAS (or BLIS) to one thread where it can.
fn load(name: &str) -> Result<(Blas, String)> {
    // SAFETY: loading a BLAS runs its initialisers, which only set up its own state.
    let lib = unsafe { libloading::Library::new(name) }
        .map_err(|e| anyhow::anyhow!("cannot load {name}: {e}"))?;
    // SAFETY: the symbols are looked up with the C signatures the BLAS interfaces define.
    unsafe {
        let sgemm = *lib
            .get::<CblasSgemm>(b"cblas_sgemm\0")
            .map_err(|_| anyhow::anyhow!("{name} does not export cblas_sgemm"))?;
        let mut single_threaded = false;
        let mut what = format!("BLAS ({name})");
        if let Ok(set) = lib.get::<unsafe extern "C" fn(c_int)>(b"openblas_set_num_threads\0") {
            set(1);
            single_threaded = true;
            if let Ok(config) =
                lib.get::<unsafe extern "C" fn() -> *const c_char>(b"openblas_get_config\0")
            {
                let config = CStr::from_ptr(config()).to_string_lossy().into_owned();
                what = format!("{} ({name})", config.trim());
            }
        } else if let Ok(set) =
            lib.get::<unsafe extern "C" fn(i64)>(b"bli_thread_set_num_threads\0")
        {
            set(1);
            single_threaded = true;
        }
        let blas = Blas {
            sgemm,
            single_threaded,
            _lib: lib,
        };
        check(&blas).with_context(|| format!("{name} computes a wrong product"))?;
        Ok((blas, what))
    }
}

/// A 3 × 2 × 4 product in all four layouts, against the textbook loop: a library that loads
/// but computes something else (an ILP64 build under an LP64 name) is refused before use.
fn check(blas: &Blas) -> Result<()> {
    let (m, n, k) = (3, 4, 2);
    let a: Vec<f32> = (0..m * k).map(|i| i as f32 + 1.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i as f32) * 0.5 - 1.0).collect();
    for a_trans in [false, true] {
        for b_trans in [false, true] {
            let (lda, ldb) = (if a_trans { m } else { k }, if b_trans { k } else { n });
            let a_at = |i: usize, p: usize| if a_trans { a[p * m + i] } else { a[i * k + p] };
            let b_at = |p: usize, j: usize| if b_trans { b[j * k + p] } else { b[p * n + j] };
            let mut c = vec![MaybeUninit::<f32>::uninit(); m * n];
            let op = |data, ld, trans| Mat { data, ld, trans };
            call(
                blas,
                m,
                n,
                k,
                op(&a, lda, a_trans),
                op(&b, ldb, b_trans),
                &mut c,
            );
            // SAFETY: sgemm with beta = 0 wrote every element.
            let c: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
            for i in 0..m {
                for j in 0..n {
                    let expected: f32 = (0..k).map(|p| a_at(i, p) * b_at(p, j)).sum();
                    if (c[i * n + j] - expected).abs() > 1e-4 {
                        bail!("c[{i}][{j}] = {} instead of {expected}", c[i * n + j]);
                    }
                }
            }
        }
    }
    Ok(())
}

/// One matrix of an operand: its values from the first, leading dimension, transposed or not.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    ld: usize,
    trans: bool,
}

impl<'a> Mat<'a> {
    /// Whether `data` holds a `[rows, cols]` matrix (as read) with this layout.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        let (outer, inner) = if self.trans {
            (cols, rows)
        } else {
            (rows, cols)
        };
        self.ld >= inner.max(1) && self.data.len() >= (outer - 1) * self.ld + inner
    }

    /// Rows `from..` of the matrix as read.
    fn rows_from(self, from: usize) -> Self {
        let skip = if self.trans { from } else { from * self.ld };
        Self {
            data: &self.data[skip..],
            ..self
        }
    }
}

/// `c = op(a) · op(b)` with the library, on the calling thread.
fn call(
    blas: &Blas,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [MaybeUninit<f32>],
) {
    assert!(
        m > 0 && n > 0 && k > 0 && a.fits(m, k) && b.fits(k, n) && c.len() >= m * n,
        "sgemm operands do not hold {m}×{k} · {k}×{n}"
    );
    let dim = |x: usize| c_int::try_from(x).expect("matrix dimension over 2^31");
    let trans = |t: bool| if t { TRANS } else { NO_TRANS };
    // SAFETY: the operands hold the matrices they describe (checked above).
    unsafe {
        (blas.sgemm)(
            ROW_MAJOR,
            trans(a.trans),
            trans(b.trans),
            dim(m),
            dim(n),
            dim(k),
            1.0,
            a.data.as_ptr(),
            dim(a.ld),
            b.data.as_ptr(),
            dim(b.ld),
            0.0,
            c.as_mut_ptr().cast::<f32>(),
            dim(n),
        )
    }
}

/// The routine handed to the core: a batch is split between rayon's threads matrix by matrix,
/// a single product by rows.
fn host_sgemm(g: Sgemm<'_>) {
    let blas = BLAS.get().expect("installed before use");
    let threads = if blas.single_threaded {
        rayon::current_num_threads()
    } else {
        1
    };
    let (m, n, k) = (g.m, g.n, g.k);
    fn mat<'a>(o: &Operand<'a>, offset: usize) -> Mat<'a> {
        Mat {
            data: &o.data[offset..],
            ld: o.ld,
            trans: o.trans,
        }
    }
    let pairs: Vec<(usize, usize)> =
        g.a.offsets
            .iter()
            .copied()
            .zip(g.b.offsets.iter().copied())
            .collect();
    if threads > 1 && pairs.len() >= threads {
        g.c.par_chunks_mut(m * n)
            .zip(pairs.par_iter())
            .for_each(|(c, &(oa, ob))| call(blas, m, n, k, mat(&g.a, oa), mat(&g.b, ob), c));
        return;
    }
    let rows = m.div_ceil(threads).max(MIN_ROWS_PER_THREAD);
    for (c, &(oa, ob)) in g.c.chunks_mut(m * n).zip(&pairs) {
        let (a, b) = (mat(&g.a, oa), mat(&g.b, ob));
        if rows >= m {
            call(blas, m, n, k, a, b, c);
        } else {
            c.par_chunks_mut(rows * n)
                .enumerate()
                .for_each(|(i, c)| call(blas, c.len() / n, n, k, a.rows_from(i * rows), b, c));
        }
    }
}
