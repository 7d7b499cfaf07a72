//! Speed of the int8 products (`core/src/int8.rs`) on this CPU: a 4096 × 1024 weight (an FFN
//! projection of bart-large) against 1 to 4096 activation rows, and the machine's streaming
//! read bandwidth for scale. `cargo run --release -p bartleby-core --example int8_speed`
//! (`HOT=1`: 2 weights instead of 16, so they stay in cache: the kernel's own rate).
use bartleby_core::ops::int8::Int8Weight;
use std::time::Instant;
fn main() {
    let (d_out, d_in) = (4096usize, 1024usize);
    let mut s = 1u64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    let w: Vec<f32> = (0..d_out * d_in).map(|_| next()).collect();
    let layers: Vec<Int8Weight> = (0..16)
        .map(|_| Int8Weight::quantize(&w, d_out, d_in, 32).unwrap())
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
    for rows in [1usize, 4, 32, 200, 4096] {
        let x: Vec<f32> = (0..rows * d_in).map(|_| next()).collect();
        let t = Instant::now();
        let reps = (4000 / rows).clamp(1, 20);
        let hot = std::env::var("HOT").is_ok();
        let layers = if rows == 4096 || hot {
            &layers[..2]
        } else {
            &layers[..]
        };
        for _ in 0..reps {
            for l in layers {
                std::hint::black_box(l.forward(&x));
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let macs = (reps * layers.len() * rows * d_out * d_in) as f64;
        println!(
            "rows {rows}: {:.2} GMAC/s, {:.2} GB/s weights",
            macs / secs / 1e9,
            (reps * layers.len() * d_out * d_in) as f64 / secs / 1e9
        );
    }
}
