//! Parity with transformers 4.57.6 on the committed fixtures (tools/reference/make_fixtures.py):
//! tokenizer ids and text, encoder states and logits (≤ 1e-4), generated ids (identical).

use bartleby_core::generate::pad_like_hf;
use bartleby_core::pipeline::ids_tensor;
use bartleby_core::{BartTokenizer, GenerationConfig};
use bartleby_tests::*;
use burn::tensor::Device;
use serde_json::Value;

const LOGIT_TOL: f32 = 1e-4;

fn max_abs_diff(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "element counts differ");
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if (a - b).abs() > worst {
            worst = (a - b).abs();
            at = i;
        }
    }
    if worst > LOGIT_TOL {
        eprintln!(
            "worst difference at flat index {at}: ours {} reference {}",
            ours[at], theirs[at]
        );
    }
    worst
}

#[test]
fn tokenizer_matches_autotokenizer() {
    let cases = read_json(&fixtures().join("tokenizer/cases.json"));
    let dir = fixtures().join("tokenizer");
    let fast = BartTokenizer::from_tokenizer_json(
        &std::fs::read(dir.join("tokenizer.json")).unwrap(),
        Some(&std::fs::read(dir.join("tokenizer_config.json")).unwrap()),
    )
    .unwrap();
    let slow_dir = fixtures().join("tokenizer-slow");
    let slow = BartTokenizer::from_vocab_merges(
        &std::fs::read(slow_dir.join("vocab.json")).unwrap(),
        &std::fs::read(slow_dir.join("merges.txt")).unwrap(),
        Some(&std::fs::read(slow_dir.join("tokenizer_config.json")).unwrap()),
    )
    .unwrap();
    let texts = cases["texts"].as_array().unwrap();
    let ids = u32_rows(&cases["ids"]);
    let trunc = u32_rows(&cases["ids_trunc_16"]);
    assert!(texts.len() >= 20);
    for (i, text) in texts.iter().enumerate() {
        let text = text.as_str().unwrap();
        for (name, tok) in [("tokenizer.json", &fast), ("vocab+merges", &slow)] {
            assert_eq!(
                tok.encode(text, None).unwrap(),
                ids[i],
                "{name}: ids of text {i} {text:?}"
            );
            assert_eq!(
                tok.encode(text, Some(16)).unwrap(),
                trunc[i],
                "{name}: truncated ids of text {i}"
            );
            assert_eq!(
                tok.decode(&ids[i], true).unwrap(),
                cases["decoded"][i].as_str().unwrap(),
                "{name}: decode of text {i}"
            );
            assert_eq!(
                tok.decode(&ids[i], false).unwrap(),
                cases["decoded_keep_special"][i].as_str().unwrap(),
                "{name}: decode (keep special) of text {i}"
            );
        }
    }
}

/// Applies a fixture's `generate(**kwargs)` on top of the model's own settings.
fn settings(base: &GenerationConfig, kwargs: &Value) -> GenerationConfig {
    let mut overrides = kwargs.as_object().unwrap().clone();
    overrides.remove("do_sample");
    overrides.retain(|k, _| !k.starts_with('_')); // markers, not generate() arguments
    base.with_overrides(&Value::Object(overrides)).unwrap()
}

fn check_model(name: &str, device: &Device) {
    check_model_as(name, device, Held::Plain)
}

/// How the weights are held for a parity run.
#[derive(Clone, Copy, PartialEq)]
enum Held {
    /// Burn tensors, as loaded by default.
    Plain,
    /// The shared embedding held as several blocks of rows (what a WebGPU adapter with a
    /// small buffer limit gets), the limit set to the largest other tensor so it splits the most.
    Split,
    /// On the host for the CPU's own products, as `summarize`/`eval`/`serve` load on `--device
    /// cpu` ([`LoadOptions::host_weights`]: f32 as f32, f16/bf16 as stored).
    Host,
}

fn check_model_as(name: &str, device: &Device, held: Held) {
    let fx = parity(name);
    let mut s = load(name, device);
    if held == Held::Host {
        use bartleby_core::checkpoint::LoadOptions;
        let files = bartleby::model_files::resolve(model_dir(name).to_str().unwrap()).unwrap();
        let options = LoadOptions {
            host_weights: true,
            ..LoadOptions::default()
        };
        s = bartleby::model_files::load(&files, device, options).unwrap();
        let mut held = 0;
        use bartleby_core::checkpoint::Params;
        let _ = s.model.visit_projections(&mut |_, p| {
            held += p.host.is_some() as usize;
            Ok(())
        });
        assert!(held > 0, "{name}: no projection held on the host");
        eprintln!("{name}: {held} projections held on the host");
    }
    if held == Held::Split {
        use bartleby_core::checkpoint::{save_safetensors, Checkpoint, LoadOptions, SaveDtype};
        let (_, requires) = bartleby_core::checkpoint::bundle::model_stats(&s.model).unwrap();
        let limit = requires.min_buffer_bytes.unwrap();
        assert!(
            limit < requires.max_buffer_bytes,
            "{name}: the embedding is not the largest tensor"
        );
        let bytes = save_safetensors(&s.model, SaveDtype::F32).unwrap();
        let ck = Checkpoint::from_shards(&[("model.safetensors", &bytes[..])]).unwrap();
        let options = LoadOptions {
            max_tensor_bytes: Some(limit),
            ..LoadOptions::default()
        };
        s.model = s.config.load(&ck, device, options, &mut |_| {}).unwrap().0;
        assert!(s.model.table_parts() >= 2, "{name}: embedding not split");
        eprintln!("{name}: embedding in {} parts", s.model.table_parts());
    }
    let max_input = fx["max_input_tokens"].as_u64().unwrap() as usize;

    // Tokenizer as the model directory ships it.
    let texts: Vec<&str> = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let input_ids = u32_rows(&fx["input_ids"]);
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(
            s.encode(text, max_input).unwrap(),
            input_ids[i],
            "{name}: ids of text {i}"
        );
    }

    // The model's effective generation settings (generation_config.json or its fallbacks).
    let eff = &fx["effective_generation_config"];
    let g = &s.generation;
    assert_eq!(
        g.num_beams as u64,
        eff["num_beams"].as_u64().unwrap(),
        "{name}: num_beams"
    );
    assert_eq!(
        g.max_length as u64,
        eff["max_length"].as_u64().unwrap(),
        "{name}: max_length"
    );
    assert_eq!(
        g.min_length as u64,
        eff["min_length"].as_u64().unwrap(),
        "{name}: min_length"
    );
    assert_eq!(
        g.no_repeat_ngram_size as u64,
        eff["no_repeat_ngram_size"].as_u64().unwrap(),
        "{name}: no_repeat"
    );
    assert_eq!(
        g.length_penalty as f64,
        eff["length_penalty"].as_f64().unwrap(),
        "{name}: length_penalty"
    );
    assert_eq!(
        g.forced_bos_token_id.map(u64::from),
        eff["forced_bos_token_id"].as_u64(),
        "{name}: forced_bos"
    );
    assert_eq!(
        g.forced_eos_token_id.map(u64::from),
        eff["forced_eos_token_id"].as_u64(),
        "{name}: forced_eos"
    );

    // Teacher-forced forward on a padded batch.
    let batch_ids = u32_rows(&fx["batch_input_ids"]);
    let batch_mask = u32_rows(&fx["batch_attention_mask"]);
    let dec_ids = u32_rows(&fx["decoder_input_ids"]);
    let (encoded, logits) = s.model.forward(
        ids_tensor(&batch_ids, device),
        ids_tensor(&batch_mask, device),
        ids_tensor(&dec_ids, device),
    );
    let mut expected = Vec::new();
    f32_flat(&fx["encoder_last_hidden_state"], &mut expected);
    let ours = encoded.hidden.into_data().try_to_vec::<f32>().unwrap();
    let diff = max_abs_diff(&ours, &expected);
    assert!(
        diff <= LOGIT_TOL,
        "{name}: encoder output differs by {diff}"
    );
    expected.clear();
    f32_flat(&fx["logits"], &mut expected);
    let ours = logits.into_data().try_to_vec::<f32>().unwrap();
    let diff = max_abs_diff(&ours, &expected);
    assert!(diff <= LOGIT_TOL, "{name}: logits differ by {diff}");
    eprintln!("{name}: logits max abs diff {diff:e}");

    // Generation: identical ids, batched (with padding) and single.
    let gens = fx["generations"].as_array().unwrap();
    assert!(gens.len() >= 14, "{name}: too few generation cases");
    for case in gens {
        let cfg = settings(&s.generation, &case["kwargs"]);
        let idx: Vec<usize> = case["batch_texts_index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as usize)
            .collect();
        let (ids, mask) = if idx.len() == 1 {
            let row = input_ids[idx[0]].clone();
            (vec![row.clone()], vec![vec![1; row.len()]])
        } else {
            assert_eq!(idx, (0..idx.len()).collect::<Vec<_>>());
            (batch_ids.clone(), batch_mask.clone())
        };
        let seqs = s.generate_ids(&ids, &mask, &cfg, &mut |_, _| {}).unwrap();
        let expected = u32_rows(&case["sequences"]);
        assert_eq!(
            pad_like_hf(&seqs, cfg.hf_output_pad_token_id()),
            expected,
            "{name}: generation {} on texts {idx:?}",
            case["name"]
        );
    }
}

#[test]
fn model_parity_cpu() {
    let device = Device::flex();
    for name in MODELS {
        check_model(name, &device);
    }
}

/// The same parity with the embedding table split into blocks of rows (WebGPU buffer limits).
#[test]
fn model_parity_split_embedding_cpu() {
    let device = Device::flex();
    for name in MODELS {
        check_model_as(name, &device, Held::Split);
    }
}

#[test]
fn t5_parity_cpu() {
    let device = Device::flex();
    for name in T5_MODELS {
        check_model(name, &device);
    }
}

/// T5's shared embedding held as row blocks (WebGPU buffer limits), as for BART: the tied
/// models (an untied `lm_head` is as large as the table and is not split; a device under its
/// size refuses the model with an error naming the tensor).
#[test]
fn t5_parity_split_embedding_cpu() {
    let device = Device::flex();
    for name in ["t5-relu-tied", "t5-gatedsilu-f16"] {
        check_model_as(name, &device, Held::Split);
    }
}

/// The same parity with every projection and the output projection held on the host for the
/// CPU's own products (f32 checkpoints in f32, f16 ones in f16: `crate::ops::dense`), as the
/// CLI and the server load on `--device cpu`.
#[test]
fn host_weights_parity_cpu() {
    let device = Device::flex();
    for name in MODELS.iter().chain(&T5_MODELS) {
        check_model_as(name, &device, Held::Host);
    }
}

#[test]
fn t5_parity_wgpu() {
    let Some(device) = wgpu_device("t5_parity_wgpu") else {
        return;
    };
    check_model("t5-relu-tied", &device);
    check_model("t5-gatedgelu-untied", &device);
}

/// The SentencePiece-Unigram tokenizer.json of T5 repositories (Metaspace, `$A </s>`,
/// sentinel tokens) encodes, truncates and decodes as transformers' fast tokenizer does.
#[test]
fn t5_tokenizer_matches_autotokenizer() {
    let dir = fixtures().join("tokenizer-t5");
    let cases = read_json(&dir.join("cases.json"));
    let tok = BartTokenizer::from_tokenizer_json(
        &std::fs::read(dir.join("tokenizer.json")).unwrap(),
        Some(&std::fs::read(dir.join("tokenizer_config.json")).unwrap()),
    )
    .unwrap();
    let ids = u32_rows(&cases["ids"]);
    let trunc = u32_rows(&cases["ids_trunc_16"]);
    let texts = cases["texts"].as_array().unwrap();
    assert!(texts.len() >= 20);
    for (i, text) in texts.iter().enumerate() {
        let text = text.as_str().unwrap();
        assert_eq!(
            tok.encode(text, None).unwrap(),
            ids[i],
            "ids of text {i} {text:?}"
        );
        assert_eq!(
            tok.encode(text, Some(16)).unwrap(),
            trunc[i],
            "truncated ids of text {i}"
        );
        assert_eq!(
            tok.decode(&ids[i], true).unwrap(),
            cases["decoded"][i].as_str().unwrap(),
            "decode of text {i}"
        );
        assert_eq!(
            tok.decode(&ids[i], false).unwrap(),
            cases["decoded_keep_special"][i].as_str().unwrap(),
            "decode (keep special) of text {i}"
        );
    }
}

/// `T5Attention._relative_position_bucket` over -700..=700 for several bucket counts and
/// distances, both directions (its logarithm is taken in f32: boundaries must agree exactly).
#[test]
fn t5_relative_position_buckets_match_transformers() {
    use bartleby_core::models::t5::model::relative_position_bucket;
    let fx = read_json(&fixtures().join("t5/relative_buckets.json"));
    let positions: Vec<i64> = fx["relative_positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    for case in fx["cases"].as_array().unwrap() {
        let bidirectional = case["bidirectional"].as_bool().unwrap();
        let buckets = case["num_buckets"].as_u64().unwrap() as usize;
        let distance = case["max_distance"].as_u64().unwrap() as usize;
        for (rel, expected) in positions.iter().zip(case["buckets"].as_array().unwrap()) {
            assert_eq!(
                relative_position_bucket(*rel, bidirectional, buckets, distance) as u64,
                expected.as_u64().unwrap(),
                "relative position {rel}, {case:?}"
            );
        }
    }
}

/// One small parity run on wgpu (Vulkan; lavapipe in CI). Runs when the `bartleby` crate is
/// built with its `wgpu` feature, as `tests/run.sh` does.
#[test]
fn model_parity_wgpu() {
    let Some(device) = wgpu_device("model_parity_wgpu") else {
        return;
    };
    check_model("tiny-gelu", &device);
    check_model_as("tiny-gelu", &device, Held::Split);
    // Encoding's products and attention (4 inputs × 48 tokens; 32 teacher-forced decoder
    // queries) on the kernel the web app uses on a software adapter.
    bartleby::device::blocked_matmul(true);
    check_model("tiny-gelu", &device);
    bartleby::device::blocked_matmul(false);
}

/// `save_safetensors` writes transformers' layout: the same tensor names, shapes and (for f32)
/// bytes as the checkpoint `save_pretrained` wrote, and it loads back to an identical model.
#[test]
fn save_roundtrip_matches_transformers_layout() {
    use bartleby_core::checkpoint::{save_safetensors, Checkpoint, SaveDtype};
    let device = Device::flex();
    let s = load("tiny-gelu", &device);
    let saved = save_safetensors(&s.model, SaveDtype::F32).unwrap();
    let original = std::fs::read(model_dir("tiny-gelu").join("model.safetensors")).unwrap();
    assert_same_safetensors(&saved, &original);
    // f16 storage survives a load → save(f16) round trip bit for bit.
    let s16 = load("tiny-relu-scaled", &device);
    let saved16 = save_safetensors(&s16.model, SaveDtype::F16).unwrap();
    let orig16 = std::fs::read(model_dir("tiny-relu-scaled").join("model.safetensors")).unwrap();
    assert_same_safetensors(&saved16, &orig16);
    // And the saved bytes load again.
    let ck = Checkpoint::from_shards(&[("saved", &saved[..])]).unwrap();
    let (_model, report) = s
        .config
        .load(&ck, &device, Default::default(), &mut |_| {})
        .unwrap();
    assert!(report.unused.is_empty() && report.defaulted.is_empty());
}

/// Real checkpoints spell keys differently: a `BartModel` state dict has no `model.` prefix,
/// some keep only `lm_head.weight` for the tied embedding, some lack `final_logits_bias`.
/// Each loads to the same model (and a missing bias is reported as defaulted to zero).
#[test]
fn key_spellings_load_the_same_model() {
    use bartleby_core::checkpoint::Checkpoint;
    let device = Device::flex();
    let s = load("tiny-gelu", &device);
    let original = std::fs::read(model_dir("tiny-gelu").join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&original).unwrap();
    let rename = |f: &dyn Fn(&str) -> Option<String>| -> Vec<u8> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .filter_map(|(n, v)| f(&n).map(|n| (n, v)))
            .collect();
        safetensors::serialize(views, None).unwrap()
    };
    let fx = parity("tiny-gelu");
    let ids = u32_rows(&fx["batch_input_ids"]);
    let mask = u32_rows(&fx["batch_attention_mask"]);
    let dec = u32_rows(&fx["decoder_input_ids"]);
    let logits = |m: &bartleby_core::models::Model| {
        let (_, l) = m.forward(
            ids_tensor(&ids, &device),
            ids_tensor(&mask, &device),
            ids_tensor(&dec, &device),
        );
        l.into_data().try_to_vec::<f32>().unwrap()
    };
    let reference = logits(&s.model);
    let variants: [(&str, Box<dyn Fn(&str) -> Option<String>>, bool); 3] = [
        (
            "no model. prefix",
            Box::new(|n: &str| Some(n.strip_prefix("model.").unwrap_or(n).to_string())),
            false,
        ),
        (
            "lm_head only",
            Box::new(|n: &str| {
                Some(if n == "model.shared.weight" {
                    "lm_head.weight".into()
                } else {
                    n.to_string()
                })
            }),
            false,
        ),
        (
            "no final_logits_bias",
            Box::new(|n: &str| (n != "final_logits_bias").then(|| n.to_string())),
            true,
        ),
    ];
    for (what, f, bias_missing) in variants {
        let bytes = rename(&*f);
        let ck = Checkpoint::from_shards(&[(what, &bytes[..])]).unwrap();
        let (model, report) = s
            .config
            .load(&ck, &device, Default::default(), &mut |_| {})
            .unwrap();
        assert_eq!(
            report.defaulted.contains(&"final_logits_bias".to_string()),
            bias_missing,
            "{what}"
        );
        let got = logits(&model);
        if bias_missing {
            assert!(
                max_abs_diff(&got, &reference) > 0.0,
                "{what}: bias should matter"
            );
        } else {
            assert_eq!(got, reference, "{what}");
        }
    }
}

/// A tokenizer.json saved with truncation/padding switched on encodes exactly like one without
/// (transformers ignores those sections; its per-call arguments decide).
#[test]
fn tokenizer_json_truncation_and_padding_sections_are_ignored() {
    let dir = fixtures().join("tokenizer");
    let mut json = read_json(&dir.join("tokenizer.json"));
    json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0});
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 40}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 1, "pad_type_id": 0, "pad_token": "<pad>"});
    let tok = BartTokenizer::from_tokenizer_json(json.to_string().as_bytes(), None).unwrap();
    let cases = read_json(&fixtures().join("tokenizer/cases.json"));
    let ids = u32_rows(&cases["ids"]);
    let trunc = u32_rows(&cases["ids_trunc_16"]);
    for (i, text) in cases["texts"].as_array().unwrap().iter().enumerate() {
        let text = text.as_str().unwrap();
        assert_eq!(tok.encode(text, None).unwrap(), ids[i], "text {i}");
        assert_eq!(tok.encode(text, Some(16)).unwrap(), trunc[i], "text {i}");
    }
}
