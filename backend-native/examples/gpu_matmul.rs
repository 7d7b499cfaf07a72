//! Times cubek's matmul kernels on the wgpu device for the shapes of a distilbart decoding step.
use bartleby_core::ops::gpu::{matmul_with, Kernel};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn main() {
    let device = Device::wgpu_options()
        .graphics_api(burn::tensor::wgpu::WgpuBackend::Vulkan)
        .init()
        .expect("wgpu");
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let only: Option<String> = std::env::var("ONLY").ok();
    // Dispatch cost: a chain of tiny element-wise kernels, then one read.
    let mut h = Tensor::<2>::random([1, 1024], Distribution::Normal(0.0, 1.0), &device);
    h.clone().into_data();
    for n in [1usize, 50, 200] {
        let t = Instant::now();
        for _ in 0..n {
            h = h + 1.0;
        }
        h.clone().into_data();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{n} adds [1x1024] + read: {ms:.1} ms ({:.2} ms each)",
            ms / n as f64
        );
    }
    let rand =
        |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    // (name, lhs, rhs)
    let table = rand([25133, 1024]);
    let h = rand([1, 1024]);
    let w = rand([1024, 1024]);
    let w_up = rand([4096, 1024]);
    let w_down = rand([1024, 4096]);
    let x200 = rand([200, 1024]);
    let cases: Vec<(&str, Tensor<2>, Tensor<2>)> = vec![
        // Weights held as [in, out] (contiguous along out).
        (
            "h·Wio     [1x1024]x[1024x1024]",
            h.clone(),
            rand([1024, 1024]),
        ),
        (
            "h·Wio_up  [1x1024]x[1024x4096]",
            h.clone(),
            rand([1024, 4096]),
        ),
        (
            "h·Tio     [1x1024]x[1024x25133]",
            h.clone(),
            rand([1024, 25133]),
        ),
        (
            "X4·Wio    [4x1024]x[1024x1024]",
            rand([4, 1024]),
            rand([1024, 1024]),
        ),
        (
            "X4·Tio    [4x1024]x[1024x25133]",
            rand([4, 1024]),
            rand([1024, 25133]),
        ),
        (
            "table·hT  [25133x1024]x[1024x1]",
            table.clone(),
            h.clone().transpose(),
        ),
        (
            "h·tableT  [1x1024]x[1024x25133]T",
            h.clone(),
            table.clone().transpose(),
        ),
        (
            "W·xT      [1024x1024]x[1024x1]",
            w.clone(),
            h.clone().transpose(),
        ),
        (
            "x·WT      [1x1024]x[1024x1024]T",
            h.clone(),
            w.clone().transpose(),
        ),
        (
            "Wup·xT    [4096x1024]x[1024x1]",
            w_up.clone(),
            h.clone().transpose(),
        ),
        (
            "x·WupT    [1x1024]x[1024x4096]T",
            h.clone(),
            w_up.clone().transpose(),
        ),
        (
            "W·X4T     [1024x1024]x[1024x4]",
            w.clone(),
            rand([4, 1024]).transpose(),
        ),
        (
            "W·X16T    [1024x1024]x[1024x16]",
            w.clone(),
            rand([16, 1024]).transpose(),
        ),
        (
            "W·X64T    [1024x1024]x[1024x64]",
            w.clone(),
            rand([64, 1024]).transpose(),
        ),
        (
            "table·X4T [25133x1024]x[1024x4]",
            table.clone(),
            rand([4, 1024]).transpose(),
        ),
        (
            "X·WT      [200x1024]x[1024x1024]T",
            x200.clone(),
            w.clone().transpose(),
        ),
        (
            "X·WupT    [200x1024]x[1024x4096]T",
            x200.clone(),
            w_up.clone().transpose(),
        ),
        (
            "X·WdownT  [200x4096]x[4096x1024]T",
            rand([200, 4096]),
            w_down.clone().transpose(),
        ),
    ];
    for (name, a, b) in cases {
        if let Some(o) = &only {
            if !name.contains(o.as_str()) {
                continue;
            }
        }
        let reference = a
            .clone()
            .matmul(b.clone())
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        for kernel in Kernel::ALL {
            if std::env::var("QUICK").is_ok()
                && !matches!(
                    kernel,
                    Kernel::Default | Kernel::Naive | Kernel::Blocked | Kernel::Dot
                )
            {
                continue;
            }
            let run = || matmul_with(a.clone(), b.clone(), kernel);
            match run() {
                Err(e) => {
                    println!(
                        "{name}  {kernel:?}: declined ({})",
                        e.chars().take(80).collect::<String>()
                    );
                    continue;
                }
                Ok(y) => {
                    let v = y.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
                    let err = v
                        .iter()
                        .zip(&reference)
                        .map(|(x, r)| (x - r).abs())
                        .fold(0f32, f32::max);
                    device.sync().unwrap();
                    let t = Instant::now();
                    for _ in 0..reps {
                        let _y = run().unwrap();
                        device.sync().unwrap();
                    }
                    let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
                    println!("{name}  {kernel:?}: {ms:9.2} ms  max|diff| {err:.2e}");
                }
            }
        }
    }
}
