//! End-to-end: `bartleby summarize --adapter` and `bartleby merge` on PEFT-saved adapters
//! (tests/fixtures/lora, made by tools/reference/make_lora_fixtures.py).

use bartleby_tests::*;
use serde_json::Value;
use std::path::Path;

fn lora_case(case: &str) -> (String, Value) {
    let dir = fixtures().join("lora").join(case);
    let fx = read_json(&fixtures().join("lora").join(format!("{case}.json")));
    (dir.to_str().unwrap().to_string(), fx)
}

/// Writes the parity batch's texts as JSONL and summarizes them greedily in one batch.
fn summarize_batch(model: &Path, adapter: Option<&str>, fx: &Value, tmp: &Path) -> Vec<Vec<u32>> {
    let pin = parity(fx["model"].as_str().unwrap());
    let n = u32_rows(&pin["batch_input_ids"]).len();
    let lines: Vec<String> = pin["texts"].as_array().unwrap()[..n]
        .iter()
        .map(|t| serde_json::json!({ "dialogue": t }).to_string())
        .collect();
    let input = tmp.join("in.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = tmp.join("out.jsonl");
    let max_input = pin["max_input_tokens"].to_string();
    let mut args = vec![
        "summarize",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--max-input-tokens",
        &max_input,
        "--batch-size",
        "8",
        "--num-beams",
        "1",
    ];
    if let Some(a) = adapter {
        args.extend(["--adapter", a]);
    }
    let out = bartleby(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            u32_rows(&Value::Array(vec![row["token_ids"].clone()])).remove(0)
        })
        .collect()
}

/// PEFT's greedy generations of the batch, padding removed.
fn expected(fx: &Value, key: &str) -> Vec<Vec<u32>> {
    let pin = parity(fx["model"].as_str().unwrap());
    let pad = pin["effective_generation_config"]["pad_token_id"]
        .as_u64()
        .unwrap() as u32;
    expected_with_pad(fx, key, pad)
}

fn expected_with_pad(fx: &Value, key: &str, pad: u32) -> Vec<Vec<u32>> {
    let greedy = fx[key]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "greedy")
        .unwrap();
    u32_rows(&greedy["sequences"])
        .into_iter()
        .map(|mut row| {
            // Rows end with eos then padding; the first token (decoder start) stays.
            while row.len() > 1 && row.last() == Some(&pad) {
                row.pop();
            }
            row
        })
        .collect()
}

#[test]
fn summarize_with_peft_adapter_gives_peft_ids() {
    let (adapter, fx) = lora_case("gelu-qv");
    let tmp = tempfile::tempdir().unwrap();
    let ids = summarize_batch(&model_dir("tiny-gelu"), Some(&adapter), &fx, tmp.path());
    assert_eq!(ids, expected(&fx, "generations"));
}

#[test]
fn t5_summarize_with_peft_adapter_gives_peft_ids() {
    let (adapter, fx) = lora_case("t5-gated-all");
    let tmp = tempfile::tempdir().unwrap();
    let ids = summarize_batch(
        &model_dir("t5-gatedgelu-untied"),
        Some(&adapter),
        &fx,
        tmp.path(),
    );
    assert_eq!(ids, expected(&fx, "generations"));
}

/// `merge` on T5 (gated FFN, untied head, every projection adapted): the lossless check passes
/// and the merged checkpoint generates what PEFT's `merge_and_unload` model generates.
#[test]
fn t5_merge_writes_a_checkpoint_that_generates_like_peft() {
    let (adapter, fx) = lora_case("t5-gated-all");
    let tmp = tempfile::tempdir().unwrap();
    let merged = tmp.path().join("merged");
    let out = bartleby(&[
        "merge",
        "--model",
        model_dir("t5-gatedgelu-untied").to_str().unwrap(),
        "--adapter",
        &adapter,
        "--output",
        merged.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = read_json(&merged.join("config.json"));
    assert_eq!(config["model_type"], "t5");
    let ids = summarize_batch(&merged, None, &fx, tmp.path());
    assert_eq!(ids, expected(&fx, "merged_generations"));
}

#[test]
fn merge_writes_a_checkpoint_that_generates_like_peft() {
    let (adapter, fx) = lora_case("gelu-qv");
    let tmp = tempfile::tempdir().unwrap();
    let merged = tmp.path().join("merged");
    let out = bartleby(&[
        "merge",
        "--model",
        model_dir("tiny-gelu").to_str().unwrap(),
        "--adapter",
        &adapter,
        "--output",
        merged.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("generated ids identical 4/4"), "{stdout}");
    for file in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        assert!(merged.join(file).is_file(), "{file} missing");
    }
    // The merged generation_config.json keeps the base's summarization settings.
    let base_gen = read_json(&model_dir("tiny-gelu").join("generation_config.json"));
    let merged_gen = read_json(&merged.join("generation_config.json"));
    for key in [
        "num_beams",
        "max_length",
        "min_length",
        "length_penalty",
        "no_repeat_ngram_size",
        "early_stopping",
        "forced_bos_token_id",
        "decoder_start_token_id",
    ] {
        assert_eq!(
            merged_gen[key], base_gen[key],
            "generation_config.json {key}"
        );
    }
    let ids = summarize_batch(&merged, None, &fx, tmp.path());
    assert_eq!(ids, expected(&fx, "merged_generations"));
}

#[test]
fn merge_refuses_bad_inputs_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("merged");
    let gelu = model_dir("tiny-gelu");
    let (other_adapter, _) = lora_case("silu-regex-bias");
    let (adapter, _) = lora_case("gelu-qv");
    let missing = tmp.path().join("no-adapter");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--adapter", &other_adapter],
            vec!["adapter_model.safetensors", "shape"],
        ),
        (
            vec!["--adapter", missing.to_str().unwrap()],
            vec!["no such adapter directory"],
        ),
        (
            vec!["--adapter", gelu.to_str().unwrap()],
            vec!["adapter_config.json"],
        ),
        (
            vec!["--adapter", &adapter, "--tolerance", "0", "--dtype", "f16"],
            vec!["lossless check failed"],
        ),
    ];
    for (extra, needles) in cases {
        let mut args = vec![
            "merge",
            "--model",
            gelu.to_str().unwrap(),
            "--output",
            out_dir.to_str().unwrap(),
        ];
        args.extend(extra);
        assert_clear_error(&bartleby(&args).into(), &out_dir, &needles);
    }
    // An existing output is kept unless --force.
    std::fs::create_dir(&out_dir).unwrap();
    let args = [
        "merge",
        "--model",
        gelu.to_str().unwrap(),
        "--adapter",
        &adapter,
        "--output",
        out_dir.to_str().unwrap(),
    ];
    let run: Run = bartleby(&args).into();
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(bartleby(&forced).status.success());
    // --force over a regular file: refused before any work, the file untouched (it used to be
    // replaced by the output, then the run failed removing it as a folder).
    let file_out = tmp.path().join("a-file");
    std::fs::write(&file_out, "keep me").unwrap();
    for extra in [&[][..], &["--force"][..]] {
        let mut a = args.to_vec();
        let at = a.iter().position(|x| *x == "--output").unwrap();
        a[at + 1] = file_out.to_str().unwrap();
        a.extend_from_slice(extra);
        let run: Run = bartleby(&a).into();
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert_eq!(std::fs::read_to_string(&file_out).unwrap(), "keep me");
        let mut e = vec![
            "export",
            "--model",
            a[2],
            "--output",
            file_out.to_str().unwrap(),
        ];
        e.extend_from_slice(extra);
        let run: Run = bartleby(&e).into();
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert_eq!(std::fs::read_to_string(&file_out).unwrap(), "keep me");
    }
    assert!(out_dir.join("model.safetensors").is_file());
}

/// A disk that fills up mid-write (the file-size limit `ulimit -f` gives the same EFBIG a full
/// disk gives ENOSPC, without root): merge and export fail with one error line naming the file
/// and leave neither the output directory nor temp files behind.
#[cfg(unix)]
#[test]
fn full_disk_is_a_clear_error_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let gelu = model_dir("tiny-gelu");
    let (adapter, _) = lora_case("gelu-qv");
    let merged = tmp.path().join("merged");
    let exported = tmp.path().join("bundle");
    let commands: [(Vec<&str>, &Path); 2] = [
        (
            vec![
                "merge",
                "--model",
                gelu.to_str().unwrap(),
                "--adapter",
                &adapter,
            ],
            &merged,
        ),
        (
            vec![
                "export",
                "--model",
                gelu.to_str().unwrap(),
                "--quant",
                "f32",
                "--check-n",
                "0",
            ],
            &exported,
        ),
    ];
    for (mut args, out) in commands {
        // model.safetensors is 180 KB; files may grow to 64 KiB.
        args.extend(["--output", out.to_str().unwrap()]);
        let run = bartleby_with_file_limit(64, &args);
        assert_clear_error(&run, out, &["model.safetensors"]);
    }
}
