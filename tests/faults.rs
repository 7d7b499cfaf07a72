//! Fault tests (issue 26): `kill -9` at spread points of `summarize`, `eval`, `merge`, `export`
//! and `train`, and two processes on one output. After a kill, an output either does not exist
//! or is complete — byte-identical to an uninterrupted run's — and a killed training run resumes
//! to the uninterrupted run's exact adapter and metrics. (A kill -9 cannot clean up: a hidden
//! `.bartleby-*` temp may stay beside the output; it is never the output.)

#![cfg(unix)]

use bartleby_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn data() -> PathBuf {
    root().join("../shared/data/dialogsum")
}

/// Runs `args` to the end and returns how long it took.
fn timed(args: &[String]) -> Duration {
    let t = Instant::now();
    let out = Command::new(bartleby_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// Starts `args` and SIGKILLs it after `after` (if still running); whether it was killed.
fn kill_after(args: &[String], after: Duration) -> bool {
    let mut child = Command::new(bartleby_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    status.code().is_none()
}

/// Every file under `p` (or `p` itself) with its bytes, paths relative to `p`, hidden temps left
/// out.
fn contents(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if p.is_file() {
        out.push((String::new(), std::fs::read(p).unwrap()));
        return out;
    }
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            let name = e.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with(".bartleby-") || name == ".lock" {
                continue;
            }
            if e.is_dir() {
                stack.push(e);
            } else {
                out.push((
                    e.strip_prefix(p).unwrap().display().to_string(),
                    std::fs::read(&e).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Outputs whose bytes vary run to run (timings) are compared without those fields.
fn normalized(files: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    files
        .into_iter()
        .filter(|(n, _)| {
            !n.ends_with(".png") && !n.ends_with("_metrics.csv") && !n.contains("tfevents")
        })
        .map(|(n, b)| {
            if n.ends_with("_metrics.json") {
                let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                v.as_object_mut().unwrap().remove("timing");
                (n, v.to_string().into_bytes())
            } else {
                (n, b)
            }
        })
        .collect()
}

/// Kills `make(out)` at spread points of its run time; after each kill the output is absent or
/// equal to the uninterrupted one.
fn check_kills(what: &str, out_name: &str, make: impl Fn(&Path) -> Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join(format!("ref-{out_name}"));
    let full = timed(&make(&reference));
    let want = normalized(contents(&reference));
    let mut killed = 0;
    for (i, f) in [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97]
        .into_iter()
        .enumerate()
    {
        let out = tmp.path().join(format!("k{i}-{out_name}"));
        if kill_after(&make(&out), full.mul_f64(f)) {
            killed += 1;
        }
        // Every output file there is complete: equal to the uninterrupted run's. (A file output
        // is there whole or not at all; a folder of several files gets them one rename at a
        // time.)
        if out.exists() {
            let got = normalized(contents(&out));
            let single = out.is_file();
            for (name, bytes) in &got {
                let same = want.iter().any(|(n, b)| n == name && b == bytes);
                assert!(
                    same,
                    "{what}: killed at {f} of its run: {name:?} is partial"
                );
            }
            if single || out_name == "merged" || out_name == "bundle" {
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{what}: killed at {f}: an incomplete output"
                );
            }
        }
    }
    assert!(
        killed > 0,
        "{what}: every run ended before its kill ({full:?})"
    );
}

#[test]
fn killed_summarize_eval_merge_export_leave_no_partial_output() {
    let model = model_dir("tiny-gelu");
    let m = model.to_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let rows =
        std::fs::read_to_string(root().join("../shared/data/samsum/validation.jsonl")).unwrap();
    std::fs::write(
        &input,
        rows.lines().take(300).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let input = input.to_str().unwrap().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    check_kills("summarize", "s.jsonl", |out| {
        s(&[
            "summarize",
            "--model",
            &m,
            "--input",
            &input,
            "--output",
            out.to_str().unwrap(),
        ])
    });
    let d = data();
    check_kills("eval", "eval", |out| {
        s(&[
            "eval",
            "--model",
            &m,
            "--data",
            d.to_str().unwrap(),
            "--limit",
            "60",
            "--name",
            "e",
            "--out",
            out.to_str().unwrap(),
        ])
    });
    let adapter = fixtures().join("lora/gelu-qv");
    check_kills("merge", "merged", |out| {
        s(&[
            "merge",
            "--model",
            &m,
            "--adapter",
            adapter.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--check-n",
            "40",
        ])
    });
    check_kills("export", "bundle", |out| {
        s(&[
            "export",
            "--model",
            &m,
            "--quant",
            "q4",
            "--block-size",
            "4",
            "--output",
            out.to_str().unwrap(),
            "--check-n",
            "40",
        ])
    });
}

/// `train` killed at spread points, then `--resume`d (or restarted, when no checkpoint was
/// written yet): the adapter and the metrics equal an uninterrupted run's.
#[test]
fn killed_train_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let model = model_dir("tiny-gelu");
    let d = data();
    let args = |name: &str| -> Vec<String> {
        [
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            d.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
            "--name",
            name,
            "--train-size",
            "32",
            "--val-size",
            "4",
            "--max-source-tokens",
            "48",
            "--max-target-tokens",
            "16",
            "--micro-batch",
            "4",
            "--grad-accum",
            "2",
            "--epochs",
            "2",
            "--seed",
            "3",
            "--save-every",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let full = timed(&args("whole"));
    let strip = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for k in ["tokens_per_s", "elapsed_s", "peak_rss_bytes", "time"] {
                    v.as_object_mut().unwrap().remove(k);
                }
                v
            })
            .collect()
    };
    let whole = runs.join("whole");
    let mut killed = 0;
    for (i, f) in [0.1, 0.3, 0.5, 0.7, 0.9].into_iter().enumerate() {
        let name = format!("k{i}");
        let dir = runs.join(&name);
        if kill_after(&args(&name), full.mul_f64(f)) {
            killed += 1;
        }
        if !dir.exists() {
            continue; // killed before the run directory: nothing to resume, nothing left
        }
        // Killed before its config was written: the same command starts it again.
        let again: Vec<String> = if dir.join("config.toml").exists() {
            vec![
                "train".into(),
                "--resume".into(),
                dir.to_str().unwrap().into(),
            ]
        } else {
            args(&name)
        };
        let out = Command::new(bartleby_bin()).args(&again).output().unwrap();
        assert!(
            out.status.success(),
            "killed at {f}: resume: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for file in [
            "adapter/adapter_model.safetensors",
            "best/adapter_model.safetensors",
        ] {
            assert_eq!(
                std::fs::read(whole.join(file)).unwrap(),
                std::fs::read(dir.join(file)).unwrap(),
                "killed at {f}: {file} differs after resume"
            );
        }
        assert_eq!(strip(&whole), strip(&dir), "killed at {f}: metrics differ");
    }
    assert!(killed > 0, "every run ended before its kill ({full:?})");
}

/// Two processes writing one output at once: each writes atomically, so the file is one run's
/// complete output, never a mix; two `train` on one run directory: the second stops.
#[test]
fn two_processes_on_one_output() {
    let model = model_dir("tiny-gelu");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let rows =
        std::fs::read_to_string(root().join("../shared/data/samsum/validation.jsonl")).unwrap();
    std::fs::write(
        &input,
        rows.lines().take(100).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let out = tmp.path().join("out.jsonl");
    let run = |extra: &[&str]| {
        Command::new(bartleby_bin())
            .args([
                "summarize",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
            ])
            .args(["--output", out.to_str().unwrap()])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (run(&[]), run(&["--num-beams", "1"]));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let written = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 100, "one run's complete output");
    for l in &lines {
        let _: serde_json::Value = serde_json::from_str(l).unwrap();
    }
}
