//! End-to-end: the `bartleby summarize` binary on fixture models and real dialogues.

use bartleby_tests::*;
use serde_json::Value;
use std::process::Command;

fn run_summarize(
    model: &str,
    input: &std::path::Path,
    output: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(bartleby_bin())
        .args(["summarize", "--model", model_dir(model).to_str().unwrap()])
        .args([
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap()
}

/// `bartleby summarize` with the model's own generation settings writes, for each input, the
/// token ids transformers' `generate()` produced for it (fixture case g_model_defaults).
#[test]
fn summarize_jsonl_matches_transformers_ids() {
    for model in MODELS {
        let fx = parity(model);
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in.jsonl");
        let texts = fx["texts"].as_array().unwrap();
        let lines: Vec<String> = [4usize, 5]
            .iter()
            .map(|&i| serde_json::json!({"id": format!("t{i}"), "dialogue": texts[i]}).to_string())
            .collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let output = tmp.path().join("out.jsonl");
        let max_input = fx["max_input_tokens"].to_string();
        let out = run_summarize(
            model,
            &input,
            &output,
            &["--max-input-tokens", &max_input, "--batch-size", "1"],
        );
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = std::fs::read_to_string(&output).unwrap();
        let rows: Vec<Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        // The summarization defaults: task_specific_params.summarization when config.json has
        // them (case h), else the model's generation config (case g).
        let gens = fx["generations"].as_array().unwrap();
        let case_name = if gens.iter().any(|g| g["name"] == "h_task_specific_params") {
            "h_task_specific_params"
        } else {
            "g_model_defaults"
        };
        let cases: Vec<&Value> = gens
            .iter()
            .filter(|g| {
                g["name"] == case_name && g["batch_texts_index"].as_array().unwrap().len() == 1
            })
            .collect();
        assert_eq!(cases.len(), 2, "{model}: {case_name}");
        for (row, i) in rows.iter().zip([4u64, 5]) {
            assert_eq!(row["id"], format!("t{i}"));
            let case = cases
                .iter()
                .find(|c| c["batch_texts_index"][0] == i)
                .unwrap();
            let expected = u32_rows(&case["sequences"]).remove(0);
            assert_eq!(
                u32_rows(&Value::Array(vec![row["token_ids"].clone()]))[0],
                expected,
                "{model}: text {i}"
            );
            assert!(row["summary"].is_string());
        }
    }
}

/// Real data: CSV and plain-text inputs, flags overriding the model's settings, stdin/stdout.
#[test]
fn summarize_real_dialogues_csv_text_and_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let data = root().join("../shared/data/samsum/validation.jsonl");
    let source = std::fs::read_to_string(&data).expect("../shared/data/samsum/validation.jsonl");
    let mut csv = String::from("id,dialogue\n");
    let mut first = String::new();
    for line in source.lines().take(5) {
        let v: Value = serde_json::from_str(line).unwrap();
        let d = v["dialogue"].as_str().unwrap();
        if first.is_empty() {
            first = d.to_string();
        }
        csv.push_str(&format!(
            "{},\"{}\"\n",
            v["id"].as_str().unwrap(),
            d.replace('"', "\"\"")
        ));
    }
    let input = tmp.path().join("in.csv");
    std::fs::write(&input, csv).unwrap();
    let output = tmp.path().join("out.jsonl");
    let out = run_summarize(
        "tiny-gelu",
        &input,
        &output,
        &[
            "--num-beams",
            "2",
            "--max-length",
            "12",
            "--early-stopping",
            "never",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    for row in &rows {
        let ids = row["token_ids"].as_array().unwrap();
        assert!(ids.len() <= 12 && ids[0] == 2, "{row}");
    }

    // Plain text on stdin → one summary on stdout, same as the first CSV row.
    let mut child = Command::new(bartleby_bin())
        .args([
            "summarize",
            "--model",
            model_dir("tiny-gelu").to_str().unwrap(),
        ])
        .args([
            "--num-beams",
            "2",
            "--max-length",
            "12",
            "--early-stopping",
            "never",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(first.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let row: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["token_ids"], rows[0]["token_ids"]);
    assert_eq!(row["summary"], rows[0]["summary"]);
}
