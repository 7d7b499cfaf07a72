//! bartleby-core inside the browser on WebGPU (wasm-bindgen-test-runner + chromedriver, run by
//! tests/run.sh): the tiny fixture models' (BART and T5) encoder states and logits match transformers' within
//! 1e-4 and the parity fixture's generation cases give identical ids (all of them on the CPU, three
//! padded-batch cases on WebGPU, which SwiftShader runs slowly) — the same checks as
//! tests/parity.rs natively, with asynchronous reads as a browser requires.
#![cfg(target_arch = "wasm32")]

use bartleby_core::checkpoint::LoadOptions;
use bartleby_core::generate::pad_like_hf;
use bartleby_core::pipeline::{ids_tensor, ModelBytes, NamedBytes, TokenizerBytes};
use bartleby_core::Summarizer;
use burn::tensor::Device;
use serde_json::Value;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const TOL: f32 = 1e-4;
/// A fixture model's files and its parity fixture, built into the test.
struct Fixture {
    config: &'static [u8],
    generation: &'static [u8],
    weights: &'static [u8],
    tokenizer: &'static [u8],
    tokenizer_config: &'static [u8],
    parity: &'static [u8],
    /// The `--long chunk` reference (tools/reference/make_long_fixtures.py).
    long: &'static [u8],
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            config: include_bytes!(concat!(
                "../../tests/fixtures/models/",
                $name,
                "/config.json"
            )),
            generation: include_bytes!(concat!(
                "../../tests/fixtures/models/",
                $name,
                "/generation_config.json"
            )),
            weights: include_bytes!(concat!(
                "../../tests/fixtures/models/",
                $name,
                "/model.safetensors"
            )),
            tokenizer: include_bytes!(concat!(
                "../../tests/fixtures/models/",
                $name,
                "/tokenizer.json"
            )),
            tokenizer_config: include_bytes!(concat!(
                "../../tests/fixtures/models/",
                $name,
                "/tokenizer_config.json"
            )),
            parity: include_bytes!(concat!("../../tests/fixtures/parity/", $name, ".json")),
            long: include_bytes!(concat!("../../tests/fixtures/long/", $name, ".json")),
        }
    };
}

const BART: Fixture = fixture!("tiny-gelu");
/// T5 (relu, tied head, relative position buckets, the "summarize: " prefix).
const T5: Fixture = fixture!("t5-relu-tied");

fn rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn flat(v: &Value, out: &mut Vec<f32>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
        x => out.push(x.as_f64().unwrap() as f32),
    }
}

/// A WebGPU tensor's values, read asynchronously.
async fn values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data_async()
        .await
        .unwrap()
        .try_to_vec::<f32>()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The fixture model through the core's one assembler, as the web worker loads a bundle.
async fn model(fx: &Fixture, device: &Device) -> Summarizer {
    let named = |name, bytes| NamedBytes { name, bytes };
    let files = ModelBytes {
        config: named("config.json", fx.config),
        generation_config: Some(named("generation_config.json", fx.generation)),
        weights: vec![named("model.safetensors", fx.weights)],
        tokenizer: TokenizerBytes::Json(named("tokenizer.json", fx.tokenizer)),
        tokenizer_config: Some(fx.tokenizer_config),
        chat_template: None,
    };
    Summarizer::assemble(&files, device, LoadOptions::default(), &mut |_| {})
        .unwrap()
        .0
}

/// `all_cases`: every generation case of the fixture; otherwise (WebGPU on SwiftShader, slow) the
/// padded-batch cases of greedy, beam search and beam search with two returned sequences.
async fn check(fixture: &Fixture, device: Device, all_cases: bool) {
    let fx: Value = serde_json::from_slice(fixture.parity).unwrap();
    let s = model(fixture, &device).await;
    let ids = rows(&fx["batch_input_ids"]);
    let mask = rows(&fx["batch_attention_mask"]);
    let dec = rows(&fx["decoder_input_ids"]);
    let (encoded, logits) = s.model.forward(
        ids_tensor(&ids, &device),
        ids_tensor(&mask, &device),
        ids_tensor(&dec, &device),
    );
    let mut expected = Vec::new();
    flat(&fx["encoder_last_hidden_state"], &mut expected);
    let ours = encoded
        .hidden
        .into_data_async()
        .await
        .unwrap()
        .try_to_vec::<f32>()
        .unwrap();
    let d = max_diff(&ours, &expected);
    assert!(d <= TOL, "encoder states differ by {d}");
    expected.clear();
    flat(&fx["logits"], &mut expected);
    let ours = logits
        .into_data_async()
        .await
        .unwrap()
        .try_to_vec::<f32>()
        .unwrap();
    let d = max_diff(&ours, &expected);
    assert!(d <= TOL, "logits differ by {d}");
    web_sys_log(&format!("logits max abs diff {d:e}"));

    let input_ids = rows(&fx["input_ids"]);
    for case in fx["generations"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let batched = case["batch_texts_index"].as_array().unwrap().len() > 1;
        let subset = ["a_greedy", "c_beam", "e_beam_never_two_returns"].contains(&name) && batched;
        if !all_cases && !subset {
            continue;
        }
        let mut kwargs = case["kwargs"].as_object().unwrap().clone();
        kwargs.remove("do_sample");
        kwargs.retain(|k, _| !k.starts_with('_'));
        let cfg = s.generation.with_overrides(&Value::Object(kwargs)).unwrap();
        let idx: Vec<usize> = case["batch_texts_index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as usize)
            .collect();
        let (i, m) = if idx.len() == 1 {
            let row = input_ids[idx[0]].clone();
            let n = row.len();
            (vec![row], vec![vec![1; n]])
        } else {
            (ids.clone(), mask.clone())
        };
        let seqs = s
            .generate_ids_async(&i, &m, &cfg, &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(
            pad_like_hf(&seqs, cfg.hf_output_pad_token_id()),
            rows(&case["sequences"]),
            "generation {}",
            case["name"]
        );
    }
}

fn web_sys_log(s: &str) {
    web_sys::console::log_1(&s.into());
}

thread_local! {
    static WEBGPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
}

/// The WebGPU device, one per page: wgpu's device service is initialised once (several tests
/// share it).
async fn webgpu() -> Device {
    if let Some(device) = WEBGPU.with(|d| d.borrow().clone()) {
        return device;
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .expect("a WebGPU adapter");
    WEBGPU.with(|d| *d.borrow_mut() = Some(device.clone()));
    device
}

#[wasm_bindgen_test]
async fn parity_on_webgpu() {
    check(&BART, webgpu().await, false).await;
}

#[wasm_bindgen_test]
async fn parity_on_cpu_wasm() {
    check(&BART, Device::flex(), true).await;
}

#[wasm_bindgen_test]
async fn t5_parity_on_webgpu() {
    check(&T5, webgpu().await, false).await;
}

#[wasm_bindgen_test]
async fn t5_parity_on_cpu_wasm() {
    check(&T5, Device::flex(), true).await;
}

/// `--long chunk` in the browser: the windows of a DialogSum dialogue longer than the window,
/// summarized level by level, give the reference's ids (as natively: tests/long.rs), and the
/// progress events name each level. `cases`: which text indices to run.
async fn check_long(fixture: &Fixture, device: Device, cases: &[u64]) {
    use bartleby_core::{LongEvent, LongMode, LongOptions};
    let fx: Value = serde_json::from_slice(fixture.long).unwrap();
    let s = model(fixture, &device).await;
    let (gen, _) = s.summarization_generation().unwrap();
    let max_input = fx["max_input_tokens"].as_u64().unwrap() as usize;
    let long = LongOptions {
        mode: LongMode::Chunk,
        overlap_tokens: 0,
        partial_max_new_tokens: Some(fx["partial_max_new_tokens"].as_u64().unwrap() as usize),
    };
    for &i in cases {
        let case = fx["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["text_index"] == i && c["overlap_tokens"] == 0)
            .unwrap();
        let text = fx["texts"][i as usize].as_str().unwrap();
        let mut levels_seen = std::collections::BTreeSet::new();
        let out = s
            .summarize_long_async(&[text], &gen, max_input, &long, 8, &mut |e| {
                if let LongEvent::Windows { level, .. } = e {
                    levels_seen.insert(level);
                }
            })
            .await
            .unwrap();
        let (summaries, info) = &out[0];
        let expected: Vec<u32> = case["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(summaries[0].token_ids, expected, "text {i}");
        assert_eq!(info.levels as u64, case["levels"].as_u64().unwrap());
        assert_eq!(levels_seen.len(), info.levels, "a progress event per level");
    }
}

#[wasm_bindgen_test]
async fn long_chunking_on_cpu_wasm() {
    check_long(&BART, Device::flex(), &[1, 2]).await;
    check_long(&T5, Device::flex(), &[1]).await;
}

#[wasm_bindgen_test]
async fn long_chunking_on_webgpu() {
    check_long(&BART, webgpu().await, &[1]).await;
}

/// The wasm SIMD128 int8 kernel (q8/q4 bundles on the CPU path) gives the same bits as the
/// same operations one output at a time, which is what native `bartleby summarize` computes
/// where it has no such kernel: several shapes, blocks the kernel takes (multiples of 8) and
/// one it leaves to the scalar path, output counts that are not multiples of 4.
#[wasm_bindgen_test]
fn int8_kernel_is_bit_exact() {
    use bartleby_core::ops::int8::Int8Weight;
    let mut s = 7u64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    for (d_out, d_in, block, rows) in [
        (13, 64, 32, 3),
        (8, 96, 8, 1),
        (6, 1024, 1024, 2),
        (9, 12, 4, 4),
        // Encoding's many rows (operands widened to i16 first), an odd count.
        (12, 64, 16, 13),
    ] {
        let q: Vec<i8> = (0..d_out * d_in).map(|_| (next() * 127.0) as i8).collect();
        let scales: Vec<f32> = (0..d_out * d_in / block)
            .map(|_| next().abs() * 0.02 + 1e-4)
            .collect();
        let bias: Vec<f32> = (0..d_out).map(|_| next()).collect();
        let x: Vec<f32> = (0..rows * d_in).map(|_| next() * 5.0).collect();
        let w = Int8Weight::new(q, scales, d_out, d_in)
            .unwrap()
            .with_bias(bias)
            .unwrap();
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(
            bits(w.forward(&x)),
            bits(w.forward_scalar(&x)),
            "[{d_out}, {d_in}] block {block}"
        );
    }
}

/// Decoding's products on WebGPU (a weight `[out, in]` times at most `DOT_ROWS` rows) go to
/// cubek's naive kernel (core/src/gpu.rs), with burn's tiled kernel's values up to f32
/// summation order; more rows, or tensors on the CPU, are left to burn's matmul.
#[wasm_bindgen_test]
async fn decoding_products_use_the_naive_kernel() {
    use bartleby_core::ops::gpu::{weight_times, DOT_ROWS};
    use burn::tensor::{Distribution, Tensor};
    let device = webgpu().await;
    let normal = Distribution::Normal(0.0, 1.0);
    // Both kernels: naive, and blocked (what a software adapter gets).
    let cases = [(37, 64, 1), (50, 24, 4), (13, 1030, DOT_ROWS)];
    for (d_out, d_in, rows, blocked) in cases
        .iter()
        .flat_map(|&(o, i, r)| [(o, i, r, false), (o, i, r, true)])
    {
        let w = Tensor::<2>::random([d_out, d_in], normal, &device);
        let xt = Tensor::<2>::random([rows, d_in], normal, &device).transpose();
        bartleby_core::ops::gpu::use_blocked_products(blocked);
        let naive = weight_times(&w, &xt);
        bartleby_core::ops::gpu::use_blocked_products(false);
        let naive = naive.expect("the naive kernel takes a decoding product");
        let (naive, tiled) = (values(naive).await, values(w.matmul(xt)).await);
        assert_eq!(naive.len(), d_out * rows);
        let scale = tiled.iter().fold(1f32, |m, v| m.max(v.abs()));
        let d = max_diff(&naive, &tiled);
        assert!(
            d <= 1e-5 * scale,
            "[{d_out}x{d_in}] x {rows} rows, blocked {blocked}: differs by {d}"
        );
    }
    let w = Tensor::<2>::random([8, 16], normal, &device);
    let many = Tensor::<2>::random([DOT_ROWS + 1, 16], normal, &device).transpose();
    assert!(weight_times(&w, &many).is_none(), "more than DOT_ROWS rows");

    // Encoding's products on a software adapter: the 8 × 8-blocked kernel, shapes that are not
    // multiples of its blocks, the weight read through its transpose as the model holds it.
    use bartleby_core::ops::gpu::{times_weight, use_blocked_products};
    let (x, w_rows) = (
        Tensor::<2>::random([DOT_ROWS + 3, 70], normal, &device),
        Tensor::<2>::random([37, 70], normal, &device),
    );
    assert!(
        times_weight(&x, &w_rows.clone().transpose()).is_none(),
        "off by default"
    );
    use_blocked_products(true);
    let blocked = times_weight(&x, &w_rows.clone().transpose());
    use_blocked_products(false);
    let blocked = values(blocked.expect("the blocked kernel when on")).await;
    let tiled = values(x.matmul(w_rows.transpose())).await;
    assert_eq!(blocked.len(), (DOT_ROWS + 3) * 37);
    let scale = tiled.iter().fold(1f32, |m, v| m.max(v.abs()));
    let d = max_diff(&blocked, &tiled);
    assert!(d <= 1e-5 * scale, "blocked kernel differs by {d}");
    let cpu = Device::flex();
    let (w, xt) = (
        Tensor::<2>::random([8, 16], normal, &cpu),
        Tensor::<2>::random([16, 1], normal, &cpu),
    );
    assert!(weight_times(&w, &xt).is_none(), "a CPU tensor");
}

/// The one-kernel versions of a decoding step's other ops on WebGPU (core/src/gpu.rs) give burn's
/// values up to f32 summation order: LayerNorm (also of a residual sum, and of a non-contiguous
/// input), softmax, GELU, a few-row projection with its bias (also with GELU after it, and three
/// at once), the embedding gather from a table in row blocks; what they do not take
/// (more rows, CPU tensors, mismatched shapes) they decline.
#[wasm_bindgen_test]
async fn fused_ops_on_webgpu_match_burn() {
    use bartleby_core::ops::gpu::{
        add_layer_norm, embed_rows, gelu, layer_norm, linear_rows, softmax_last, DOT_ROWS,
    };
    use burn::tensor::{activation, module, Distribution, Int, Tensor, TensorData};
    let device = webgpu().await;
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<3>::random([2, 3, 37], normal, &device);
    let y = Tensor::<3>::random([2, 3, 37], normal, &device);
    let gamma = Tensor::<1>::random([37], normal, &device);
    let beta = Tensor::<1>::random([37], normal, &device);
    let burn_ln = |t: Tensor<3>| module::layer_norm(t, gamma.clone(), Some(beta.clone()), 1e-5);
    close(
        "layer_norm",
        layer_norm(&x, &gamma, Some(&beta), 1e-5),
        burn_ln(x.clone()),
    )
    .await;
    let xt = Tensor::<3>::random([2, 37, 3], normal, &device).swap_dims(1, 2);
    close(
        "layer_norm, strided",
        layer_norm(&xt, &gamma, Some(&beta), 1e-5),
        burn_ln(xt.clone()),
    )
    .await;
    close(
        "add_layer_norm",
        add_layer_norm(&x, &y, &gamma, Some(&beta), 1e-5),
        burn_ln(x.clone() + y.clone()),
    )
    .await;
    close(
        "layer_norm without beta",
        layer_norm(&x, &gamma, None, 1e-5),
        module::layer_norm(x.clone(), gamma.clone(), None, 1e-5),
    )
    .await;
    assert!(add_layer_norm(&x, &x.clone().slice([0..1]), &gamma, Some(&beta), 1e-5).is_none());
    let scores = Tensor::<4>::random([2, 3, 5, 41], normal, &device).mul_scalar(4.0);
    close(
        "softmax",
        softmax_last(&scores),
        activation::softmax(scores.clone(), 3),
    )
    .await;
    let h = Tensor::<2>::random([3, 1000], normal, &device).mul_scalar(3.0);
    close("gelu", gelu(&h), activation::gelu(h.clone())).await;
    // Decoding's projections on dot kernels, then on the blocked one (a software adapter's).
    for blocked in [false, true] {
        bartleby_core::ops::gpu::use_blocked_products(blocked);
        // An input width the blocked kernel reads one value at a time, and one it reads four.
        fused_projections(&device, 70).await;
        fused_projections(&device, 64).await;
    }
    bartleby_core::ops::gpu::use_blocked_products(false);
    // Embedding rows from a table in row blocks, scaled; an id past the table gives zeros.
    let parts = [20, 7, 18].map(|n| Tensor::<2>::random([n, 70], normal, &device));
    let whole = Tensor::cat(parts.to_vec(), 0);
    let ids = [44i32, 0, 19, 20, 26, 27, 45, 3];
    let id_tensor =
        Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), &device);
    let ours = embed_rows(&parts, &id_tensor, 2.5).expect("embed_rows declined");
    let valid = Tensor::<1, Int>::from_data(
        TensorData::new(ids.map(|i| i.min(44)).to_vec(), [ids.len()]),
        &device,
    );
    let burns = whole.clone().select(0, valid).mul_scalar(2.5);
    let mut expected = values(burns).await;
    expected[6 * 70..7 * 70].fill(0.0);
    assert_eq!(
        values(ours).await,
        expected,
        "embed_rows differs from select"
    );
    let (x17, w) = (
        Tensor::<2>::random([DOT_ROWS + 1, 70], normal, &device),
        Tensor::<2>::random([45, 70], normal, &device),
    );
    assert!(
        linear_rows(&x17, &w, None).is_none(),
        "more than DOT_ROWS rows"
    );
    let cpu = Device::flex();
    let c = Tensor::<2>::random([2, 8], normal, &cpu);
    assert!(
        softmax_last(&c).is_none() && gelu(&c).is_none(),
        "a CPU tensor"
    );
}

/// Attention (core/src/gpu.rs `attention`: one kernel for up to DOT_ROWS queries, three for
/// more) and the decoding cache's append give burn's values: with and without a padding mask,
/// one and several queries per input (beams; 9 per input × 2 inputs takes the three kernels, or
/// the blocked products a software adapter gets),
/// keys and values read through a transpose; shapes it does not take (a causal mask, a query
/// width that is not heads × head_dim) it declines.
#[wasm_bindgen_test]
async fn attention_on_webgpu_matches_burn() {
    use bartleby_core::ops::gpu::{append_keys_values, attention};
    use burn::tensor::{activation, Distribution, Tensor};
    let device = webgpu().await;
    let normal = Distribution::Normal(0.0, 1.0);
    let (inputs, heads, keys, hd) = (2, 3, 11, 5);
    // Keys and values as the model holds them after split_heads: a transpose of [b, keys, h, hd].
    let k = Tensor::<4>::random([inputs, keys, heads, hd], normal, &device).swap_dims(1, 2);
    let v = Tensor::<4>::random([inputs, keys, heads, hd], normal, &device).swap_dims(1, 2);
    // Padding: the second input's last four keys are masked out.
    let pad: Vec<f32> = (0..inputs * keys)
        .map(|i| {
            if i >= keys && i % keys >= keys - 4 {
                f32::MIN
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::<1>::from_floats(pad.as_slice(), &device).reshape([inputs, 1, 1, keys]);
    let scale = (hd as f64).powf(-0.5);
    for (group, blocked) in [(1, false), (4, false), (9, false), (9, true)] {
        let q = Tensor::<2>::random([inputs * group, heads * hd], normal, &device);
        for mask in [None, Some(&mask)] {
            let heads_of = q
                .clone()
                .reshape([inputs, group, heads, hd])
                .swap_dims(1, 2);
            let mut scores = heads_of.mul_scalar(scale).matmul(k.clone().swap_dims(2, 3));
            if let Some(m) = mask {
                scores = scores + m.clone();
            }
            let burns = activation::softmax(scores, 3)
                .matmul(v.clone())
                .swap_dims(1, 2)
                .reshape([inputs * group, heads * hd]);
            bartleby_core::ops::gpu::use_blocked_products(blocked);
            let ours = attention(&q, &k, &v, mask, scale)
                .unwrap_or_else(|| panic!("group {group}: declined"));
            bartleby_core::ops::gpu::use_blocked_products(false);
            assert_eq!(ours.dims(), burns.dims());
            let (a, b) = (values(ours).await, values(burns).await);
            let d = max_diff(&a, &b);
            let masked = mask.is_some();
            assert!(
                d <= 1e-5,
                "group {group}, mask {masked}, blocked {blocked}: differs from burn by {d}"
            );
        }
    }
    let q = Tensor::<2>::random([inputs, heads * hd], normal, &device);
    let causal = Tensor::<4>::zeros([inputs, 1, keys, keys], &device);
    assert!(
        attention(&q, &k, &v, Some(&causal), scale).is_none(),
        "a causal mask"
    );
    let narrow = Tensor::<2>::random([inputs, heads * hd - 1], normal, &device);
    assert!(
        attention(&narrow, &k, &v, None, scale).is_none(),
        "width ≠ heads × head_dim"
    );

    // The cache append: old keys contiguous, new ones through a transpose.
    let (past, new) = (7, 1);
    let ko = Tensor::<4>::random([inputs, heads, past, hd], normal, &device);
    let vo = Tensor::<4>::random([inputs, heads, past, hd], normal, &device);
    let kn = Tensor::<4>::random([inputs, new, heads, hd], normal, &device).swap_dims(1, 2);
    let vn = Tensor::<4>::random([inputs, new, heads, hd], normal, &device).swap_dims(1, 2);
    let (k2, v2) = append_keys_values(&ko, &kn, &vo, &vn).expect("append declined");
    for (ours, old, new) in [(k2, ko.clone(), kn.clone()), (v2, vo.clone(), vn.clone())] {
        let burns = Tensor::cat(vec![old, new], 2);
        assert_eq!(ours.dims(), burns.dims());
        assert_eq!(
            values(ours).await,
            values(burns).await,
            "append differs from cat"
        );
    }
    let other = Tensor::<4>::random([inputs, heads + 1, 1, hd], normal, &device);
    assert!(
        append_keys_values(&ko, &other, &vo, &other).is_none(),
        "mismatched heads"
    );
}

/// `linear_rows` (1, 4 and `DOT_ROWS` rows), `linear_gelu_rows` and `linear_rows3` against burn,
/// on whichever kernel `use_blocked_products` picks now.
async fn fused_projections(device: &burn::tensor::Device, d_in: usize) {
    use bartleby_core::ops::gpu::{linear_gelu_rows, linear_rows, linear_rows3, DOT_ROWS};
    use burn::tensor::{activation, Distribution, Tensor};
    let normal = Distribution::Normal(0.0, 1.0);
    for rows in [1, 4, DOT_ROWS] {
        let x = Tensor::<2>::random([rows, d_in], normal, device);
        let w = Tensor::<2>::random([45, d_in], normal, device);
        let b = Tensor::<1>::random([45], normal, device);
        let burns = x.clone().matmul(w.clone().transpose()) + b.clone().unsqueeze::<2>();
        close("linear_rows", linear_rows(&x, &w, Some(&b)), burns).await;
    }
    // GELU in the projection's kernel; three projections of one input in one kernel.
    let x = Tensor::<2>::random([3, d_in], normal, device);
    let (w, b) = (
        Tensor::<2>::random([45, d_in], normal, device),
        Tensor::<1>::random([45], normal, device),
    );
    let burns =
        activation::gelu(x.clone().matmul(w.clone().transpose()) + b.clone().unsqueeze::<2>());
    close(
        "linear_gelu_rows",
        linear_gelu_rows(&x, &w, Some(&b)),
        burns,
    )
    .await;
    let ws = [0, 1, 2].map(|_| Tensor::<2>::random([45, d_in], normal, device));
    let bs = [0, 1, 2].map(|_| Tensor::<1>::random([45], normal, device));
    let three = linear_rows3(
        &x,
        [&ws[0], &ws[1], &ws[2]],
        [Some(&bs[0]), None, Some(&bs[2])],
    )
    .expect("linear_rows3 declined");
    for (i, ours) in three.into_iter().enumerate() {
        let mut burns = x.clone().matmul(ws[i].clone().transpose());
        if i != 1 {
            burns = burns + bs[i].clone().unsqueeze::<2>();
        }
        close(&format!("linear_rows3 [{i}]"), Some(ours), burns).await;
    }
    let other = Tensor::<2>::random([44, d_in], normal, device);
    assert!(
        linear_rows3(&x, [&ws[0], &other, &ws[2]], [None; 3]).is_none(),
        "shapes differ"
    );
}

/// `ours` (declined: a failure) against burn's `burns`, relative to burns' largest value.
async fn close<const D: usize>(
    what: &str,
    ours: Option<burn::tensor::Tensor<D>>,
    burns: burn::tensor::Tensor<D>,
) {
    let ours = ours.unwrap_or_else(|| panic!("{what}: declined"));
    assert_eq!(ours.dims(), burns.dims(), "{what}: shape");
    let (a, b) = (values(ours).await, values(burns).await);
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let d = max_diff(&a, &b);
    assert!(d <= 2e-6 * scale, "{what}: differs from burn by {d}");
}
