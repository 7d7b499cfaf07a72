//! Decoder-only models (Llama 3.2, Phi-3, Qwen2) against transformers 4.57.6 on the committed
//! fixtures (tools/reference/make_llama_fixtures.py): tokenizers, chat-template prompts
//! (`apply_chat_template`), logits of left-padded batches (≤ 1e-4), `generate()` ids (greedy and
//! beam, batched), and `bartleby summarize` end to end, with its one-line errors.

use bartleby_core::checkpoint::{LoadOptions, Params};
use bartleby_core::generate::{generate_prompted, pad_like_hf};
use bartleby_core::models::CausalStep;
use bartleby_core::ops::HostWeight;
use bartleby_core::pipeline::{block_on, ids_tensor};
use bartleby_core::{BartTokenizer, GenerationConfig};
use bartleby_tests::*;
use burn::tensor::Device;
use serde_json::Value;

const MODELS: [&str; 6] = [
    "llama-gqa-llama3-tied",
    "llama-bias-linear-bf16",
    "llama-dynamic-mqa",
    "llama-q8-untied",
    "phi3-longrope-f16",
    "qwen2-bias-tied",
];
const LOGIT_TOL: f32 = 1e-4;
/// The fixtures stored in bf16 / f16, which `summarize --device cpu` holds in half precision.
const HALF_MODELS: [&str; 3] = [
    "llama-bias-linear-bf16",
    "llama-q8-untied",
    "phi3-longrope-f16",
];

/// How the fixture is held: f32 tensors (as every device can), or on the host for the CPU's own
/// products ([`LoadOptions::host_weights`]): an f16/bf16 fixture in its stored half precision
/// (products widened to f32), an f32 one in f32.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Held {
    F32,
    Host,
}

fn load_held(name: &str, device: &Device, held: Held) -> bartleby_core::Summarizer {
    if held == Held::F32 {
        return load(name, device);
    }
    let files = bartleby::model_files::resolve(model_dir(name).to_str().unwrap()).unwrap();
    let options = LoadOptions {
        host_weights: true,
        ..LoadOptions::default()
    };
    let mut s = bartleby::model_files::load(&files, device, options).unwrap();
    // Every projection and the output projection are held on the host, as stored: halves (the
    // table in half too) or f32.
    let half = HALF_MODELS.contains(&name);
    let as_stored = |w: Option<&HostWeight>| match w {
        Some(HostWeight::Half(_)) => half,
        Some(HostWeight::F32(_)) => !half,
        _ => false,
    };
    let (mut held, mut all) = (0, 0);
    s.model
        .visit_projections(&mut |_, p| {
            all += 1;
            held += as_stored(p.host.as_deref()) as usize;
            Ok(())
        })
        .unwrap();
    assert_eq!(
        (held, all > 0),
        (all, true),
        "{name}: projections held as stored"
    );
    let llama = s.model.as_llama().unwrap();
    assert!(as_stored(llama.lm_head_host.as_deref()), "{name}: head");
    assert_eq!(
        llama.shared.val().dtype() != burn::tensor::DType::F32,
        half,
        "{name}: table"
    );
    s
}

fn bartleby_run(args: &[&str]) -> Run {
    bartleby(args).into()
}

fn cpu() -> Device {
    Device::flex()
}

#[test]
fn tokenizers_match_autotokenizer() {
    for dir in ["tokenizer-llama3", "tokenizer-phi3"] {
        let dir = fixtures().join(dir);
        let cases = read_json(&dir.join("cases.json"));
        let tok = BartTokenizer::from_tokenizer_json(
            &std::fs::read(dir.join("tokenizer.json")).unwrap(),
            Some(&std::fs::read(dir.join("tokenizer_config.json")).unwrap()),
        )
        .unwrap();
        let ids = u32_rows(&cases["ids"]);
        let plain = u32_rows(&cases["ids_no_special"]);
        let texts = cases["texts"].as_array().unwrap();
        assert!(texts.len() >= 20);
        for (i, text) in texts.iter().enumerate() {
            let text = text.as_str().unwrap();
            assert_eq!(
                tok.encode_prompt(text, true).unwrap(),
                ids[i],
                "{dir:?} text {i}"
            );
            assert_eq!(
                tok.encode_prompt(text, false).unwrap(),
                plain[i],
                "{dir:?} text {i}"
            );
            assert_eq!(
                tok.decode(&ids[i], true).unwrap(),
                cases["decoded"][i].as_str().unwrap(),
                "{dir:?} decode {i}"
            );
            assert_eq!(
                tok.decode(&ids[i], false).unwrap(),
                cases["decoded_keep_special"][i].as_str().unwrap(),
                "{dir:?} decode keep special {i}"
            );
        }
    }
}

#[test]
fn chat_prompts_match_apply_chat_template() {
    for name in MODELS {
        let fx = parity(name);
        let mut s = load(name, &cpu());
        let prompting = s.prompting.as_mut().expect("decoder-only");
        assert!(prompting.chat.is_some(), "{name}: chat template found");
        prompting.template = fx["prompt_template"].as_str().unwrap().into();
        prompting
            .chat_kwargs
            .insert("date_string".into(), fx["date_string"].clone());
        let dialogues = fx["dialogues"].as_array().unwrap();
        for case in fx["chat_prompts"].as_array().unwrap() {
            let dialogue = dialogues[case["dialogue_index"].as_u64().unwrap() as usize]
                .as_str()
                .unwrap();
            s.prompting.as_mut().unwrap().system = case["system"].as_str().map(str::to_string);
            let prompting = s.prompting.as_ref().unwrap();
            assert_eq!(
                prompting.text(dialogue).unwrap(),
                case["text"].as_str().unwrap(),
                "{name}: rendered prompt"
            );
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                s.encode(dialogue, usize::MAX).unwrap(),
                want,
                "{name}: prompt ids"
            );
        }
        // --no-chat-template: the filled template as plain text, with the tokenizer's BOS.
        let prompting = s.prompting.as_mut().unwrap();
        prompting.use_chat = false;
        prompting.system = None;
        for (i, case) in fx["plain_prompts"].as_array().unwrap().iter().enumerate() {
            let want = u32_rows(&Value::Array(vec![case["ids"].clone()])).remove(0);
            let dialogue = dialogues[i].as_str().unwrap();
            assert_eq!(
                s.encode(dialogue, usize::MAX).unwrap(),
                want,
                "{name}: plain prompt {i}"
            );
        }
    }
}

fn check_logits(name: &str, device: &Device, held: Held) {
    let fx = parity(name);
    let s = load_held(name, device, held);
    let model = s.model.as_llama().unwrap();
    let f = &fx["forward"];
    let ids = u32_rows(&f["input_ids"]);
    let mask = u32_rows(&f["attention_mask"]);
    let logits = model.forward(ids_tensor(&ids, device), &mask);
    let [rows, len, vocab] = logits.dims();
    assert_eq!((rows, len), (ids.len(), ids[0].len()));
    let ours = logits.into_data().try_to_vec::<f32>().unwrap();
    let positions = u32_rows(&f["positions"]);
    let mut worst = 0f32;
    for (b, row) in positions.iter().enumerate() {
        for (k, &j) in row.iter().enumerate() {
            let theirs = &f["logits"][b][k];
            for v in 0..vocab {
                let t = theirs[v].as_f64().unwrap() as f32;
                worst = worst.max((ours[(b * len + j as usize) * vocab + v] - t).abs());
            }
        }
    }
    assert!(
        worst <= LOGIT_TOL,
        "{name} {held:?}: logits differ by {worst}"
    );
    eprintln!("{name} {held:?}: max |logit difference| {worst:.2e}");
}

#[test]
fn logits_match_transformers_cpu() {
    for name in MODELS {
        check_logits(name, &cpu(), Held::F32);
    }
}

#[test]
fn host_weights_logits_match_transformers_cpu() {
    for name in MODELS {
        check_logits(name, &cpu(), Held::Host);
    }
}

#[test]
fn logits_match_transformers_wgpu() {
    let Some(device) = wgpu_device("llama logits_match_transformers_wgpu") else {
        return;
    };
    for name in MODELS {
        check_logits(name, &device, Held::F32);
    }
}

/// A model held on the host (in half precision or f32) saves (materialized: host weights and
/// tables widened back) exactly what the same checkpoint loaded in f32 saves.
#[test]
fn host_weights_save_what_f32_saves() {
    use bartleby_core::checkpoint::{save_safetensors, SaveDtype};
    for name in MODELS {
        let half = load_held(name, &cpu(), Held::Host);
        let f32 = load_held(name, &cpu(), Held::F32);
        let a = save_safetensors(&half.model, SaveDtype::F32).unwrap();
        let b = save_safetensors(&f32.model, SaveDtype::F32).unwrap();
        assert!(a == b, "{name}: saved bytes differ");
    }
}

/// The model's own settings with a fixture's `generate(**kwargs)` on top.
fn settings(base: &GenerationConfig, kwargs: &Value) -> GenerationConfig {
    let mut overrides = kwargs.as_object().unwrap().clone();
    overrides.remove("do_sample");
    base.with_overrides(&Value::Object(overrides)).unwrap()
}

/// `generate()` on a fixture generation's left-padded `input_ids` / `attention_mask` with `gen`.
fn generate(
    s: &bartleby_core::Summarizer,
    g: &Value,
    gen: &GenerationConfig,
) -> bartleby_core::Result<Vec<Vec<u32>>> {
    let ids = u32_rows(&g["input_ids"]);
    let mut step = CausalStep::new(
        s.model.as_llama().unwrap(),
        ids.clone(),
        u32_rows(&g["attention_mask"]),
        gen.num_beams,
        s.config.vocab_size(),
    );
    block_on(generate_prompted(
        &mut step,
        &ids,
        gen,
        s.config.max_position_embeddings(),
        &mut |_, _| {},
        &|| false,
    ))
}

fn check_generations(name: &str, device: &Device, held: Held) {
    let fx = parity(name);
    let s = load_held(name, device, held);
    let gens = fx["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 10);
    for g in gens {
        let gen = settings(&s.generation, &g["kwargs"]);
        assert_eq!(
            gen.pad_token_id as u64,
            fx["pad_token_id"].as_u64().unwrap()
        );
        let out = generate(&s, g, &gen);
        if let Some(err) = g["error"].as_str() {
            // transformers refuses: the (capped) max_length leaves no room after the prompt.
            assert!(err.contains("max_length"), "{err}");
            let ours = out.unwrap_err().to_string();
            assert!(ours.contains("max_length"), "{name}: {ours}");
            continue;
        }
        let out = out.unwrap();
        let want = u32_rows(&g["sequences"]);
        assert_eq!(
            pad_like_hf(&out, gen.hf_output_pad_token_id()),
            want,
            "{name} {held:?}: {} {}",
            g["name"],
            g["prompts_index"]
        );
    }
}

#[test]
fn generate_matches_transformers_cpu() {
    for name in MODELS {
        check_generations(name, &cpu(), Held::F32);
    }
}

#[test]
fn host_weights_generate_matches_transformers_cpu() {
    for name in MODELS {
        check_generations(name, &cpu(), Held::Host);
    }
}

#[test]
fn generate_matches_transformers_wgpu() {
    let Some(device) = wgpu_device("llama generate_matches_transformers_wgpu") else {
        return;
    };
    for name in ["llama-gqa-llama3-tied", "phi3-longrope-f16"] {
        check_generations(name, &device, Held::F32);
    }
}

/// The fixture's generated ids of one input: after the prompt, up to and including the first
/// eos (a batch's finished rows are padded after it).
fn generated(fx: &Value, case: &str, index: &[u64], row: usize) -> Vec<u32> {
    let g = fx["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| {
            g["name"] == case
                && g["prompts_index"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect::<Vec<_>>()
                    == index
        })
        .unwrap();
    let width = g["input_ids"][0].as_array().unwrap().len();
    let eos: Vec<u64> = match &fx["effective_generation_config"]["eos_token_id"] {
        Value::Array(a) => a.iter().map(|v| v.as_u64().unwrap()).collect(),
        v => vec![v.as_u64().unwrap()],
    };
    let mut out = Vec::new();
    for v in &g["sequences"][row].as_array().unwrap()[width..] {
        let t = v.as_u64().unwrap();
        out.push(t as u32);
        if eos.contains(&t) {
            break;
        }
    }
    out
}

#[test]
fn summarize_cli_matches_generate() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["llama-gqa-llama3-tied", "phi3-longrope-f16"] {
        let fx = parity(name);
        let input = tmp.path().join(format!("{name}.jsonl"));
        let lines: Vec<String> = fx["dialogues"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, d)| serde_json::json!({"id": i, "dialogue": d}).to_string())
            .collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let output = tmp.path().join(format!("{name}.out.jsonl"));
        let model = model_dir(name);
        let kwargs = format!("{{\"date_string\": {}}}", fx["date_string"]);
        // Batches of 3 then 1, as the fixture's generations: the model's own settings (greedy,
        // 20 new tokens), and 3 beams with the flags.
        for (case, flags) in [
            ("e_model_defaults", vec![]),
            (
                "c_beam3",
                vec![
                    "--num-beams",
                    "3",
                    "--max-new-tokens",
                    "14",
                    "--length-penalty",
                    "1.5",
                    "--early-stopping",
                    "true",
                    "--no-repeat-ngram-size",
                    "2",
                ],
            ),
        ] {
            let mut args = vec![
                "summarize",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
                "--batch-size",
                "3",
                "--chat-template-kwargs",
                &kwargs,
            ];
            args.extend(flags);
            let run = bartleby(&args);
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(run.status.success(), "{name} {case}: {stderr}");
            assert_eq!(
                stderr.contains("asks for sampling"),
                name.starts_with("llama"),
                "{name}: the sampling note: {stderr}"
            );
            let rows: Vec<Value> = std::fs::read_to_string(&output)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(rows.len(), 4);
            for (i, row) in rows.iter().enumerate() {
                let want = if i < 3 {
                    generated(&fx, case, &[0, 1, 2], i)
                } else {
                    generated(&fx, case, &[3], 0)
                };
                let ids: Vec<u32> = row["token_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                assert_eq!(ids, want, "{name} {case}: row {i}");
                assert!(!row["summary"].as_str().unwrap().starts_with(' '));
            }
        }
    }
}

#[test]
fn decoder_only_bad_input_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\": 1, \"dialogue\": \"A: hi\\nB: hello\"}\n").unwrap();
    let output = tmp.path().join("out.jsonl");
    let model = model_dir("llama-gqa-llama3-tied");
    let base = |extra: &[&str]| {
        let mut args = vec![
            "summarize",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        bartleby_run(&args)
    };
    assert_clear_error(
        &base(&["--prompt", "Summarize this."]),
        &output,
        &["--prompt", "{dialogue}"],
    );
    assert_clear_error(
        &base(&["--max-input-tokens", "40"]),
        &output,
        &["document id 1", "without the dialogue", "40"],
    );
    assert_clear_error(
        &base(&["--prefix", "x"]),
        &output,
        &["--prefix", "--prompt"],
    );
    assert_clear_error(
        &base(&["--chat-template-kwargs", "[1]"]),
        &output,
        &["--chat-template-kwargs", "JSON object"],
    );

    // A copy of the model with one file changed at a time.
    let copy = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir).unwrap();
        for entry in std::fs::read_dir(&model).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    };
    let run_on = |dir: &std::path::Path| {
        bartleby_run(&[
            "summarize",
            "--model",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
    };
    let yarn = tmp.path().join("yarn");
    copy(&yarn);
    let mut config: Value = read_json(&yarn.join("config.json"));
    config["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    std::fs::write(yarn.join("config.json"), config.to_string()).unwrap();
    assert_clear_error(
        &run_on(&yarn),
        &output,
        &["config.json", "rope_scaling", "\"yarn\""],
    );

    let raises = tmp.path().join("raises");
    copy(&raises);
    std::fs::write(
        raises.join("chat_template.jinja"),
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversations must start with a system message') }}{% endif %}",
    )
    .unwrap();
    assert_clear_error(
        &run_on(&raises),
        &output,
        &["chat_template.jinja", "raised", "must start with a system"],
    );

    let short = tmp.path().join("short");
    copy(&short);
    let mut config: Value = read_json(&short.join("config.json"));
    config["max_position_embeddings"] = 32.into();
    std::fs::write(short.join("config.json"), config.to_string()).unwrap();
    assert_clear_error(
        &run_on(&short),
        &output,
        &["document id 1", "without the dialogue", "32"],
    );

    // The decoder-only flags on an encoder-decoder model: one line, no work.
    let bart = model_dir("tiny-gelu");
    let run = bartleby_run(&[
        "summarize",
        "--model",
        bart.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--system",
        "Be brief.",
    ]);
    assert_clear_error(&run, &output, &["--system", "decoder-only", "bart"]);
}

/// Logits at the base fixture's sampled places of its left-padded batch, flattened
/// `[places, vocab]` in row order (what make_lora_fixtures.py stores).
fn sampled_logits(s: &bartleby_core::Summarizer, base: &Value, device: &Device) -> Vec<f32> {
    let f = &base["forward"];
    let ids = u32_rows(&f["input_ids"]);
    let mask = u32_rows(&f["attention_mask"]);
    let logits = s
        .model
        .as_llama()
        .unwrap()
        .forward(ids_tensor(&ids, device), &mask);
    let [_, len, vocab] = logits.dims();
    let all = logits.into_data().try_to_vec::<f32>().unwrap();
    let mut out = Vec::new();
    for (b, row) in u32_rows(&f["positions"]).iter().enumerate() {
        for &j in row {
            let at = (b * len + j as usize) * vocab;
            out.extend_from_slice(&all[at..at + vocab]);
        }
    }
    out
}

fn greedy_ids(s: &bartleby_core::Summarizer, g: &Value) -> Vec<Vec<u32>> {
    let gen = settings(&s.generation, &g["kwargs"]);
    let out = generate(s, g, &gen).unwrap();
    pad_like_hf(&out, gen.hf_output_pad_token_id())
}

/// PEFT adapters on the decoder-only models (every Llama projection; Phi-3's fused `qkv_proj`
/// and `gate_up_proj`), applied unmerged and merged: logits ≤ 1e-4 and greedy ids identical to
/// `PeftModel` and `merge_and_unload()` (tools/reference/make_lora_fixtures.py).
#[test]
fn peft_adapters_match_unmerged_and_merged() {
    use bartleby_core::checkpoint::adapter::{self, LoraConfig};
    let device = cpu();
    for case in ["llama-all", "phi3-fused"] {
        let fx = read_json(&fixtures().join("lora").join(format!("{case}.json")));
        let base = parity(fx["model"].as_str().unwrap());
        let mut s = load(fx["model"].as_str().unwrap(), &device);
        let dir = fixtures().join("lora").join(case);
        let config =
            LoraConfig::from_json(&std::fs::read(dir.join(adapter::CONFIG_FILE)).unwrap()).unwrap();
        let weights = std::fs::read(dir.join(adapter::WEIGHTS_FILE)).unwrap();
        let report = adapter::load_adapter(&mut s.model, &config, &weights).unwrap();
        let targets = fx["case"]["targets"].as_array().unwrap().len();
        let layers = s.model.as_llama().unwrap().layers.len();
        assert_eq!(
            report.adapted.len(),
            targets * layers,
            "{case}: {:?}",
            report.adapted
        );
        let mut want = Vec::new();
        f32_flat(&fx["logits"], &mut want);
        let ours = sampled_logits(&s, &base, &device);
        assert_eq!(ours.len(), want.len());
        let diff = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff <= LOGIT_TOL,
            "{case}: unmerged logits differ by {diff}"
        );
        let g = &fx["generations"][0];
        assert_eq!(
            greedy_ids(&s, g),
            u32_rows(&g["sequences"]),
            "{case}: unmerged ids"
        );

        let merged = adapter::merge(&mut s.model).unwrap();
        assert_eq!(merged, targets * layers);
        let mut want = Vec::new();
        f32_flat(&fx["merged_logits"], &mut want);
        let ours = sampled_logits(&s, &base, &device);
        let diff = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff <= LOGIT_TOL, "{case}: merged logits differ by {diff}");
        let g = &fx["merged_generations"][0];
        assert_eq!(
            greedy_ids(&s, g),
            u32_rows(&g["sequences"]),
            "{case}: merged ids"
        );
    }
}

/// `bartleby merge` on a decoder-only model: its lossless check passes, the written checkpoint
/// (chat template and the eos list kept) gives `merge_and_unload()`'s logits, and summarizes as
/// the unmerged adapter does.
#[test]
fn merge_cli_writes_what_peft_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let device = cpu();
    for case in ["llama-all", "phi3-fused"] {
        let fx = read_json(&fixtures().join("lora").join(format!("{case}.json")));
        let name = fx["model"].as_str().unwrap();
        let model = model_dir(name);
        let adapter = fixtures().join("lora").join(case);
        let out = tmp.path().join(case);
        let run = bartleby(&[
            "merge",
            "--model",
            model.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(out.join("chat_template.jinja").is_file());
        let gen = read_json(&out.join("generation_config.json"));
        assert_eq!(
            gen["eos_token_id"],
            read_json(&model.join("generation_config.json"))["eos_token_id"],
            "{case}: eos ids"
        );
        let files = bartleby::model_files::resolve(out.to_str().unwrap()).unwrap();
        let merged = bartleby::model_files::load(&files, &device, Default::default()).unwrap();
        let mut want = Vec::new();
        f32_flat(&fx["merged_logits"], &mut want);
        let ours = sampled_logits(&merged, &parity(name), &device);
        let diff = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff <= LOGIT_TOL,
            "{case}: merged checkpoint logits differ by {diff}"
        );

        let input = tmp.path().join("in.jsonl");
        let lines: Vec<String> = parity(name)["dialogues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| serde_json::json!({ "dialogue": d }).to_string())
            .collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let summarize = |extra: &[&str], model: &std::path::Path| {
            let o = tmp.path().join("s.jsonl");
            let mut args = vec![
                "summarize",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                o.to_str().unwrap(),
                "--max-new-tokens",
                "12",
            ];
            args.extend_from_slice(extra);
            let run = bartleby(&args);
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            std::fs::read_to_string(&o).unwrap()
        };
        assert_eq!(
            summarize(&[], &out),
            summarize(&["--adapter", adapter.to_str().unwrap()], &model),
            "{case}: merged vs unmerged summaries"
        );
    }
}

/// `--do-sample`'s warpers against transformers' `TemperatureLogitsWarper` → `TopKLogitsWarper`
/// → `TopPLogitsWarper` (tests/fixtures/generate/warpers.json): the same tokens removed, the
/// same scores kept.
#[test]
fn sampling_warpers_match_transformers() {
    use bartleby_core::generate::Sampling;
    let fx = read_json(&fixtures().join("generate/warpers.json"));
    for case in fx["cases"].as_array().unwrap() {
        let sampling = Sampling {
            temperature: case["temperature"].as_f64().unwrap() as f32,
            top_k: case["top_k"].as_u64().unwrap() as usize,
            top_p: case["top_p"].as_f64().unwrap() as f32,
            seed: 0,
        };
        let value = |v: &Value| v.as_f64().map_or(f32::NEG_INFINITY, |x| x as f32);
        for (row, want) in case["scores"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["warped"].as_array().unwrap())
        {
            let mut ours: Vec<f32> = row.as_array().unwrap().iter().map(value).collect();
            sampling.warp(&mut ours);
            let want: Vec<f32> = want.as_array().unwrap().iter().map(value).collect();
            for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
                assert!(
                    a == b || (a - b).abs() <= 1e-6 * b.abs(),
                    "{sampling:?}: token {i}: ours {a}, transformers {b}"
                );
            }
        }
    }
}

/// Sampling through the pipeline: top-k 1 is greedy search; a seed gives the same summaries
/// every time and another seed others; beams with sampling are refused.
#[test]
fn sampling_is_seeded_and_top_k_1_is_greedy() {
    use bartleby_core::generate::Sampling;
    let fx = parity("llama-gqa-llama3-tied");
    let mut s = load("llama-gqa-llama3-tied", &cpu());
    s.prompting
        .as_mut()
        .unwrap()
        .chat_kwargs
        .insert("date_string".into(), fx["date_string"].clone());
    let texts: Vec<&str> = fx["dialogues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let mut gen = s.generation.clone();
    gen.max_new_tokens = Some(10);
    let ids = |gen: &GenerationConfig| -> Vec<Vec<u32>> {
        s.summarize(&texts, gen, 512, &mut |_, _| {})
            .unwrap()
            .into_iter()
            .map(|v| v[0].token_ids.clone())
            .collect()
    };
    let greedy = ids(&gen);
    let sampled = |sampling: Sampling| {
        let mut g = gen.clone();
        g.sampling = Some(sampling);
        ids(&g)
    };
    let defaults = s.sampling_defaults;
    assert_eq!(
        (defaults.temperature, defaults.top_p),
        (0.6, 0.9),
        "the model's settings"
    );
    assert_eq!(
        sampled(Sampling {
            top_k: 1,
            ..defaults
        }),
        greedy
    );
    let a = sampled(Sampling {
        temperature: 1.5,
        top_p: 1.0,
        top_k: 0,
        seed: 7,
    });
    assert_eq!(
        a,
        sampled(Sampling {
            temperature: 1.5,
            top_p: 1.0,
            top_k: 0,
            seed: 7
        })
    );
    assert_ne!(a, greedy);
    assert_ne!(
        a,
        sampled(Sampling {
            temperature: 1.5,
            top_p: 1.0,
            top_k: 0,
            seed: 8
        })
    );
    let mut beams = gen.clone();
    beams.num_beams = 2;
    beams.sampling = Some(defaults);
    let err = s
        .summarize(&texts, &beams, 512, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("sampling with beam search"), "{err}");
}

/// `bartleby export` of a decoder-only model: the bundle carries the chat template, loads
/// through the browser's one path (`load_bundle`, sha256 checked) and summarizes there exactly as
/// `summarize` on the bundle directory does (f32 products, and a q8 bundle's int8 products).
#[test]
fn export_bundle_summarizes_like_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = parity("llama-gqa-llama3-tied");
    let model = model_dir("llama-gqa-llama3-tied");
    let input = tmp.path().join("in.jsonl");
    let dialogues: Vec<&str> = fx["dialogues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let lines: Vec<String> = dialogues
        .iter()
        .map(|d| serde_json::json!({ "dialogue": d }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    for quant in ["f16", "q8"] {
        let bundle = tmp.path().join(quant);
        let run = bartleby(&[
            "export",
            "--model",
            model.to_str().unwrap(),
            "--quant",
            quant,
            "--block-size",
            "8",
            "--output",
            bundle.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(bundle.join("chat_template.jinja").is_file());
        let out = tmp.path().join(format!("{quant}.jsonl"));
        let run = bartleby(&[
            "summarize",
            "--model",
            bundle.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--max-new-tokens",
            "10",
            "--chat-template-kwargs",
            "{\"date_string\": \"26 Jul 2024\"}",
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let cli: Vec<Vec<u32>> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["token_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect();
        let mut files = bartleby_core::pipeline::BundleFiles::new();
        for entry in std::fs::read_dir(&bundle).unwrap() {
            let entry = entry.unwrap();
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            );
        }
        let options = LoadOptions {
            int8_matmul: quant == "q8",
            ..LoadOptions::default()
        };
        let (_, mut s) =
            bartleby_core::pipeline::load_bundle(&files, &cpu(), options, false).unwrap();
        s.prompting
            .as_mut()
            .unwrap()
            .chat_kwargs
            .insert("date_string".into(), fx["date_string"].clone());
        let mut gen = s.generation.clone();
        gen.max_new_tokens = Some(10);
        let ours: Vec<Vec<u32>> = s
            .summarize(&dialogues, &gen, 512, &mut |_, _| {})
            .unwrap()
            .into_iter()
            .map(|v| v[0].token_ids.clone())
            .collect();
        assert_eq!(ours, cli, "{quant}: load_bundle vs the CLI");
        if quant == "q8" {
            // As the CLI loads it (host weights): the int8 head serves the output projection;
            // the tied table, only looked up, stays in the bundle's f16 (half the memory of an
            // f32 copy) — the same ids — and goes back to f32 when it is the projection again.
            let options = LoadOptions {
                int8_matmul: true,
                host_weights: true,
                ..LoadOptions::default()
            };
            let (_, mut s) =
                bartleby_core::pipeline::load_bundle(&files, &cpu(), options, false).unwrap();
            let llama = s.model.as_llama().unwrap();
            assert!(matches!(
                llama.lm_head_host.as_deref(),
                Some(bartleby_core::ops::HostWeight::Int8(_))
            ));
            assert_eq!(llama.shared.val().dtype(), burn::tensor::DType::F16);
            let mut plain = llama.clone();
            plain.materialize();
            assert_eq!(plain.shared.val().dtype(), burn::tensor::DType::F32);
            s.prompting
                .as_mut()
                .unwrap()
                .chat_kwargs
                .insert("date_string".into(), fx["date_string"].clone());
            let held: Vec<Vec<u32>> = s
                .summarize(&dialogues, &gen, 512, &mut |_, _| {})
                .unwrap()
                .into_iter()
                .map(|v| v[0].token_ids.clone())
                .collect();
            assert_eq!(held, cli, "q8 with host weights: load_bundle vs the CLI");
        }
    }
}

/// What convert writes after the tokens (gguf-py's `SpecialVocab`: special ids, `add_*_token`
/// flags) on tokenizer triples that take its other branches — a trailing eos in the single
/// template, a trailing token that becomes the eos (the old one the eot), RobertaProcessing, no
/// post-processor with tokenizer_config's flags and config.json's ids, no tokenizer_config —
/// equals gguf-py's own (tools/reference/make_gguf_fixtures.py, tests/fixtures/gguf/special-vocab.json).
#[test]
fn gguf_special_vocab_matches_gguf_py() {
    use bartleby_core::checkpoint::gguf::{special_vocab_metadata, GgufValue};
    use std::collections::BTreeMap;
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("gguf").join("special-vocab.json")).unwrap(),
    )
    .unwrap();
    for c in cases.as_array().unwrap() {
        let config = (!c["tokenizer_config"].is_null())
            .then(|| serde_json::to_vec(&c["tokenizer_config"]).unwrap());
        let ours: BTreeMap<String, GgufValue> = special_vocab_metadata(
            c["n_vocab"].as_u64().unwrap() as usize,
            &c["tokenizer_json"],
            config.as_deref(),
            Some(&c["config"]),
            None,
        )
        .into_iter()
        .collect();
        let mut want = BTreeMap::new();
        for (typ, id) in c["ids"].as_object().unwrap() {
            let name = match typ.as_str() {
                "unk" => "unknown",
                "sep" => "seperator",
                "pad" => "padding",
                "cls" => continue, // gguf-py's writer has no cls id
                other => other,
            };
            let id = GgufValue::U32(id.as_u64().unwrap() as u32);
            want.insert(format!("tokenizer.ggml.{name}_token_id"), id);
        }
        for (typ, b) in c["add"].as_object().unwrap() {
            if ["bos", "eos", "sep"].contains(&typ.as_str()) {
                let b = GgufValue::Bool(b.as_bool().unwrap());
                want.insert(format!("tokenizer.ggml.add_{typ}_token"), b);
            }
        }
        assert_eq!(ours, want, "{}", c["name"]);
    }
}

/// `export --format gguf --quant q4`: projections in `Q4_0` blocks bit-exact with ggml's
/// `quantize_row_q4_0_ref` (gguf-py's `Q4_0.quantize_blocks` on probing blocks,
/// tools/reference/make_gguf_fixtures.py) applied to the exported f32 values; the embedding table
/// and the output projection in `Q8_0`; norms in f32; everything else as convert writes it for
/// f16 (metadata but the file type, names, dims).
#[test]
fn gguf_q4_0_export_is_ggmls_quantization() {
    use bartleby_core::checkpoint::gguf::{
        quantize_q4_0, quantize_q8_0, read, GgmlType, GgufValue,
    };
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("gguf").join("q4_0-blocks.json")).unwrap(),
    )
    .unwrap();
    let values: Vec<f32> = fx["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let want: Vec<u8> = (0..fx["q4_0"].as_str().unwrap().len() / 2)
        .map(|i| u8::from_str_radix(&fx["q4_0"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(values.len() / 32 * 18, want.len());
    assert!(
        quantize_q4_0(&values) == want,
        "Q4_0 blocks differ from gguf-py's"
    );
    let tmp = tempfile::tempdir().unwrap();
    let model = "llama-q8-untied";
    let export = |quant: &str| {
        let out = tmp.path().join(format!("{quant}.gguf"));
        let run = bartleby(&[
            "export",
            "--format",
            "gguf",
            "--quant",
            quant,
            "--model",
            model_dir(model).to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        read(&std::fs::read(&out).unwrap()).unwrap()
    };
    let (meta, tensors) = export("q4");
    let (f32_meta, f32_tensors) = export("f32");
    for ((k, v), (k32, v32)) in meta.iter().zip(&f32_meta) {
        assert_eq!(k, k32);
        if k == "general.file_type" {
            assert_eq!(*v, GgufValue::U32(2), "LLAMA_FTYPE_MOSTLY_Q4_0");
        } else {
            assert_eq!(v, v32, "{k}");
        }
    }
    assert_eq!(meta.len(), f32_meta.len());
    let mut q4 = 0;
    for (t, t32) in tensors.iter().zip(&f32_tensors) {
        assert_eq!((&t.name, &t.dims), (&t32.name, &t32.dims));
        let wide: Vec<f32> = t32
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let table = t.name == "token_embd.weight" || t.name == "output.weight";
        match t.kind {
            GgmlType::F32 => assert!(t.dims.len() == 1 && t.data == t32.data, "{}", t.name),
            GgmlType::Q8_0 => assert!(table && t.data == quantize_q8_0(&wide), "{}", t.name),
            GgmlType::Q4_0 => {
                assert!(!table && t.data == quantize_q4_0(&wide), "{}", t.name);
                q4 += 1;
            }
            GgmlType::F16 => assert!(t.dims[0] % 32 != 0, "{}: f16 though blocks fit", t.name),
            other => panic!("{}: {other:?} in a q4_0 file", t.name),
        }
    }
    assert!(q4 >= 7, "{q4} Q4_0 tensors");
}

/// `export --format gguf` against llama.cpp's own convert_hf_to_gguf.py
/// (tools/reference/make_gguf_fixtures.py; tests/fixtures/gguf/): every metadata key and value
/// (the tokenizer's tokens, types, merges — Phi-3: the SentencePiece tokenizer.model's tokens,
/// scores and types with the added tokens over them —, special ids and chat template;
/// hyperparameters; llama3 rope factors; linear scaling; Phi-3's longrope factors and attention
/// factor, sliding window) and every tensor — name, ggml type, dims, bytes (q/k permuted,
/// f16 rounding, q8_0 blocks) — identical. Not compared: the naming keys convert derives from the
/// directory name by heuristics (general.name, basename, finetune, version).
#[test]
fn gguf_export_equals_convert_hf_to_gguf() {
    use bartleby_core::checkpoint::gguf::read;
    use std::collections::BTreeMap;
    let tmp = tempfile::tempdir().unwrap();
    let naming = [
        "general.name",
        "general.basename",
        "general.finetune",
        "general.version",
    ];
    for (model, quant, kind) in [
        ("llama-gqa-llama3-tied", "f16", "f16"),
        ("llama-q8-untied", "f16", "f16"),
        ("llama-q8-untied", "q8", "q8_0"),
        ("llama-bias-linear-bf16", "f16", "f16"),
        ("phi3-longrope-f16", "f16", "f16"),
        ("phi3-longrope-f16", "q8", "q8_0"),
        ("qwen2-bias-tied", "f16", "f16"),
        ("qwen2-bias-tied", "q8", "q8_0"),
        // llama-quantize's Q4_K_M on convert's f32 file: K-quant blocks (rows of 256), and the
        // 32-wide fixtures' fallbacks and per-layer choices.
        ("llama-k-quants", "q4_k_m", "q4_k_m"),
        ("llama-q8-untied", "q4_k_m", "q4_k_m"),
        ("llama-gqa-llama3-tied", "q4_k_m", "q4_k_m"),
        ("phi3-longrope-f16", "q4_k_m", "q4_k_m"),
        ("qwen2-bias-tied", "q4_k_m", "q4_k_m"),
    ] {
        let out = tmp.path().join(format!("{model}-{kind}.gguf"));
        let run = bartleby(&[
            "export",
            "--format",
            "gguf",
            "--quant",
            quant,
            "--model",
            model_dir(model).to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let (our_meta, our_tensors) = read(&std::fs::read(&out).unwrap()).unwrap();
        let reference = fixtures().join("gguf").join(format!("{model}-{kind}.gguf"));
        let (their_meta, their_tensors) = read(&std::fs::read(reference).unwrap()).unwrap();
        let map = |m: Vec<_>| -> BTreeMap<String, _> {
            m.into_iter()
                .filter(|(k, _): &(String, _)| !naming.contains(&k.as_str()))
                .collect()
        };
        let (ours, theirs) = (map(our_meta), map(their_meta));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{model} {kind}: metadata keys"
        );
        for (k, v) in &theirs {
            assert_eq!(&ours[k], v, "{model} {kind}: {k}");
        }
        assert_eq!(
            our_tensors.len(),
            their_tensors.len(),
            "{model} {kind}: tensor count"
        );
        let ours: BTreeMap<_, _> = our_tensors
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        for t in their_tensors {
            let o = ours
                .get(&t.name)
                .unwrap_or_else(|| panic!("{model} {kind}: no {}", t.name));
            assert_eq!(
                (o.kind, &o.dims),
                (t.kind, &t.dims),
                "{model} {kind}: {}",
                t.name
            );
            assert!(o.data == t.data, "{model} {kind}: {} bytes differ", t.name);
        }
    }
    // BART has no llama.cpp architecture: one line, nothing written.
    let out = tmp.path().join("bart.gguf");
    let run: Run = bartleby(&[
        "export",
        "--format",
        "gguf",
        "--model",
        model_dir("tiny-gelu").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ])
    .into();
    assert_clear_error(&run, &out, &["gguf", "bart", "llama.cpp"]);
    // q4_k_m is a GGUF type: a bundle export refuses it in one line and writes nothing.
    let out = tmp.path().join("bundle-q4_k_m");
    let run: Run = bartleby(&[
        "export",
        "--quant",
        "q4_k_m",
        "--model",
        model_dir("llama-q8-untied").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ])
    .into();
    assert_clear_error(&run, &out, &["q4_k_m", "--format gguf"]);
    // A Phi-3 without its SentencePiece tokenizer.model, and a Qwen2 with its sliding window on
    // (llama.cpp's qwen2 has none): one line.
    let phi3 = tmp.path().join("phi3-no-spm");
    std::fs::create_dir(&phi3).unwrap();
    for entry in std::fs::read_dir(model_dir("phi3-longrope-f16")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "tokenizer.model" {
            std::fs::copy(entry.path(), phi3.join(entry.file_name())).unwrap();
        }
    }
    let qwen2 = tmp.path().join("qwen2-sliding");
    std::fs::create_dir(&qwen2).unwrap();
    for entry in std::fs::read_dir(model_dir("qwen2-bias-tied")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), qwen2.join(entry.file_name())).unwrap();
    }
    let mut config = read_json(&qwen2.join("config.json"));
    config["use_sliding_window"] = true.into();
    config["sliding_window"] = 64.into();
    std::fs::write(qwen2.join("config.json"), config.to_string()).unwrap();
    for (model, words) in [
        (phi3, &["tokenizer.model", "Phi-3"][..]),
        (qwen2, &["use_sliding_window", "qwen2"][..]),
    ] {
        let out = tmp.path().join("refused.gguf");
        let run: Run = bartleby(&[
            "export",
            "--format",
            "gguf",
            "--model",
            model.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .into();
        assert_clear_error(&run, &out, words);
    }
}

/// A prompt over the window keeps its template and instruction and cuts the dialogue at a token
/// boundary: the longest start that fits (one more token would not), the row marked truncated.
#[test]
fn long_dialogues_are_cut_inside_the_prompt() {
    let fx = parity("llama-gqa-llama3-tied");
    let mut s = load("llama-gqa-llama3-tied", &cpu());
    s.prompting
        .as_mut()
        .unwrap()
        .chat_kwargs
        .insert("date_string".into(), fx["date_string"].clone());
    let dialogue = fx["dialogues"][1].as_str().unwrap();
    let full = s.encode(dialogue, usize::MAX).unwrap();
    let max = full.len() - 25;
    let cut = s.encode(dialogue, max).unwrap();
    assert!(
        cut.len() <= max && cut.len() > max - 12,
        "{} of {max}",
        cut.len()
    );
    // Same template before and after the dialogue: the first 30 ids and the generation prompt.
    assert_eq!(cut[..30], full[..30]);
    assert_eq!(cut[cut.len() - 6..], full[full.len() - 6..]);
    let texts = [dialogue];
    let mut gen = s.generation.clone();
    gen.max_new_tokens = Some(4);
    let long = bartleby_core::LongOptions {
        mode: bartleby_core::LongMode::Truncate,
        overlap_tokens: 0,
        partial_max_new_tokens: None,
    };
    let out = s
        .summarize_long(&texts, &gen, max, &long, 1, &mut |_| {})
        .unwrap();
    assert!(out[0].1.truncated);
    assert_eq!(out[0].1.input_tokens, full.len());
}
