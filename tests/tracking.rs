//! Experiment tracking (issue 25): TensorBoard event files byte-identical to TensorBoard's own
//! writer (fixture of `tools/reference/make_tensorboard_fixture.py`), and the event files that
//! `train` and `eval` write next to their metrics.

use bartleby::tensorboard::{
    event_file_full, event_file_with_text, HParams, Scalar, Text, FILE_NAME,
};
use bartleby_tests::*;

#[test]
fn event_file_matches_tensorboards_writer() {
    let dir = fixtures().join("tensorboard");
    let fx = read_json(&dir.join("scalars.json"));
    let (scalars, texts) = fixture_events(&fx);
    let ours = event_file_with_text(fx["start"].as_f64().unwrap(), &scalars, &texts);
    let theirs = std::fs::read(dir.join("events.out.tfevents.reference")).unwrap();
    // The first record: the same wall time and file version; the writer's name is each one's own
    // (source_metadata.writer). Every scalar record: byte-identical, framing and CRCs included.
    let (ours_first, ours_rest) = split_first_record(&ours);
    let (theirs_first, theirs_rest) = split_first_record(&theirs);
    assert_eq!(ours_rest, theirs_rest);
    let strip_writer = |event: &[u8]| -> Vec<u8> {
        // wall_time (9 bytes) + file_version (2 + 13 bytes); source_metadata follows.
        event[..24].to_vec()
    };
    assert_eq!(strip_writer(ours_first), strip_writer(theirs_first));
    assert!(String::from_utf8_lossy(ours_first).contains("bartleby"));
    assert!(String::from_utf8_lossy(theirs_first).contains("tensorboard.summary.writer"));
}

#[test]
fn hparams_match_tensorboards_hparams_pb() {
    let dir = fixtures().join("tensorboard");
    let fx = read_json(&dir.join("scalars.json"));
    let start = fx["start"].as_f64().unwrap();
    let (scalars, texts) = fixture_events(&fx);
    let hparams = HParams::from_json(fx["trial"].as_str().unwrap(), start, &fx["hparams"]);
    assert_eq!(hparams.values.len(), 6);
    let ours = event_file_full(start, Some(&hparams), &scalars, &texts);
    let theirs = std::fs::read(dir.join("events.out.tfevents.hparams")).unwrap();
    let (_, ours_rest) = split_first_record(&ours);
    let (_, theirs_rest) = split_first_record(&theirs);
    assert_eq!(
        ours_rest, theirs_rest,
        "hparams, scalars and text records byte-identical"
    );
    // Without hparams it is the other reference: the check can tell them apart.
    let plain = event_file_with_text(start, &scalars, &texts);
    assert_ne!(split_first_record(&plain).1, theirs_rest);
}

/// The scalars and texts of the fixture's scalars.json.
fn fixture_events(fx: &serde_json::Value) -> (Vec<Scalar>, Vec<Text>) {
    let scalars = fx["scalars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Scalar {
            tag: s["tag"].as_str().unwrap().into(),
            step: s["step"].as_i64().unwrap(),
            value: s["value"].as_f64().unwrap() as f32,
            wall_time: s["wall_time"].as_f64().unwrap(),
        })
        .collect();
    let texts = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Text {
            tag: t["tag"].as_str().unwrap().into(),
            step: t["step"].as_i64().unwrap(),
            text: t["text"].as_str().unwrap().into(),
            wall_time: t["wall_time"].as_f64().unwrap(),
        })
        .collect();
    (scalars, texts)
}

/// The first record's event bytes and the rest of the file.
fn split_first_record(bytes: &[u8]) -> (&[u8], &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (&bytes[12..12 + n], &bytes[12 + n + 4..])
}

/// Reads the (tag, step, value) of every scalar event of a file (TFRecord framing, then the few
/// protobuf fields written) — enough to check what `train` and `eval` logged.
fn read_scalars(bytes: &[u8]) -> Vec<(String, i64, f32)> {
    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let x = b[*i];
            *i += 1;
            v |= u64::from(x & 0x7f) << shift;
            if x < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    fn fields(b: &[u8]) -> Vec<(u64, &[u8], u64)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let k = varint(b, &mut i);
            match k & 7 {
                0 => out.push((k >> 3, &b[0..0], varint(b, &mut i))),
                1 => {
                    out.push((k >> 3, &b[i..i + 8], 0));
                    i += 8;
                }
                5 => {
                    out.push((k >> 3, &b[i..i + 4], 0));
                    i += 4;
                }
                2 => {
                    let n = varint(b, &mut i) as usize;
                    out.push((k >> 3, &b[i..i + n], 0));
                    i += n;
                }
                w => panic!("wire type {w}"),
            }
        }
        out
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let n = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap()) as usize;
        let event = &bytes[i + 12..i + 12 + n];
        i += 12 + n + 4;
        let f = fields(event);
        let step = f.iter().find(|x| x.0 == 2).map_or(0, |x| x.2 as i64);
        for (_, summary, _) in f.iter().filter(|x| x.0 == 5) {
            for (_, value, _) in fields(summary).iter().filter(|x| x.0 == 1) {
                let v = fields(value);
                let tag =
                    String::from_utf8(v.iter().find(|x| x.0 == 1).unwrap().1.to_vec()).unwrap();
                // Text events (a tensor, field 8) are not scalars.
                if let Some(x) = v.iter().find(|x| x.0 == 2) {
                    out.push((tag, step, f32::from_le_bytes(x.1.try_into().unwrap())));
                }
            }
        }
    }
    out
}

#[test]
fn reader_reads_the_reference() {
    let bytes =
        std::fs::read(fixtures().join("tensorboard/events.out.tfevents.reference")).unwrap();
    let got = read_scalars(&bytes);
    assert_eq!(got.len(), 6);
    assert_eq!(got[0], ("train/loss".to_string(), 1, 8.3125));
}

/// `train` writes its metrics.jsonl as scalars too (loss, lr, grad norm, tokens/s per step;
/// validation loss and ROUGE per evaluation), and a resumed run's file equals the uninterrupted
/// run's in everything but wall times; `eval` writes its corpus scores.
#[test]
fn train_and_eval_write_event_files() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let model = model_dir("tiny-gelu");
    let data = root().join("../shared/data/dialogsum");
    let args = |name: &str| -> Vec<String> {
        [
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
            "--name",
            name,
            "--train-size",
            "16",
            "--val-size",
            "4",
            "--max-source-tokens",
            "32",
            "--max-target-tokens",
            "8",
            "--micro-batch",
            "4",
            "--epochs",
            "2",
            "--save-every",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        bartleby(&a)
    };
    assert!(run(args("whole")).status.success());
    let whole = read_scalars(&std::fs::read(runs.join("whole").join(FILE_NAME)).unwrap());
    let tags: std::collections::BTreeSet<&str> = whole.iter().map(|s| s.0.as_str()).collect();
    for t in [
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "val/val_loss",
        "val/rougeL",
    ] {
        assert!(tags.contains(t), "{t} missing from {tags:?}");
    }
    // Loss per step as in metrics.jsonl.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(runs.join("whole/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses: Vec<(i64, f32)> = lines
        .iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| {
            (
                l["step"].as_i64().unwrap(),
                l["loss"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    let logged: Vec<(i64, f32)> = whole
        .iter()
        .filter(|s| s.0 == "train/loss")
        .map(|s| (s.1, s.2))
        .collect();
    assert_eq!(logged, losses);
    // Killed after step 2, resumed: the same scalars (timings aside).
    let mut killed = args("resumed");
    killed.extend(["--stop-after-step".to_string(), "2".to_string()]);
    assert_eq!(run(killed).status.code(), Some(3));
    let resumed = runs.join("resumed");
    assert!(run(vec![
        "train".into(),
        "--resume".into(),
        resumed.to_str().unwrap().into()
    ])
    .status
    .success());
    let timing = |s: &&(String, i64, f32)| {
        !s.0.ends_with("tokens_per_s")
            && !s.0.ends_with("elapsed_s")
            && !s.0.ends_with("peak_rss_bytes")
    };
    let a: Vec<_> = whole.iter().filter(timing).collect();
    let resumed_scalars = read_scalars(&std::fs::read(resumed.join(FILE_NAME)).unwrap());
    let b: Vec<_> = resumed_scalars.iter().filter(timing).collect();
    assert_eq!(a, b);
    // eval: the corpus scores, next to NAME_metrics.json.
    let out = tmp.path().join("eval");
    let e = bartleby(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "3",
        "--name",
        "e",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let scalars = read_scalars(&std::fs::read(out.join(format!("e_{FILE_NAME}"))).unwrap());
    let metrics = read_json(&out.join("e_metrics.json"));
    let rl = scalars.iter().find(|s| s.0 == "eval/rougeL").unwrap();
    assert_eq!(
        rl.2,
        metrics["corpus"]["rougeL"]["mid"].as_f64().unwrap() as f32
    );
}

/// `bartleby card` on a trained adapter with its run and an evaluation: the Hub's front matter
/// with the evaluation's numbers in model-index, prose from the files, nothing left to fill in;
/// an existing README.md is kept unless --force; an unreadable metrics file is one clear line.
#[test]
fn card_from_a_training_run_and_an_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let model = model_dir("tiny-gelu");
    let data = root().join("../shared/data/dialogsum");
    let run = |a: &[&str]| {
        let out = bartleby(a);
        assert!(
            out.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
        "--name",
        "r",
        "--train-size",
        "16",
        "--val-size",
        "4",
        "--max-source-tokens",
        "32",
        "--max-target-tokens",
        "8",
        "--micro-batch",
        "4",
        "--epochs",
        "1",
    ]);
    let adapter = runs.join("r/adapter");
    let evals = tmp.path().join("evals");
    run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "4",
        "--name",
        "lora",
        "--out",
        evals.to_str().unwrap(),
    ]);
    let metrics_file = evals.join("lora_metrics.json");
    let run_dir = runs.join("r");
    let args = [
        "card",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--metrics",
        metrics_file.to_str().unwrap(),
        "--train-run",
        run_dir.to_str().unwrap(),
        "--repo",
        "someone/tiny-lora",
        "--license",
        "mit",
    ];
    run(&args);
    let card = std::fs::read_to_string(adapter.join("README.md")).unwrap();
    let metrics = read_json(&metrics_file);
    let (front, prose) = card
        .strip_prefix("---\n")
        .unwrap()
        .split_once("\n---\n")
        .unwrap();
    for line in [
        "license: \"mit\"",
        "library_name: peft",
        "pipeline_tag: summarization",
        "- \"dialogsum\"",
        "model-index:",
        "      type: summarization",
        "      split: \"validation\"",
    ] {
        assert!(
            front.contains(line),
            "front matter lacks {line:?}:\n{front}"
        );
    }
    for key in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
        let mid = metrics["corpus"][key]["mid"].as_f64().unwrap();
        let want = format!("    - type: {key}\n      name: ");
        assert!(front.contains(&want), "{key}");
        assert!(
            front.contains(&format!("value: {:.2}", 100.0 * mid)),
            "{key} value"
        );
    }
    assert!(
        prose.contains("r = 4") || prose.contains("r = 8"),
        "{prose}"
    );
    assert!(prose.contains("someone/tiny-lora"));
    assert!(
        prose.contains("16 training and 4 validation dialogues"),
        "{prose}"
    );
    for placeholder in ["NAMESPACE", "TODO", "More Information Needed", "[", "null"] {
        if placeholder == "[" {
            continue; // intervals are written in brackets
        }
        assert!(!card.contains(placeholder), "{placeholder:?} in the card");
    }
    // Kept unless --force; a broken metrics file: one line, nothing written.
    let out = bartleby(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    std::fs::write(&metrics_file, "{").unwrap();
    let mut forced = args.to_vec();
    forced.push("--force");
    let out = bartleby(&forced);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("lora_metrics.json"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(adapter.join("README.md")).unwrap(),
        card
    );
}
