//! `bartleby score` end to end: the built binary on `tests/fixtures/score/pairs.jsonl` against the
//! scores rouge-score 0.1.2 / sacrebleu 2.6.0 / numpy computed for it
//! (`tools/reference/make_score_fixture.py` → `tests/fixtures/score/expected.json`), every number
//! to 1e-6; and bad input: one `error:` line naming file, line and field, exit 1, no output file.

use bartleby_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOL: f64 = 1e-6;

fn score(input: &Path, output: &Path, extra: &[&str]) -> Run {
    let out = Command::new(bartleby_bin())
        .args([
            "score",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    Run::from(out)
}

/// Compares `got` with `want` recursively: same keys, same strings/bools, numbers within TOL.
fn compare(path: &str, got: &Value, want: &Value, failures: &mut Vec<String>, worst: &mut f64) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let gk: Vec<&String> = g.keys().collect();
            let wk: Vec<&String> = w.keys().collect();
            if gk != wk {
                failures.push(format!("{path}: keys {gk:?}, expected {wk:?}"));
                return;
            }
            for (k, wv) in w {
                compare(&format!("{path}.{k}"), &g[k], wv, failures, worst);
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            if g.len() != w.len() {
                failures.push(format!("{path}: {} items, expected {}", g.len(), w.len()));
                return;
            }
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                compare(&format!("{path}[{i}]"), gv, wv, failures, worst);
            }
        }
        (Value::Number(g), Value::Number(w)) if path.ends_with(".id") => {
            if g != w {
                failures.push(format!("{path}: {g}, expected {w}"));
            }
        }
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            let d = (g - w).abs();
            *worst = worst.max(d);
            if d.is_nan() || d > TOL {
                failures.push(format!("{path}: rust {g} python {w}"));
            }
        }
        (g, w) => {
            if g != w {
                failures.push(format!("{path}: {g}, expected {w}"));
            }
        }
    }
}

#[test]
fn score_matches_rouge_score_and_sacrebleu() {
    let dir = fixtures().join("score");
    let fixture = read_json(&dir.join("expected.json"));
    let runs = fixture["runs"].as_array().unwrap();
    assert!(runs.len() >= 3);
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    let mut numbers = 0usize;
    for (r, run) in runs.iter().enumerate() {
        let extra: Vec<&str> = run["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let output = tmp.path().join(format!("scores-{r}.json"));
        let res = score(&dir.join("pairs.jsonl"), &output, &extra);
        assert_eq!(res.code, Some(0), "{extra:?}: {}", res.stderr);
        let got = read_json(&output);
        let want = &run["expected"];
        assert_eq!(
            got["per_example"].as_array().unwrap().len(),
            fixture["pairs"].as_u64().unwrap() as usize
        );
        for key in ["per_example", "corpus", "hf_evaluate"] {
            let (g, w) = (&got[key], &want[key]);
            assert_eq!(g.is_null(), w.is_null(), "{extra:?}: {key} present?");
            numbers += count_numbers(w);
            compare(&format!("{extra:?} {key}"), g, w, &mut failures, &mut worst);
        }
        // Settings say what was computed.
        let s = &got["settings"];
        assert_eq!(s["metrics"], run["metrics"], "{extra:?}");
        if let Some(rouge) = s.get("rouge") {
            assert_eq!(rouge["stemmer"], run["stemmer"]);
            assert_eq!(rouge["bootstrap_seed"], run["bootstrap_seed"]);
            assert_eq!(rouge["bootstrap_samples"], run["bootstrap_samples"]);
            assert_eq!(rouge["hf_evaluate"], run["hf_evaluate"]);
            assert_eq!(rouge["implementation"], "rouge_score 0.1.2");
        }
        if let Some(bleu) = s.get("bleu") {
            assert_eq!(bleu["padding"], run["bleu_pad"]);
            assert_eq!(bleu["implementation"], "sacrebleu 2.6.0");
        }
    }
    println!(
        "score: {} runs, {numbers} numbers, max |rust - python| = {worst:e}",
        runs.len()
    );
    assert!(numbers > 500, "{numbers}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn count_numbers(v: &Value) -> usize {
    match v {
        Value::Number(_) => 1,
        Value::Array(a) => a.iter().map(count_numbers).sum(),
        Value::Object(o) => o.values().map(count_numbers).sum(),
        _ => 0,
    }
}

#[test]
fn stdout_output_and_single_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("p.jsonl");
    std::fs::write(
        &input,
        "{\"prediction\": \"the cat sat on the mat\", \"reference\": \"the cat sat on the mat\"}\n",
    )
    .unwrap();
    let out = Command::new(bartleby_bin())
        .args(["score", "--input", input.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["per_example"][0]["id"], 0);
    assert_eq!(v["per_example"][0]["rougeL"]["fmeasure"], 1.0);
    assert!((v["corpus"]["bleu"].as_f64().unwrap() - 100.0).abs() < 1e-9);
    assert_eq!(v["corpus"]["rouge1"]["low"], 1.0);
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// Runs `score` on `input_text` written to `in.jsonl`; asserts a clear one-line failure.
fn assert_score_error(input_text: &[u8], extra: &[&str], needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, input_text).unwrap();
    let output: PathBuf = tmp.path().join("scores.json");
    assert_clear_error(&score(&input, &output, extra), &output, needles);
}

const GOOD: &[u8] = b"{\"id\": 1, \"prediction\": \"a b c\", \"references\": [\"a b d\"]}\n";

fn with_line(line: &[u8]) -> Vec<u8> {
    let mut v = GOOD.to_vec();
    v.extend_from_slice(line);
    v.push(b'\n');
    v
}

#[test]
fn empty_file() {
    assert_score_error(b"", &[], &["in.jsonl", "no pairs"]);
    assert_score_error(b"\n  \n", &[], &["in.jsonl", "no pairs"]);
}

#[test]
fn missing_fields() {
    assert_score_error(
        &with_line(b"{\"references\": [\"x\"]}"),
        &[],
        &["in.jsonl line 2", "missing field \"prediction\""],
    );
    assert_score_error(
        &with_line(b"{\"prediction\": \"x\"}"),
        &[],
        &["in.jsonl line 2", "missing field \"references\""],
    );
}

#[test]
fn wrong_types() {
    assert_score_error(
        &with_line(b"{\"prediction\": 5, \"references\": [\"x\"]}"),
        &[],
        &["in.jsonl line 2", "\"prediction\" must be a string"],
    );
    assert_score_error(
        &with_line(b"{\"prediction\": \"x\", \"references\": \"x\"}"),
        &[],
        &[
            "in.jsonl line 2",
            "\"references\" must be a list of strings",
        ],
    );
    assert_score_error(
        &with_line(b"{\"prediction\": \"x\", \"references\": [\"x\", null]}"),
        &[],
        &["in.jsonl line 2", "\"references\"[1] must be a string"],
    );
    assert_score_error(
        &with_line(b"{\"prediction\": \"x\", \"reference\": [\"x\"]}"),
        &[],
        &["in.jsonl line 2", "\"reference\" must be a string"],
    );
    assert_score_error(
        &with_line(b"[\"x\"]"),
        &[],
        &["in.jsonl line 2", "expected a JSON object"],
    );
    assert_score_error(
        &with_line(b"{\"prediction\": \"x\", "),
        &[],
        &["in.jsonl line 2", "invalid JSON"],
    );
}

#[test]
fn empty_references_list() {
    assert_score_error(
        &with_line(b"{\"prediction\": \"x\", \"references\": []}"),
        &[],
        &["in.jsonl line 2", "\"references\" is an empty list"],
    );
}

#[test]
fn non_utf8_line() {
    assert_score_error(
        &with_line(b"{\"prediction\": \"caf\xe9\", \"references\": [\"x\"]}"),
        &[],
        &["in.jsonl line 2", "not valid UTF-8"],
    );
}

#[test]
fn unknown_or_unavailable_metric() {
    // bertscore is available now (tests/bertscore.rs); a missing encoder is its error.
    assert_score_error(
        GOOD,
        &[
            "--metrics",
            "rouge,bertscore",
            "--bertscore-model",
            "./no/such/model",
            "--bertscore-layer",
            "1",
        ],
        &["--bertscore-model", "no such model directory"],
    );
    assert_score_error(
        GOOD,
        &["--metrics", "foo"],
        &["--metrics", "unknown metric \"foo\""],
    );
    assert_score_error(
        GOOD,
        &["--metrics", "bleu", "--hf-evaluate"],
        &["--hf-evaluate", "rouge"],
    );
}

#[test]
fn missing_input_and_bad_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("scores.json");
    let run = score(Path::new("./no/such/pairs.jsonl"), &output, &[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("./no/such/pairs.jsonl"),
        "{}",
        run.stderr
    );
    assert!(!output.exists());
    // clap's own errors exit 2.
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, GOOD).unwrap();
    for bad in [
        &["--bootstrap-samples", "0"][..],
        &["--bleu-pad", "zero"][..],
        &["--bootstrap-seed", "-1"][..],
    ] {
        let run = score(&input, &output, bad);
        assert_eq!(run.code, Some(2), "{bad:?}: {}", run.stderr);
        assert!(!output.exists());
    }
}
