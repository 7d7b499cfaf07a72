//! Speed of the host products (`core/src/ops/dense.rs`) on this CPU, one thread, beside the
//! machine's streaming read rate and (f32) burn's matrix product as the layers call it
//! (`x Wᵀ`: `W xᵀ` for up to 64 rows, `x W` past them).
//!   RAYON_NUM_THREADS=1 cargo run --release -p bartleby-core --example dense_speed
//! bf16: 16 weights of 8192 × 2048 (Llama-3.2-1B's MLP up/gate shape, 512 MB in all, past any
//! cache) against 1..256 activation rows. f32: bart-large's 1024 × 1024 and 4096 × 1024
//! projections (16 of each, 320 MB) against 1..4096 rows.
use bartleby_core::ops::dense::{F32Weight, Half, HalfWeight};
use burn::tensor::{Device, Tensor, TensorData};
use std::time::Instant;

fn main() {
    let mut s = 1u64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    let big: Vec<u64> = vec![1; 64 << 20];
    for _ in 0..2 {
        let t = Instant::now();
        let sum: u64 = big.iter().fold(0u64, |a, &v| a ^ v);
        std::hint::black_box(sum);
        println!(
            "stream read: {:.2} GB/s",
            (big.len() * 8) as f64 / t.elapsed().as_secs_f64() / 1e9
        );
    }
    drop(big);
    let only = std::env::args().nth(1);
    if only.as_deref() != Some("f32") {
        let (d_out, d_in) = (8192usize, 2048usize);
        let bits: Vec<u16> = (0..d_out * d_in)
            .map(|_| half::bf16::from_f32(next()).to_bits())
            .collect();
        let layers: Vec<HalfWeight> = (0..16)
            .map(|_| HalfWeight::new(bits.clone(), Half::Bf16, d_out, d_in).unwrap())
            .collect();
        for rows in [1usize, 4, 16, 64, 128, 256] {
            let x: Vec<f32> = (0..rows * d_in).map(|_| next()).collect();
            let t = Instant::now();
            let reps = 2;
            for _ in 0..reps {
                for l in &layers {
                    std::hint::black_box(l.forward(&x));
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let macs = (reps * 16 * rows * d_out * d_in) as f64;
            println!(
                "bf16 rows {rows}: {:.2} GFLOP/s, {:.2} GB/s of bf16 weights",
                2.0 * macs / secs / 1e9,
                (reps * 16 * d_out * d_in * 2) as f64 / secs / 1e9
            );
        }
    }
    let device = Device::flex();
    for (d_out, d_in) in [(1024usize, 1024usize), (4096, 1024)] {
        let n = 16;
        let values: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..d_out * d_in).map(|_| next()).collect())
            .collect();
        let host: Vec<F32Weight> = values
            .iter()
            .map(|v| F32Weight::new(v, d_out, d_in).unwrap())
            .collect();
        let burn: Vec<Tensor<2>> = values
            .iter()
            .map(|v| Tensor::from_data(TensorData::new(v.clone(), [d_out, d_in]), &device))
            .collect();
        for rows in [1usize, 4, 32, 64, 128, 256, 512, 4096] {
            let x: Vec<f32> = (0..rows * d_in).map(|_| next()).collect();
            let xt: Tensor<2> =
                Tensor::from_data(TensorData::new(x.clone(), [rows, d_in]), &device);
            let reps = if rows >= 512 { 1 } else { 3 };
            let macs = (reps * n * rows * d_out * d_in) as f64;
            let t = Instant::now();
            for _ in 0..reps {
                for l in &host {
                    std::hint::black_box(l.forward(&x));
                }
            }
            let kernel = 2.0 * macs / t.elapsed().as_secs_f64() / 1e9;
            let t = Instant::now();
            for _ in 0..reps {
                for w in &burn {
                    let y = if rows <= 64 {
                        w.clone().matmul(xt.clone().transpose()).transpose()
                    } else {
                        xt.clone().matmul(w.clone().transpose())
                    };
                    std::hint::black_box(y.into_data());
                }
            }
            let gemm = 2.0 * macs / t.elapsed().as_secs_f64() / 1e9;
            println!(
                "f32 [{d_out}, {d_in}] rows {rows}: host {kernel:.1} GFLOP/s ({:.1} GB/s), burn {gemm:.1} GFLOP/s",
                kernel / 2.0 / rows as f64 * 4.0
            );
        }
    }
}
