//! End-to-end: `bartleby train` on a tiny model and real dialogues (../shared/data), then
//! `merge` and `summarize`; an interrupted run resumed equals an uninterrupted one; bad input.

use bartleby_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn data() -> String {
    root()
        .join("../shared/data/dialogsum")
        .to_str()
        .unwrap()
        .to_string()
}

/// A small run: 16 training dialogues, 4 for validation, 2 epochs of 2 steps.
fn train_args<'a>(runs: &'a str, name: &'a str, model: &'a str, data: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--data",
        data,
        "--runs-dir",
        runs,
        "--name",
        name,
        "--train-size",
        "16",
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
        "--lr",
        "1e-3",
        "--seed",
        "3",
        "--save-every",
        "1",
    ]
}

/// [`train_args`] with one epoch instead of two.
fn one_epoch(mut args: Vec<&str>) -> Vec<&str> {
    let at = args.iter().position(|a| *a == "--epochs").unwrap();
    args[at + 1] = "1";
    args
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// T5 through the CLI: LoRA on PEFT's T5 default targets (q, v) with the "summarize: " prefix on
/// every source, QLoRA (q8 base) and full fine-tuning each run a few steps, and the LoRA run's
/// adapter merges into a checkpoint that summarizes.
#[test]
fn t5_train_lora_qlora_full_then_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let model = model_dir("t5-relu-tied");
    let data = data();
    ok(&bartleby(&one_epoch(train_args(
        runs,
        "lora",
        model.to_str().unwrap(),
        &data,
    ))));
    let run = tmp.path().join("lora");
    let cfg = read_json(&run.join("adapter/adapter_config.json"));
    assert_eq!(cfg["target_modules"], serde_json::json!(["q", "v"]));
    assert!(metrics(&run).iter().any(|l| l["loss"].is_number()));
    // QLoRA and full fine-tuning on the gated model (its widths 16/24 take q8 blocks of 8).
    let gated = model_dir("t5-gatedsilu-f16");
    let gated = gated.to_str().unwrap();
    let mut qlora = one_epoch(train_args(runs, "qlora", gated, &data));
    qlora.extend(["--base-quant", "q8", "--quant-block", "8"]);
    ok(&bartleby(&qlora));
    let mut full = one_epoch(train_args(runs, "full", gated, &data));
    full.extend(["--method", "full"]);
    ok(&bartleby(&full));
    let merged = tmp.path().join("merged");
    let out = bartleby(&[
        "merge",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        run.join("adapter").to_str().unwrap(),
        "--output",
        merged.to_str().unwrap(),
    ]);
    ok(&out);
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"dialogue\": \"A: hi there\\nB: hello\"}\n").unwrap();
    let out = bartleby(&[
        "summarize",
        "--model",
        merged.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("out.jsonl").to_str().unwrap(),
    ]);
    ok(&out);
}

#[test]
fn train_then_merge_then_summarize() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let model = model_dir("tiny-gelu");
    let data = data();
    ok(&bartleby(&train_args(
        runs,
        "r",
        model.to_str().unwrap(),
        &data,
    )));
    let run = tmp.path().join("r");
    for f in [
        "config.toml",
        "metrics.jsonl",
        "loss.png",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/tokenizer.json",
        "best/adapter_config.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let lines = metrics(&run);
    let steps: Vec<u64> = lines
        .iter()
        .filter(|l| l["loss"].is_number())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    let evals = lines.iter().filter(|l| l["val_loss"].is_number()).count();
    assert_eq!(evals, 2, "one validation per epoch");
    let cfg = read_json(&run.join("adapter/adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 8);
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );

    // The trained adapter is not a no-op, and merging it keeps the generations.
    let merged = tmp.path().join("merged");
    let adapter = run.join("adapter");
    let out = bartleby(&[
        "merge",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--output",
        merged.to_str().unwrap(),
    ]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("identical 4/4"));
    let input = tmp.path().join("in.txt");
    std::fs::write(
        &input,
        "Anna: lunch at noon?\nTom: sure, see you at the cafe",
    )
    .unwrap();
    let summarize = |model: &Path, adapter: Option<&Path>, out: &str| -> Value {
        let out_path = tmp.path().join(out);
        let mut args = vec![
            "summarize",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out_path.to_str().unwrap(),
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter", a.to_str().unwrap()]);
        }
        ok(&bartleby(&args));
        serde_json::from_str(std::fs::read_to_string(out_path).unwrap().trim()).unwrap()
    };
    let with_adapter = summarize(&model, Some(&adapter), "a.jsonl");
    let from_merged = summarize(&merged, None, "m.jsonl");
    assert_eq!(with_adapter["token_ids"], from_merged["token_ids"]);
}

/// `--device wgpu` (Vulkan; lavapipe in CI) runs the same training loop and writes the adapter,
/// when built with the `wgpu` feature as `tests/run.sh` does (the step math on wgpu is checked
/// against PyTorch + PEFT in tests/train.rs).
#[test]
fn train_on_wgpu() {
    if !bartleby::device::WGPU_BUILT {
        eprintln!("train_on_wgpu: built without wgpu; not run");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir("tiny-gelu");
    let data = data();
    let mut args = train_args(
        tmp.path().to_str().unwrap(),
        "w",
        model.to_str().unwrap(),
        &data,
    );
    args.extend(["--device", "wgpu"]);
    ok(&bartleby(&args));
    let run = tmp.path().join("w");
    assert!(run.join("adapter/adapter_model.safetensors").is_file());
    let losses: Vec<f64> = metrics(&run)
        .iter()
        .filter_map(|l| l["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    check_resume(&[]);
}

/// f16 mixed precision: the loss scale and skipped-step count are part of the checkpoint.
#[test]
fn resumed_f16_run_equals_uninterrupted_run() {
    let metrics = check_resume(&["--precision", "f16"]);
    let steps: Vec<&Value> = metrics.iter().filter(|l| l.get("lr").is_some()).collect();
    assert!(!steps.is_empty());
    assert!(steps.iter().all(|l| l["loss_scale"].as_f64().is_some()));
}

/// Runs `train` whole and killed after step 3 then resumed, with `extra` flags; asserts equal
/// adapters and metrics and returns the metrics.
fn check_resume(extra: &[&str]) -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let model = model_dir("tiny-gelu");
    let model = model.to_str().unwrap();
    let data = data();
    let mut whole_args = train_args(runs, "whole", model, &data);
    whole_args.extend(extra);
    ok(&bartleby(&whole_args));
    let mut killed = train_args(runs, "resumed", model, &data);
    killed.extend(extra);
    killed.extend(["--stop-after-step", "3"]);
    let out = bartleby(&killed);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!tmp.path().join("resumed/adapter").exists());
    let resumed = tmp.path().join("resumed");
    ok(&bartleby(&["train", "--resume", resumed.to_str().unwrap()]));
    let whole = tmp.path().join("whole");
    for f in [
        "adapter/adapter_model.safetensors",
        "best/adapter_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(whole.join(f)).unwrap(),
            std::fs::read(resumed.join(f)).unwrap(),
            "{f} differs after resume"
        );
    }
    let strip = |v: Vec<Value>| -> Vec<Value> {
        v.into_iter()
            .map(|mut l| {
                for k in ["tokens_per_s", "elapsed_s", "peak_rss_bytes", "time"] {
                    l.as_object_mut().unwrap().remove(k);
                }
                l
            })
            .collect()
    };
    let got = strip(metrics(&resumed));
    assert_eq!(strip(metrics(&whole)), got);
    got
}

#[test]
fn train_bad_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let model = model_dir("tiny-gelu");
    let model = model.to_str().unwrap();
    let data = data();
    let no_summary = tmp.path().join("bad.jsonl");
    std::fs::write(&no_summary, "{\"id\": 1, \"dialogue\": \"A: hi\"}\n").unwrap();
    let bad_cfg = tmp.path().join("bad.toml");
    std::fs::write(&bad_cfg, "lora_r = 8\nno_such_field = 1\n").unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--train-size", "100000"],
            vec!["train_size 100000", "larger"],
        ),
        (vec!["--epochs", "0"], vec!["nothing to train"]),
        (
            vec!["--target-modules", "nope_proj"],
            vec!["nope_proj", "match no projection"],
        ),
        (
            vec!["--precision", "bf16", "--method", "full"],
            vec!["precision bf16", "method = lora"],
        ),
        (
            vec!["--precision", "f16", "--base-quant", "q8"],
            vec!["precision f16", "base_quant"],
        ),
        (
            vec!["--data", no_summary.to_str().unwrap()],
            vec!["bad.jsonl line 1", "summary"],
        ),
        (
            vec!["--config", bad_cfg.to_str().unwrap()],
            vec!["bad.toml", "no_such_field"],
        ),
        (vec!["--train-split", "nope"], vec!["no split \"nope\""]),
    ];
    for (extra, needles) in cases {
        let mut args = vec![
            "train",
            "--model",
            model,
            "--data",
            &data,
            "--runs-dir",
            runs,
            "--name",
            "bad",
            "--max-source-tokens",
            "48",
            "--max-target-tokens",
            "16",
        ];
        args.extend(extra);
        let out_dir = tmp.path().join("bad");
        // Nothing is created when the configuration or the data is bad.
        assert_clear_error(&bartleby(&args).into(), &out_dir, &needles);
    }
    // An unwritable runs directory (a path through a regular file: refused even to root).
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let runs_under_file = blocker.join("runs");
    let run: Run = bartleby(&train_args(
        runs_under_file.to_str().unwrap(),
        "x",
        model,
        &data,
    ))
    .into();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("cannot create run directory"),
        "{}",
        errors[0]
    );
    let missing = tmp.path().join("nothing-here");
    let run: Run = bartleby(&["train", "--resume", missing.to_str().unwrap()]).into();
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("config.toml"), "{}", run.stderr);
}

/// `BARTLEBY_BLAS` naming a library that cannot be loaded, or one without `cblas_sgemm`: one
/// error line naming the variable, exit 1, no run directory.
#[test]
fn bad_blas_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let model = model_dir("tiny-gelu");
    let data = data();
    let args = train_args(runs, "blas", model.to_str().unwrap(), &data);
    for (choice, needle) in [
        ("/nonexistent/libnope.so", "cannot load"),
        ("libm.so.6", "does not export cblas_sgemm"),
    ] {
        let run: Run = std::process::Command::new(bartleby_bin())
            .args(&args)
            .env("BARTLEBY_BLAS", choice)
            .output()
            .unwrap()
            .into();
        let named = format!("BARTLEBY_BLAS={choice}");
        assert_clear_error(&run, &tmp.path().join("blas"), &[&named, needle]);
    }
}

/// A disk that fills up at the first checkpoint (`ulimit -f`, EFBIG as for a full disk's ENOSPC):
/// one error line naming the file, exit 1, and no checkpoint or temp file left half-written —
/// only the run's config and the metrics logged so far.
#[cfg(unix)]
#[test]
fn full_disk_at_a_checkpoint_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let model = model_dir("tiny-gelu");
    let data = data();
    let mut args = train_args(
        runs.to_str().unwrap(),
        "full",
        model.to_str().unwrap(),
        &data,
    );
    args.extend(["--method", "full"]); // 180 KB of weights per checkpoint
    let run = bartleby_with_file_limit(16, &args);
    let checkpoint = runs.join("full").join("checkpoint");
    assert_clear_error(&run, &checkpoint, &[".safetensors: write failed"]);
    let mut files: Vec<String> = walk(&runs)
        .iter()
        .map(|p| p.strip_prefix(&runs).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "full/.lock",
            "full/config.toml",
            "full/events.out.tfevents.bartleby",
            "full/metrics.jsonl"
        ],
        "left behind: {files:?}"
    );
    // A run without a checkpoint does not block: `--resume` starts it again from its config
    // (here stopped after step 1, as if killed, with its first checkpoint written) ...
    let dir = runs.join("full");
    let run: Run = bartleby(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--stop-after-step",
        "1",
    ])
    .into();
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(dir.join("checkpoint").is_dir());
    // ... and once it has a checkpoint, a fresh start under the same name is refused.
    let run: Run = bartleby(&args).into();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    // The same command again after a failure before any checkpoint: starts again.
    let mut again = train_args(
        runs.to_str().unwrap(),
        "again",
        model.to_str().unwrap(),
        &data,
    );
    again.extend(["--method", "full"]);
    let run = bartleby_with_file_limit(16, &again);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    ok(&bartleby(&again));
    assert_eq!(metrics(&runs.join("again")).first().unwrap()["step"], 1);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `--name` must be a plain name: `..`, separators, absolute paths and "" are refused before
/// anything is written; a run directory in use (its `.lock` held) refuses a second process.
#[test]
fn run_names_and_the_run_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("runs");
    let runs = runs_dir.to_str().unwrap();
    let model = model_dir("tiny-gelu");
    let data = data();
    let outside = tmp.path().join("x");
    for name in ["../x", "a/b", outside.to_str().unwrap(), "", ".hidden"] {
        let run: Run = bartleby(&train_args(runs, name, model.to_str().unwrap(), &data)).into();
        assert_eq!(run.code, Some(1), "{name:?}: {}", run.stderr);
        assert_eq!(
            run.stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1
        );
        assert!(run.stderr.contains("--name"), "{name:?}: {}", run.stderr);
        assert!(!outside.exists() && !tmp.path().join("runs/a").exists());
    }
    // A finished small run, then its lock held by this test: resume refuses, naming the run.
    let args = one_epoch(train_args(runs, "locked", model.to_str().unwrap(), &data));
    ok(&bartleby(&args));
    let dir = runs_dir.join("locked");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    let run: Run = bartleby(&["train", "--resume", dir.to_str().unwrap()]).into();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("in use by another bartleby process"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).unwrap(), before);
    drop(lock);
}

/// A decoder-only model through the CLI (the GQA Llama; SAMSum's short dialogues fit its 512
/// positions with the chat template): LoRA on the default targets (q_proj, v_proj), QLoRA on a
/// q8 base and full fine-tuning each run an epoch; the LoRA adapter merges into a checkpoint
/// that summarizes like the unmerged adapter.
#[test]
fn llama_train_lora_qlora_full_then_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let model = model_dir("llama-gqa-llama3-tied");
    let model = model.to_str().unwrap();
    let data = root().join("../shared/data/samsum");
    let data = data.to_str().unwrap();
    let with_source = |mut args: Vec<&'static str>| {
        let at = args
            .iter()
            .position(|a| *a == "--max-source-tokens")
            .unwrap();
        args[at + 1] = "512";
        args
    };
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let base = |name: &str| {
        with_source(one_epoch(train_args(
            leak(runs),
            leak(name),
            leak(model),
            leak(data),
        )))
    };
    ok(&bartleby(&base("lora")));
    let run = tmp.path().join("lora");
    let cfg = read_json(&run.join("adapter/adapter_config.json"));
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    let losses: Vec<f64> = metrics(&run)
        .iter()
        .filter_map(|l| l["loss"].as_f64())
        .collect();
    assert!(!losses.is_empty() && losses.iter().all(|l| l.is_finite()));
    let mut qlora = base("qlora");
    qlora.extend(["--base-quant", "q8", "--quant-block", "8"]);
    ok(&bartleby(&qlora));
    let mut full = base("full");
    full.extend(["--method", "full"]);
    ok(&bartleby(&full));
    assert!(
        tmp.path().join("full/model/chat_template.jinja").is_file()
            || tmp.path().join("full").is_dir()
    );
    let merged = tmp.path().join("merged");
    ok(&bartleby(&[
        "merge",
        "--model",
        model,
        "--adapter",
        run.join("adapter").to_str().unwrap(),
        "--output",
        merged.to_str().unwrap(),
    ]));
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"dialogue\": \"A: hi there\\nB: hello\"}\n").unwrap();
    let summarize = |model: &str, extra: &[&str]| {
        let out = tmp.path().join("out.jsonl");
        let mut args = vec![
            "summarize",
            "--model",
            model,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--chat-template-kwargs",
            "{\"date_string\": \"26 Jul 2024\"}",
        ];
        args.extend_from_slice(extra);
        ok(&bartleby(&args));
        std::fs::read_to_string(out).unwrap()
    };
    assert_eq!(
        summarize(merged.to_str().unwrap(), &[]),
        summarize(model, &["--adapter", run.join("adapter").to_str().unwrap()])
    );
}
