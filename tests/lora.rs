//! LoRA parity with PEFT 0.21 (tools/reference/make_lora_fixtures.py): adapters saved by PEFT
//! itself (nonzero B; several target sets, rsLoRA, rank/alpha patterns, a regex target, trained
//! biases; on BART and T5) give PEFT's logits (≤ 1e-4) and generated ids (identical), unmerged
//! and merged.

use bartleby_core::checkpoint::adapter::{self, LoraConfig};
use bartleby_core::checkpoint::{save_safetensors, Checkpoint, SaveDtype};
use bartleby_core::models::Model;
use bartleby_core::pipeline::ids_tensor;
use bartleby_core::{GenerationConfig, Summarizer};
use bartleby_tests::*;
use burn::tensor::Device;
use serde_json::Value;
use std::path::PathBuf;

const LOGIT_TOL: f32 = 1e-4;
const CASES: [&str; 3] = ["gelu-qv", "relu-all-rslora", "silu-regex-bias"];
/// PEFT adapters on T5 (q/v; every projection of a gated FFN with a rank pattern).
const T5_CASES: [&str; 2] = ["t5-qv", "t5-gated-all"];

fn case_dir(case: &str) -> PathBuf {
    fixtures().join("lora").join(case)
}

fn with_adapter(case: &str, device: &Device) -> (Summarizer, Value) {
    let fx = read_json(&fixtures().join("lora").join(format!("{case}.json")));
    let mut s = load(fx["model"].as_str().unwrap(), device);
    let dir = case_dir(case);
    let config =
        LoraConfig::from_json(&std::fs::read(dir.join(adapter::CONFIG_FILE)).unwrap()).unwrap();
    let weights = std::fs::read(dir.join(adapter::WEIGHTS_FILE)).unwrap();
    let report = adapter::load_adapter(&mut s.model, &config, &weights).unwrap();
    assert!(!report.adapted.is_empty(), "{case}: nothing adapted");
    (s, fx)
}

fn logits(model: &Model, fx: &Value, device: &Device) -> Vec<f32> {
    let pin = parity(fx["model"].as_str().unwrap());
    let (_, logits) = model.forward(
        ids_tensor(&u32_rows(&pin["batch_input_ids"]), device),
        ids_tensor(&u32_rows(&pin["batch_attention_mask"]), device),
        ids_tensor(&u32_rows(&pin["decoder_input_ids"]), device),
    );
    logits.into_data().try_to_vec::<f32>().unwrap()
}

fn max_abs_diff(ours: &[f32], theirs: &Value) -> f32 {
    let mut expected = Vec::new();
    f32_flat(theirs, &mut expected);
    assert_eq!(ours.len(), expected.len(), "element counts differ");
    ours.iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn check_generations(s: &Summarizer, fx: &Value, key: &str, case: &str) {
    let pin = parity(fx["model"].as_str().unwrap());
    let ids = u32_rows(&pin["batch_input_ids"]);
    let mask = u32_rows(&pin["batch_attention_mask"]);
    let gens = fx[key].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    for g in gens {
        let cfg: GenerationConfig = s.generation.with_overrides(&g["kwargs"]).unwrap();
        let seqs = s.generate_ids(&ids, &mask, &cfg, &mut |_, _| {}).unwrap();
        assert_eq!(
            bartleby_core::generate::pad_like_hf(&seqs, cfg.hf_output_pad_token_id()),
            u32_rows(&g["sequences"]),
            "{case}: {key} {}",
            g["name"]
        );
    }
}

fn check_case(case: &str, device: &Device) {
    let (mut s, fx) = with_adapter(case, device);
    let diff = max_abs_diff(&logits(&s.model, &fx, device), &fx["logits"]);
    eprintln!("{case}: unmerged logits max abs diff {diff:e}");
    assert!(
        diff <= LOGIT_TOL,
        "{case}: logits differ from PEFT by {diff}"
    );
    check_generations(&s, &fx, "generations", case);

    let merged = adapter::merge(&mut s.model).unwrap();
    assert!(merged > 0);
    let diff = max_abs_diff(&logits(&s.model, &fx, device), &fx["merged_logits"]);
    eprintln!("{case}: merged logits max abs diff {diff:e}");
    assert!(diff <= LOGIT_TOL, "{case}: merged logits differ by {diff}");
    check_generations(&s, &fx, "merged_generations", case);

    // The merged checkpoint, written and read back, is the same model.
    let bytes = save_safetensors(&s.model, SaveDtype::F32).unwrap();
    let checkpoint = Checkpoint::from_shards(&[("merged", &bytes)]).unwrap();
    let (reloaded, _) = s
        .config
        .load(&checkpoint, &device, Default::default(), &mut |_| {})
        .unwrap();
    assert_eq!(
        logits(&reloaded, &fx, device),
        logits(&s.model, &fx, device),
        "{case}: merged checkpoint does not reload to the same model"
    );
}

#[test]
fn peft_adapters_match_peft_cpu() {
    let device = Device::flex();
    for case in CASES {
        check_case(case, &device);
    }
}

#[test]
fn peft_t5_adapters_match_peft_cpu() {
    let device = Device::flex();
    for case in T5_CASES {
        check_case(case, &device);
    }
}

/// PEFT's file for a T5 adapter, read and written back, has the same tensors byte for byte.
#[test]
fn saved_t5_adapter_has_peft_layout() {
    let device = Device::flex();
    let (s, _) = with_adapter("t5-qv", &device);
    let saved = adapter::save_adapter(&s.model).unwrap();
    let original = std::fs::read(case_dir("t5-qv").join(adapter::WEIGHTS_FILE)).unwrap();
    assert_same_safetensors(&saved, &original);
}

#[test]
fn peft_adapter_matches_peft_wgpu() {
    let Some(device) = wgpu_device("peft_adapter_matches_peft_wgpu") else {
        return;
    };
    check_case("relu-all-rslora", &device);
    check_case("t5-qv", &device);
}

/// `save_adapter` writes PEFT's key names and layouts: the file PEFT saved, read and written
/// back, has the same tensors byte for byte.
#[test]
fn saved_adapter_has_peft_layout() {
    let device = Device::flex();
    let (s, _) = with_adapter("relu-all-rslora", &device);
    let saved = adapter::save_adapter(&s.model).unwrap();
    let original = std::fs::read(case_dir("relu-all-rslora").join(adapter::WEIGHTS_FILE)).unwrap();
    assert_same_safetensors(&saved, &original);
}

/// An adapter for another model shape, or with a tensor no projection has, is refused with an
/// error naming the tensor.
#[test]
fn adapter_for_another_model_is_refused() {
    let device = Device::flex();
    let dir = case_dir("gelu-qv");
    let config =
        LoraConfig::from_json(&std::fs::read(dir.join(adapter::CONFIG_FILE)).unwrap()).unwrap();
    let weights = std::fs::read(dir.join(adapter::WEIGHTS_FILE)).unwrap();
    let mut other = load("tiny-relu-scaled", &device);
    let err = adapter::load_adapter(&mut other.model, &config, &weights)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adapter_model.safetensors") && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn unsupported_adapter_configs_are_refused() {
    let base = std::fs::read(case_dir("gelu-qv").join(adapter::CONFIG_FILE)).unwrap();
    let base: Value = serde_json::from_slice(&base).unwrap();
    for (key, value, needle) in [
        ("use_dora", Value::Bool(true), "use_dora"),
        ("peft_type", Value::from("IA3"), "peft_type"),
        ("r", Value::from(0), "r must be"),
        ("lora_dropout", Value::from(1.5), "lora_dropout"),
    ] {
        let mut cfg = base.clone();
        cfg[key] = value;
        let err = LoraConfig::from_json(&serde_json::to_vec(&cfg).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("adapter_config.json") && err.contains(needle),
            "{key}: {err}"
        );
    }
}

/// QLoRA's frozen base: projections quantized to 8 bits (blocks of 4) change the logits only a
/// little, and a LoRA training step runs on top of them.
#[test]
fn quantized_base_stays_close_and_trains() {
    use bartleby_core::checkpoint::quantized::{quantize_projections, QuantBits};
    let device = Device::flex();
    let (mut s, fx) = with_adapter("gelu-qv", &device);
    let reference = logits(&s.model, &fx, &device);
    let n = quantize_projections(&mut s.model, QuantBits::Q8, 4).unwrap();
    assert!(n > 0);
    let quantized = logits(&s.model, &fx, &device);
    let diff = reference
        .iter()
        .zip(&quantized)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = reference.iter().fold(0f32, |m, a| m.max(a.abs()));
    eprintln!("q8 logits max abs diff {diff:e} (max |logit| {scale})");
    assert!(diff > 0.0 && diff < 0.05 * scale, "q8 diff {diff}");
    // One LoRA step over the quantized base: gradients reach the adapter.
    use bartleby_core::train::{self, GradAccumulator, Trainable};
    train::make_trainable(&mut s.model, Trainable::Lora).unwrap();
    let example = train::Example {
        input_ids: vec![0, 10, 11, 12, 2],
        labels: vec![0, 20, 21, 2],
    };
    let batch = train::collate(&[&example], 1, 2);
    let loss = train::loss(&s.model, &batch).unwrap();
    let mut acc = GradAccumulator::default();
    acc.backward(&mut s.model, Trainable::Lora, loss).unwrap();
    let grads = acc.take();
    let norm = train::clip_global_norm(&mut grads.clone(), 1e9).unwrap();
    assert!(norm > 0.0 && norm.is_finite(), "gradient norm {norm}");
    let err = quantize_projections(&mut load("tiny-gelu", &device).model, QuantBits::Q4, 7)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not divide"), "{err}");
}
