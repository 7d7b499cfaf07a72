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

/// T5 with no flags at all: the summarization pipeline's prefix ("summarize: ") and its
/// settings (task_specific_params.summarization over generation_config.json), the tokenizer's
/// model_max_length as the input window — the summary text transformers' `pipeline(
/// "summarization")` returned for the same dialogues.
#[test]
fn t5_summarize_matches_the_summarization_pipeline() {
    let fx = parity("t5-relu-tied");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let texts = fx["texts"].as_array().unwrap();
    let index: Vec<usize> = fx["pipeline_texts_index"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as usize)
        .collect();
    let lines: Vec<String> = index
        .iter()
        .map(|&i| serde_json::json!({"dialogue": texts[i]}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = tmp.path().join("out.jsonl");
    let out = run_summarize("t5-relu-tied", &input, &output, &[]);
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
    let expected = fx["pipeline_summaries"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, want) in rows.iter().zip(expected) {
        assert_eq!(&row["summary"], want);
    }
    // Without the prefix the model reads other ids, and says something else.
    let output2 = tmp.path().join("out2.jsonl");
    let out = run_summarize("t5-relu-tied", &input, &output2, &["--prefix", ""]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        std::fs::read_to_string(&output2).unwrap(),
        std::fs::read_to_string(&output).unwrap()
    );
}

/// `bartleby summarize` with the model's own generation settings writes, for each input, the
/// token ids transformers' `generate()` produced for it (fixture case g_model_defaults).
#[test]
fn summarize_jsonl_matches_transformers_ids() {
    for model in MODELS.into_iter().chain(T5_MODELS) {
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

/// A minimal stand-in for the Hugging Face hub's file endpoint
/// (`GET /{repo}/resolve/main/{file}` with `Range`, answering with etag, x-repo-commit and
/// content-range as the hub does), serving a fixture model directory.
fn serve_hub(
    repo: &'static str,
    dir: std::path::PathBuf,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut range_start = 0usize;
            let mut range_end: Option<usize> = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = r.trim().split_once('-').unwrap();
                    range_start = a.parse().unwrap();
                    range_end = b.parse().ok();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let prefix = format!("/{repo}/resolve/main/");
            let file = path.strip_prefix(&prefix).map(|f| dir.join(f));
            let reply = match file.filter(|f| f.is_file()) {
                Some(f) => {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let bytes = std::fs::read(&f).unwrap();
                    let end = range_end.unwrap_or(bytes.len() - 1).min(bytes.len() - 1);
                    let body = &bytes[range_start..=end];
                    let mut head = format!(
                        "HTTP/1.1 206 Partial Content\r\netag: \"{:x}\"\r\nx-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\ncontent-range: bytes {range_start}-{end}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        bytes.len() * 31 + f.file_name().unwrap().len(),
                        bytes.len(),
                        body.len()
                    )
                    .into_bytes();
                    head.extend_from_slice(body);
                    head
                }
                None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    (addr, served)
}

/// `--model ORG/NAME` downloads into the HF cache (HF_HOME) through the hub API, gives the same
/// output as the local directory, and then works offline from the cache.
#[test]
fn hub_download_then_offline_cache() {
    let (endpoint, served) = serve_hub("bartleby-test/tiny-gelu", model_dir("tiny-gelu"));
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"dialogue\": \"A: are we meeting at 5?\\nB: yes, see you\"}\n",
    )
    .unwrap();
    let run = |model: &str, offline: bool, out: &str| {
        let mut cmd = Command::new(bartleby_bin());
        cmd.args([
            "summarize",
            "--model",
            model,
            "--input",
            input.to_str().unwrap(),
        ])
        .args(["--output", tmp.path().join(out).to_str().unwrap()])
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_ENDPOINT", &endpoint)
        .env_remove("HF_TOKEN");
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        } else {
            cmd.env_remove("HF_HUB_OFFLINE");
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read_to_string(tmp.path().join(out)).unwrap()
    };
    let local = run(
        model_dir("tiny-gelu").to_str().unwrap(),
        false,
        "local.jsonl",
    );
    let hub = run("bartleby-test/tiny-gelu", false, "hub.jsonl");
    assert_eq!(hub, local);
    assert!(
        served.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "files came from the hub stand-in"
    );
    assert!(
        tmp.path()
            .join("hf/hub/models--bartleby-test--tiny-gelu")
            .is_dir(),
        "standard HF cache layout"
    );
    let offline = run("bartleby-test/tiny-gelu", true, "offline.jsonl");
    assert_eq!(offline, local);
}
