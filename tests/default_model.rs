//! The shipped default model (models/bartleby-small, issue 28): the README's main job runs
//! offline with it and gives transformers' own generate() ids (fixture from
//! tools/reference/make_default_model_fixture.py); `eval` and `serve` take it without --model; a
//! missing default is a clear error; the training recipe runs (a few steps, as in CI).

use bartleby_tests::{assert_clear_error, bartleby_bin, fixtures, read_json, root};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn samsum_validation() -> std::path::PathBuf {
    root().join("../shared/data/samsum/validation.jsonl")
}

/// The first `n` rows of SAMSum validation in a file under `dir`.
fn first_rows(dir: &Path, n: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(samsum_validation()).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect();
    let p = dir.join("validation.jsonl");
    std::fs::write(&p, rows.join("\n") + "\n").unwrap();
    p
}

/// `bartleby ARGS` from the repository root, offline, with an empty HF cache and no
/// BARTLEBY_DEFAULT_MODEL: what a new user's `cargo run --release -- ARGS` does.
fn offline(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bartleby_bin())
        .current_dir(root())
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.join("hf"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("BARTLEBY_DEFAULT_MODEL")
        .output()
        .unwrap()
}

#[test]
fn readme_main_job_runs_offline_with_transformers_ids() {
    let fixture = read_json(&fixtures().join("default-model/samsum-validation.json"));
    let want = fixture["rows"].as_array().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = first_rows(tmp.path(), want.len());
    let output = tmp.path().join("summaries.jsonl");
    let out = offline(
        tmp.path(),
        &[
            "summarize",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "summarize failed: {stderr}");
    assert_eq!(
        stderr
            .matches("using the default model bartleby-small")
            .count(),
        1,
        "says once which model it uses: {stderr}"
    );
    let got: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["id"], w["id"]);
        assert_eq!(g["input_tokens"], w["input_tokens"], "{}", w["id"]);
        assert_eq!(g["truncated"], w["truncated"], "{}", w["id"]);
        assert_eq!(
            g["token_ids"], w["token_ids"],
            "{}: ids differ from transformers",
            w["id"]
        );
        assert_eq!(g["summary"], w["summary"], "{}", w["id"]);
        assert!(!w["summary"].as_str().unwrap().is_empty());
    }
}

#[test]
fn default_model_is_a_small_verified_bundle_with_a_card() {
    let dir = root().join("models/bartleby-small");
    let manifest = read_json(&dir.join("manifest.json"));
    let mut total = 0u64;
    for entry in std::fs::read_dir(&dir).unwrap() {
        total += entry.unwrap().metadata().unwrap().len();
    }
    assert!(
        total <= 50_000_000,
        "models/bartleby-small is {total} bytes (> 50 MB)"
    );
    assert_eq!(manifest["quantization"], "f16");
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for needle in [
        "CC BY-NC-SA 4.0",
        "CC BY-NC-ND 4.0",
        "CC BY 4.0",
        "research",
        "bash bench/bartleby-small",
        "rougeL",
    ] {
        assert!(card.contains(needle), "model card lacks {needle:?}");
    }
    // Loading checks every file against the manifest's sha256.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bartleby_bin())
        .args([
            "summarize",
            "--model",
            dir.to_str().unwrap(),
            "--input",
            "-",
        ])
        .args(["--num-beams", "1", "--max-length", "8"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path())
        .stdin(std::fs::File::open(first_rows(tmp.path(), 1)).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn eval_without_model_uses_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let input = first_rows(tmp.path(), 3);
    let metrics = tmp.path().join("metrics");
    let out = offline(
        tmp.path(),
        &[
            "eval",
            "--data",
            input.to_str().unwrap(),
            "--name",
            "default",
            "--out",
            metrics.to_str().unwrap(),
            "--metrics",
            "rouge",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eval failed: {stderr}");
    assert!(
        stderr.contains("using the default model bartleby-small"),
        "{stderr}"
    );
    let m = read_json(&metrics.join("default_metrics.json"));
    assert!(
        m.to_string().contains("bartleby-small"),
        "metrics name the model: {m}"
    );
}

#[test]
fn a_missing_default_model_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let input = first_rows(tmp.path(), 1);
    let output = tmp.path().join("out.jsonl");
    let out = Command::new(bartleby_bin())
        .args(["summarize", "--input", input.to_str().unwrap()])
        .args(["--output", output.to_str().unwrap()])
        .env("BARTLEBY_DEFAULT_MODEL", tmp.path().join("nowhere"))
        .output()
        .unwrap();
    assert_clear_error(
        &out.into(),
        &output,
        &["no --model given", "bartleby-small", "nowhere", "--model"],
    );
}

/// The training recipe of bench/bartleby-small (`ci`: its exact `train` flags, 3 steps).
#[test]
fn training_recipe_runs_a_few_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .current_dir(root())
        .args(["bench/bartleby-small", "ci"])
        .env("OUT", tmp.path())
        .env("B", bartleby_bin())
        .env("DATA", root().join("../shared/data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench/bartleby-small ci failed: {stderr}"
    );
    let run = tmp.path().join("runs/ci");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v.get("loss").is_some())
        .collect();
    assert_eq!(steps.last().unwrap()["step"], 3, "{metrics}");
    assert!(steps
        .iter()
        .all(|s| s["loss"].as_f64().unwrap().is_finite()));
    assert!(run.join("adapter/model.safetensors").is_file());
}
