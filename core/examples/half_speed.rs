//! Speed of the half-precision products (`core/src/ops/half.rs`) on this CPU, one thread: 16
//! bf16 weights of 8192 × 2048 (Llama-3.2-1B's MLP up/gate shape, 512 MB in all, past any
//! cache) against 1, 4, 16 and 64 activation rows, beside the machine's streaming read rate.
//! `cargo run --release -p bartleby-core --example half_speed`
use bartleby_core::ops::half::{Half, HalfWeight};
use std::time::Instant;
fn main() {
    let (d_out, d_in) = (8192usize, 2048usize);
    let mut s = 1u64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    let bits: Vec<u16> = (0..d_out * d_in)
        .map(|_| half::bf16::from_f32(next()).to_bits())
        .collect();
    let layers: Vec<HalfWeight> = (0..16)
        .map(|_| HalfWeight::new(bits.clone(), Half::Bf16, d_out, d_in).unwrap())
        .collect();
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
            "rows {rows}: {:.2} GFLOP/s, {:.2} GB/s of bf16 weights",
            2.0 * macs / secs / 1e9,
            (reps * 16 * d_out * d_in * 2) as f64 / secs / 1e9
        );
    }
}
