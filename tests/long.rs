//! `--long chunk` (issue 24) against the reference of `tools/reference/make_long_fixtures.py`: an
//! independent Python implementation of the splitting over transformers' tokenizer and
//! `generate()` (one window at a time), for BART and T5 (prefix), with and without overlap.
//! Windows of every level, chunk and level counts, and the final ids must be equal; inputs that
//! fit must give `truncate`'s ids.

use bartleby_core::long::{join_partials, split};
use bartleby_core::{LongMode, LongOptions, Summarizer};
use bartleby_tests::{fixtures, load, read_json, u32_rows};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    u32_rows(&Value::Array(vec![v.clone()])).remove(0)
}

fn check(name: &str) {
    let fx = read_json(&fixtures().join("long").join(format!("{name}.json")));
    let device = burn::tensor::Device::flex();
    let s: Summarizer = load(name, &device);
    let max_input = fx["max_input_tokens"].as_u64().unwrap() as usize;
    let partial = fx["partial_max_new_tokens"].as_u64().unwrap() as usize;
    let texts: Vec<&str> = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let (gen, _) = s.summarization_generation().unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let i = case["text_index"].as_u64().unwrap() as usize;
        let overlap = case["overlap_tokens"].as_u64().unwrap() as usize;
        let what = format!("{name}: text {i}, overlap {overlap}");
        // The windows of every level, given the reference's partial summaries of the level before.
        let mut source = texts[i].to_string();
        for (level, expected) in case["level_windows"].as_array().unwrap().iter().enumerate() {
            let windows: Vec<&str> = split(&source, &s, max_input, overlap)
                .unwrap()
                .into_iter()
                .map(|r| &source[r])
                .collect();
            let want: Vec<&str> = expected["windows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            assert_eq!(windows, want, "{what}: windows of level {}", level + 1);
            for w in &windows {
                assert!(
                    s.encode(w, usize::MAX).unwrap().len() <= max_input,
                    "{what}"
                );
            }
            let partials: Vec<String> = expected["partials"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            source = join_partials(&partials);
        }
        // The whole run, windows batched 4 at a time.
        let long = LongOptions {
            mode: LongMode::Chunk,
            overlap_tokens: overlap,
            partial_max_new_tokens: Some(partial),
        };
        let out = s
            .summarize_long(&[texts[i]], &gen, max_input, &long, 4, &mut |_| {})
            .unwrap();
        let (summaries, info) = &out[0];
        assert_eq!(summaries[0].token_ids, ids(&case["token_ids"]), "{what}");
        assert_eq!(
            info.chunks as u64,
            case["chunks"].as_u64().unwrap(),
            "{what}"
        );
        assert_eq!(
            info.levels as u64,
            case["levels"].as_u64().unwrap(),
            "{what}"
        );
        assert!(!info.truncated);
        // Truncate: transformers' ids, and whether it cut.
        let out = s
            .summarize_long(
                &[texts[i]],
                &gen,
                max_input,
                &LongOptions::default(),
                4,
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(
            out[0].0[0].token_ids,
            ids(&case["truncate_token_ids"]),
            "{what}"
        );
        assert_eq!(out[0].1.truncated, info.levels > 1, "{what}");
        if info.levels == 1 {
            // An input that fits: the same ids either way.
            assert_eq!(info.chunks, 1);
            assert_eq!(case["token_ids"], case["truncate_token_ids"], "{what}");
        }
    }
    // All texts at once (windows of several inputs share batches): the same results.
    let long = LongOptions {
        mode: LongMode::Chunk,
        overlap_tokens: 0,
        partial_max_new_tokens: Some(partial),
    };
    let out = s
        .summarize_long(&texts, &gen, max_input, &long, 8, &mut |_| {})
        .unwrap();
    for (i, (summaries, _)) in out.iter().enumerate() {
        let case = fx["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["text_index"] == i as u64 && c["overlap_tokens"] == 0)
            .unwrap();
        assert_eq!(
            summaries[0].token_ids,
            ids(&case["token_ids"]),
            "{name}: batched text {i}"
        );
    }
}

#[test]
fn bart_chunking_matches_the_reference() {
    check("tiny-gelu");
}

#[test]
fn t5_chunking_matches_the_reference() {
    check("t5-relu-tied");
}

/// A window too small to make progress (partial summaries as long as their input) is a clear
/// error, not a loop.
#[test]
fn no_progress_is_an_error() {
    let device = burn::tensor::Device::flex();
    let s = load("tiny-gelu", &device);
    let (gen, _) = s.summarization_generation().unwrap();
    let text = "A: one two three four five six seven eight nine ten.\n".repeat(20);
    let long = LongOptions {
        mode: LongMode::Chunk,
        overlap_tokens: 0,
        partial_max_new_tokens: Some(40),
    };
    let err = s
        .summarize_long(&[&text], &gen, 12, &long, 4, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("too small to make progress"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bartleby_tests::bartleby_bin())
        .args(args)
        .output()
        .unwrap()
}

/// `summarize --long chunk` through the binary: each row says how it was made; the ids equal
/// the core's (tested against the reference above); a short input has truncate's ids.
#[test]
fn summarize_cli_reports_chunks_and_levels() {
    let fx = read_json(&fixtures().join("long").join("tiny-gelu.json"));
    let texts = fx["texts"].as_array().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let lines: Vec<String> = [1usize, 2]
        .iter()
        .map(|&i| serde_json::json!({"id": i, "dialogue": texts[i]}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let model = bartleby_tests::model_dir("tiny-gelu");
    let run = |extra: &[&str]| -> Vec<Value> {
        let output = tmp.path().join("out.jsonl");
        let mut args = vec![
            "summarize",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--max-input-tokens",
            "48",
        ];
        args.extend_from_slice(extra);
        let out = cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let chunked = run(&[
        "--long",
        "chunk",
        "--partial-max-new-tokens",
        "6",
        "--batch-size",
        "3",
    ]);
    let truncated = run(&[]);
    let case = |i: u64| {
        fx["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["text_index"] == i && c["overlap_tokens"] == 0)
            .unwrap()
            .clone()
    };
    for (row, i) in chunked.iter().zip([1u64, 2]) {
        let c = case(i);
        assert_eq!(row["token_ids"], c["token_ids"], "text {i}");
        assert_eq!(row["chunks"], c["chunks"]);
        assert_eq!(row["levels"], c["levels"]);
        assert!(row.get("truncated").is_none());
    }
    for (row, i) in truncated.iter().zip([1u64, 2]) {
        let c = case(i);
        assert_eq!(row["token_ids"], c["truncate_token_ids"], "text {i}");
        assert_eq!(row["truncated"], i == 1);
        assert!(row["input_tokens"].as_u64().unwrap() > if i == 1 { 48 } else { 0 });
    }
}

/// `eval --long chunk`: the metrics file records the options, the predictions say how each row
/// was made, and no chunked row is flagged as a truncated input.
#[test]
fn eval_with_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let model = bartleby_tests::model_dir("tiny-gelu");
    let data = bartleby_tests::root().join("../shared/data/dialogsum");
    let out = cli(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "3",
        "--name",
        "c",
        "--out",
        tmp.path().to_str().unwrap(),
        "--long",
        "chunk",
        "--max-input-tokens",
        "48",
        "--partial-max-new-tokens",
        "6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = read_json(&tmp.path().join("c_metrics.json"));
    assert_eq!(metrics["long"]["mode"], "chunk");
    assert_eq!(metrics["long"]["partial_max_new_tokens"], 6);
    assert_eq!(metrics["failures"]["counts"]["truncated_input"], 0);
    let mut csv = csv::Reader::from_path(tmp.path().join("c_predictions.csv")).unwrap();
    let headers = csv.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (chunks, levels) = (col("chunks"), col("levels"));
    for row in csv.records() {
        let row = row.unwrap();
        let n: usize = row[chunks].parse().unwrap();
        assert!(n > 1, "DialogSum rows are longer than 48 tiny-BPE tokens");
        assert!(row[levels].parse::<usize>().unwrap() >= 2);
    }
}

/// Bad flags: one line each, exit 2 for clap's, 1 for the rest, nothing written.
#[test]
fn bad_long_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"dialogue\": \"A: hi\"}\n").unwrap();
    let output = tmp.path().join("out.jsonl");
    let model = bartleby_tests::model_dir("tiny-gelu");
    let base = [
        "summarize",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    let cases: [(&[&str], i32, &str); 4] = [
        (&["--long", "summarize"], 2, "expected truncate or chunk"),
        (
            &["--long", "chunk", "--chunk-overlap", "64"],
            1,
            "--chunk-overlap 64 must be smaller than the input window (64 tokens)",
        ),
        (&["--chunk-overlap", "8"], 1, "need --long chunk"),
        (
            &["--long", "chunk", "--chunk-overlap", "-3"],
            2,
            "--chunk-overlap",
        ),
    ];
    for (extra, code, needle) in cases {
        let out = cli(&[&base[..], extra].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!output.exists());
    }
}
