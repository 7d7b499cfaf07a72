//! `bartleby compare`: deltas against the first run and the interval-overlap rule, on metrics
//! files with known numbers and on two real `bartleby eval` runs; bad input.

use bartleby_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn compare(files: &[&Path], extra: &[&str]) -> std::process::Output {
    Command::new(bartleby_bin())
        .arg("compare")
        .args(files)
        .args(extra)
        .output()
        .unwrap()
}

/// A metrics file as `bartleby eval` writes it (the fields compare reads).
fn metrics_file(dir: &Path, name: &str, rouge: [(f64, f64, f64); 4], bleu: f64) -> PathBuf {
    let keys = ["rouge1", "rouge2", "rougeL", "rougeLsum"];
    let mut corpus = serde_json::Map::new();
    for (k, (low, mid, high)) in keys.iter().zip(rouge) {
        corpus.insert(k.to_string(), json!({"low": low, "mid": mid, "high": high}));
    }
    corpus.insert("bleu".into(), bleu.into());
    let doc = json!({
        "name": name, "model": format!("models/{name}"), "data": "d.jsonl", "split": "validation",
        "n": 200, "corpus": corpus,
    });
    let path = dir.join(format!("{name}_metrics.json"));
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

#[test]
fn deltas_and_overlap_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = metrics_file(
        t,
        "baseline",
        [
            (0.30, 0.32, 0.34),
            (0.10, 0.11, 0.12),
            (0.25, 0.27, 0.29),
            (0.25, 0.27, 0.29),
        ],
        10.0,
    );
    let lora = metrics_file(
        t,
        "lora",
        // rouge1 clearly above; rouge2 overlapping; rougeL touching (0.29 = 0.29: overlap); rougeLsum below.
        [
            (0.35, 0.37, 0.39),
            (0.115, 0.125, 0.135),
            (0.29, 0.31, 0.33),
            (0.20, 0.22, 0.24),
        ],
        12.5,
    );
    let out = t.join("cmp");
    let run = compare(
        &[&base, &lora],
        &["--out", out.to_str().unwrap(), "--name", "bl"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let md = String::from_utf8(run.stdout).unwrap();
    assert!(
        md.contains("| baseline | 200 | 32.00 [30.00, 34.00] | 11.00 [10.00, 12.00] |"),
        "{md}"
    );
    assert!(
        md.contains("| lora | 200 | 37.00 [35.00, 39.00] (+5.00*) | 12.50 [11.50, 13.50] (+1.50) | 31.00 [29.00, 33.00] (+4.00) | 22.00 [20.00, 24.00] (-5.00*) | 12.50 (+2.50) |"),
        "{md}"
    );
    assert!(md.contains("do not overlap"), "{md}");
    assert_eq!(std::fs::read_to_string(out.join("bl.md")).unwrap(), md);

    let doc = read_json(&out.join("bl.json"));
    assert_eq!(doc["baseline"], "baseline");
    let d = &doc["runs"][1]["deltas_vs_baseline"];
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-12;
    assert!(close(&d["rouge1"]["delta"], 0.05) && d["rouge1"]["significant"] == true);
    assert!(close(&d["rouge2"]["delta"], 0.015) && d["rouge2"]["significant"] == false);
    assert_eq!(d["rougeL"]["significant"], false);
    assert!(close(&d["rougeLsum"]["delta"], -0.05) && d["rougeLsum"]["significant"] == true);
    assert!(close(&d["bleu"]["delta"], 2.5) && d["bleu"]["significant"].is_null());
    assert_eq!(doc["runs"][0]["deltas_vs_baseline"], json!({}));
    assert_eq!(doc["warnings"], json!([]));
    let png = std::fs::read(out.join("bl.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000);
}

/// Two real eval runs (two fixture models on the same rows): the deltas are the differences of
/// their metrics files.
#[test]
fn compare_two_eval_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("metrics");
    let data = root().join("../shared/data/dialogsum");
    for (name, model) in [("gelu", "tiny-gelu"), ("silu", "tiny-silu")] {
        // Longer summaries than the models' own settings: ROUGE above 0 with random weights.
        let o = Command::new(bartleby_bin())
            .args(["eval", "--model", model_dir(model).to_str().unwrap()])
            .args([
                "--data",
                data.to_str().unwrap(),
                "--limit",
                "8",
                "--name",
                name,
            ])
            .args(["--min-length", "30", "--max-length", "40"])
            .args(["--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (a, b) = (out.join("gelu_metrics.json"), out.join("silu_metrics.json"));
    let run = compare(&[&a, &b], &["--out", out.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc = read_json(&out.join("compare.json"));
    let (ma, mb) = (read_json(&a), read_json(&b));
    for k in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
        let (ca, cb) = (&ma["corpus"][k], &mb["corpus"][k]);
        let f = |v: &Value, f: &str| v[f].as_f64().unwrap();
        let delta = &doc["runs"][1]["deltas_vs_baseline"][k];
        assert_eq!(
            delta["delta"].as_f64().unwrap(),
            f(cb, "mid") - f(ca, "mid"),
            "{k}"
        );
        let apart = f(cb, "low") > f(ca, "high") || f(cb, "high") < f(ca, "low");
        assert_eq!(delta["significant"], apart, "{k}");
        assert_eq!(doc["runs"][1]["scores"][k], *cb);
    }
    assert!(out.join("compare.png").is_file());
}

#[test]
fn bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let good = metrics_file(t, "a", [(0.1, 0.2, 0.3); 4], 1.0);
    let out = t.join("out");
    let fails = |files: &[&Path], needles: &[&str]| {
        let run = Run::from(compare(files, &["--out", out.to_str().unwrap()]));
        assert_clear_error(&run, &t.join("compare.json"), needles);
        assert!(!out.exists(), "a failed compare created {}", out.display());
    };
    fails(&[&good], &["at least two"]);
    let missing = t.join("missing.json");
    fails(&[&good, &missing], &["missing.json", "cannot read"]);
    let mut doc = read_json(&good);
    doc["corpus"]["rouge2"]
        .as_object_mut()
        .unwrap()
        .remove("low");
    let broken = t.join("broken.json");
    std::fs::write(&broken, doc.to_string()).unwrap();
    fails(
        &[&good, &broken],
        &["broken.json", "missing field \"corpus.rouge2.low\""],
    );
    doc["corpus"] = json!({"rouge1": {"low": "x", "mid": 1, "high": 1}});
    std::fs::write(&broken, doc.to_string()).unwrap();
    fails(
        &[&good, &broken],
        &[
            "broken.json",
            "field \"corpus.rouge1.low\" must be a number",
        ],
    );
    std::fs::write(&broken, "{not json").unwrap();
    fails(&[&good, &broken], &["broken.json", "invalid JSON"]);
}
