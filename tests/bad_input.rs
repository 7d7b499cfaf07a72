//! Bad input gives a clear one-line error naming the file/field, a non-zero exit, no panic and
//! no half-written output.

use bartleby_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn summarize(model: &Path, input_text: &[u8], extra: &[&str]) -> (Run, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, input_text).unwrap();
    let output = tmp.path().join("out.jsonl");
    let out = Command::new(bartleby_bin())
        .args(["summarize", "--model", model.to_str().unwrap()])
        .args([
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    (Run::from(out), output, tmp)
}

const GOOD_INPUT: &[u8] = b"{\"id\": 1, \"dialogue\": \"A: hi there\\nB: hello\"}\n";

/// A copy of tiny-gelu to break.
fn model_copy() -> (tempfile::TempDir, PathBuf) {
    model_copy_of("tiny-gelu")
}

/// A copy of a fixture model to break.
fn model_copy_of(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

/// Rewrites model.safetensors through `edit` on its (name → (shape, f32 data)) map.
fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map: std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = map
        .iter()
        .map(|(n, (s, d))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn truncated_safetensors() {
    let (_t, dir) = model_copy();
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn header_claiming_10_gb() {
    let (_t, dir) = model_copy();
    let mut bytes = 10_000_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"x\": 1}");
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn missing_tensor() {
    let (_t, dir) = model_copy();
    rewrite_weights(&dir, |m| {
        m.remove("model.decoder.layers.1.fc2.weight").unwrap();
    });
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["missing tensor model.decoder.layers.1.fc2.weight"],
    );
}

#[test]
fn wrong_shape() {
    let (_t, dir) = model_copy();
    rewrite_weights(&dir, |m| {
        let (shape, data) = m.get_mut("model.encoder.layers.0.fc1.weight").unwrap();
        let (rows, cols) = (shape[0], shape[1]);
        *shape = vec![rows - 1, cols];
        data.truncate((rows - 1) * cols * 4);
    });
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &[
            "model.encoder.layers.0.fc1.weight",
            "shape [39, 24], expected [40, 24]",
        ],
    );
}

#[test]
fn config_missing_key() {
    let (_t, dir) = model_copy();
    let path = dir.join("config.json");
    let mut cfg = read_json(&path);
    cfg.as_object_mut().unwrap().remove("d_model");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["config.json", "missing required key \"d_model\""],
    );
}

#[test]
fn unknown_model_type() {
    let (_t, dir) = model_copy();
    let path = dir.join("config.json");
    let mut cfg = read_json(&path);
    cfg["model_type"] = "gpt2".into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["config.json", "unsupported model_type \"gpt2\""],
    );
    // A BART config relabelled as T5 lacks T5's keys.
    cfg["model_type"] = "t5".into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["config.json", "missing required key \"num_layers\""],
    );
}

#[test]
fn t5_unknown_feed_forward_proj() {
    let (_t, dir) = model_copy_of("t5-relu-tied");
    let path = dir.join("config.json");
    let mut cfg = read_json(&path);
    cfg["feed_forward_proj"] = "gated-swishy".into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &[
            "config.json",
            "unsupported feed_forward_proj \"gated-swishy\"",
        ],
    );
}

#[test]
fn t5_missing_relative_attention_table() {
    let (_t, dir) = model_copy_of("t5-relu-tied");
    rewrite_weights(&dir, |m| {
        m.remove("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
            .unwrap();
    });
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["missing tensor decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
    );
}

#[test]
fn t5_with_a_bpe_tokenizer() {
    let (_t, dir) = model_copy_of("t5-relu-tied");
    std::fs::copy(
        fixtures().join("tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &[
            "tokenizer.json",
            "T5 expects a SentencePiece Unigram tokenizer, found BPE",
        ],
    );
}

#[test]
fn empty_input_file() {
    let (run, out, _k) = summarize(&model_dir("tiny-gelu"), b"", &[]);
    assert_clear_error(&run, &out, &["in.jsonl", "no documents"]);
}

#[test]
fn non_utf8_line() {
    let mut input = GOOD_INPUT.to_vec();
    input.extend_from_slice(b"{\"dialogue\": \"caf\xe9\"}\n");
    let (run, out, _k) = summarize(&model_dir("tiny-gelu"), &input, &[]);
    assert_clear_error(&run, &out, &["in.jsonl line 2", "not valid UTF-8"]);
}

#[test]
fn empty_dialogue_and_missing_field() {
    let (run, out, _k) = summarize(&model_dir("tiny-gelu"), b"{\"dialogue\": \"  \"}\n", &[]);
    assert_clear_error(&run, &out, &["in.jsonl line 1", "\"dialogue\" is empty"]);
    let (run, out, _k) = summarize(&model_dir("tiny-gelu"), b"{\"summary\": \"x\"}\n", &[]);
    assert_clear_error(
        &run,
        &out,
        &["in.jsonl line 1", "missing field \"dialogue\""],
    );
}

#[test]
fn bad_flags() {
    let (run, out, _k) = summarize(&model_dir("tiny-gelu"), GOOD_INPUT, &["--num-beams", "0"]);
    assert_clear_error(&run, &out, &["--num-beams"]);
    let (run, out, _k) = summarize(
        &model_dir("tiny-gelu"),
        GOOD_INPUT,
        &["--max-input-tokens", "100000"],
    );
    assert_clear_error(&run, &out, &["max_position_embeddings"]);
    let (run, out, _k) = summarize(
        &model_dir("tiny-gelu"),
        GOOD_INPUT,
        &["--max-length", "5000"],
    );
    assert_clear_error(&run, &out, &["max_position_embeddings"]);
    // clap's own errors exit 2.
    let (run, _out, _k) = summarize(
        &model_dir("tiny-gelu"),
        GOOD_INPUT,
        &["--early-stopping", "maybe"],
    );
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--early-stopping"));
}

#[test]
fn missing_model_dir_and_unwritable_output() {
    let (run, out, _k) = summarize(Path::new("./no/such/model"), GOOD_INPUT, &[]);
    assert_clear_error(&run, &out, &["./no/such/model", "no such model directory"]);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, GOOD_INPUT).unwrap();
    let out = Command::new(bartleby_bin())
        .args([
            "summarize",
            "--model",
            model_dir("tiny-gelu").to_str().unwrap(),
        ])
        .args([
            "--input",
            input.to_str().unwrap(),
            "--output",
            "/nonexistent-dir/out.jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent-dir/out.jsonl") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// `summarize --model facebook/bart-large-cnn` with an empty HF_HOME and the given environment.
fn summarize_from_hub(env: &[(&str, Option<&str>)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, GOOD_INPUT).unwrap();
    let mut cmd = Command::new(bartleby_bin());
    cmd.args([
        "summarize",
        "--model",
        "facebook/bart-large-cnn",
        "--input",
        input.to_str().unwrap(),
    ])
    .env("HF_HOME", tmp.path().join("hf"));
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn hub_offline_without_cache() {
    let stderr = summarize_from_hub(&[("HF_HUB_OFFLINE", Some("1"))]);
    assert!(
        stderr.contains("facebook/bart-large-cnn") && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
}

/// A tokenizer id the embedding does not have (bart-large-cnn's `<mask>` is 50264 with
/// vocab_size 50264; the sharded fixture mirrors that) is an input error, not a panic.
#[test]
fn token_outside_vocabulary() {
    let (run, out, _k) = summarize(
        &model_dir("tiny-gelunew-sharded"),
        b"{\"dialogue\": \"A: what is <mask> here\"}\n",
        &[],
    );
    assert_clear_error(&run, &out, &["outside the model's vocabulary", "<mask>"]);
}

#[test]
fn generation_ids_outside_vocabulary() {
    let (_t, dir) = model_copy();
    let path = dir.join("generation_config.json");
    let mut g = read_json(&path);
    g["decoder_start_token_id"] = 9999.into();
    std::fs::write(&path, g.to_string()).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["decoder_start_token_id 9999", "vocab_size 500"],
    );
}

#[test]
fn absurd_num_beams_and_untied_embeddings() {
    let (run, out, _k) = summarize(
        &model_dir("tiny-gelu"),
        GOOD_INPUT,
        &["--num-beams", "1000000000000"],
    );
    assert_clear_error(&run, &out, &["num_beams 1000000000000 is more than 256"]);
    let (_t, dir) = model_copy();
    let path = dir.join("config.json");
    let mut cfg = read_json(&path);
    cfg["tie_word_embeddings"] = false.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(&run, &out, &["config.json", "tie_word_embeddings=false"]);
}

/// A hub that cannot be reached (here: HF_ENDPOINT on a closed local port) is one clear line.
#[test]
fn hub_unreachable() {
    let stderr = summarize_from_hub(&[
        ("HF_ENDPOINT", Some("http://127.0.0.1:9")),
        ("HF_HUB_OFFLINE", None),
    ]);
    assert!(
        stderr.contains("the Hugging Face hub cannot be reached"),
        "{stderr}"
    );
}

/// Where `--output` points decides how it is written: a symlink is written through (beside its
/// target, the link kept), a device or FIFO is streamed to (never replaced by a file), a replaced
/// file keeps its permissions, and the input file itself is refused.
#[cfg(unix)]
#[test]
fn outputs_through_links_devices_fifos_and_never_onto_the_input() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, GOOD_INPUT).unwrap();
    let model = model_dir("tiny-gelu");
    let run = |output: &Path| -> Run {
        Command::new(bartleby_bin())
            .args(["summarize", "--model", model.to_str().unwrap()])
            .args(["--input", input.to_str().unwrap()])
            .args(["--output", output.to_str().unwrap()])
            .output()
            .unwrap()
            .into()
    };
    // A symlink to an existing 0600 file: the link stays, the target gets the summaries and
    // keeps its mode.
    let target = tmp.path().join("target.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = tmp.path().join("link.jsonl");
    std::os::unix::fs::symlink("target.jsonl", &link).unwrap();
    let r = run(&link);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(written.contains("\"token_ids\""), "{written}");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A symlink to /dev/null (never /dev/null itself, so that a regression cannot replace the
    // machine's device): streamed, the device untouched.
    let null = tmp.path().join("null");
    std::os::unix::fs::symlink("/dev/null", &null).unwrap();
    let r = run(&null);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(std::fs::symlink_metadata(&null)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // A FIFO: its reader gets the summaries; it stays a FIFO.
    let fifo = tmp.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let r = run(&fifo);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = reader.join().unwrap();
    assert!(got.contains("\"token_ids\""), "{got}");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // The input itself, directly or through a link: refused, the input untouched.
    let in_link = tmp.path().join("in-link.jsonl");
    std::os::unix::fs::symlink(&input, &in_link).unwrap();
    for output in [&input, &in_link] {
        let r = run(output);
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains("is the --input file"), "{}", r.stderr);
        assert_eq!(std::fs::read(&input).unwrap(), GOOD_INPUT);
    }
    // A folder: one line, nothing created.
    let r = run(tmp.path());
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".bartleby-"))
        .collect();
    assert!(left.is_empty());
}

/// SIGINT or SIGTERM while summarizing: exit 130, no output and no `.bartleby-*` temp left.
#[cfg(unix)]
#[test]
fn interrupted_summarize_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let rows = std::fs::read_to_string(root().join("../shared/data/samsum/train.jsonl")).unwrap();
    let rows: Vec<&str> = rows.lines().take(3000).collect();
    std::fs::write(&input, rows.join("\n")).unwrap();
    let model = model_dir("tiny-gelu");
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let output = tmp.path().join("out.jsonl");
        let mut child = Command::new(bartleby_bin())
            .args(["summarize", "--model", model.to_str().unwrap()])
            .args(["--input", input.to_str().unwrap()])
            .args(["--output", output.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let temps = || -> usize {
            std::fs::read_dir(tmp.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".bartleby-"))
                .count()
        };
        let started = std::time::Instant::now();
        while temps() == 0 {
            assert!(started.elapsed().as_secs() < 120, "no temp output appeared");
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before the signal"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(temps(), 0, "temp output left after signal {signal}");
        assert!(!output.exists());
    }
}

/// A config far larger than its weights (`decoder_layers: 1000000`, a huge FFN) is refused
/// before the model is allocated, naming config.json, for BART and T5, under a 1 GB address
/// space limit that the allocation would break.
#[cfg(unix)]
#[test]
fn config_larger_than_its_weights_is_refused_before_allocating() {
    for (model, key, value) in [
        ("tiny-gelu", "decoder_layers", 1_000_000u64),
        ("tiny-gelu", "encoder_ffn_dim", 50_000_000),
        ("t5-relu-tied", "num_layers", 1_000_000),
    ] {
        let (_t, dir) = model_copy_of(model);
        let path = dir.join("config.json");
        let mut cfg = read_json(&path);
        cfg[key] = value.into();
        std::fs::write(&path, cfg.to_string()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in.jsonl");
        std::fs::write(&input, GOOD_INPUT).unwrap();
        let output = tmp.path().join("out.jsonl");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
            .arg(bartleby_bin())
            .args(["summarize", "--model", dir.to_str().unwrap()])
            .args([
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
            ]);
        let run: Run = cmd.output().unwrap().into();
        assert_clear_error(
            &run,
            &output,
            &["config.json", "the config does not belong to these weights"],
        );
    }
}

/// A UTF-8 byte order mark before the first JSONL row (or CSV header) is accepted.
#[test]
fn byte_order_mark_is_accepted() {
    let mut input = b"\xEF\xBB\xBF".to_vec();
    input.extend_from_slice(GOOD_INPUT);
    let (run, out, _k) = summarize(&model_dir("tiny-gelu"), &input, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("\"token_ids\""));
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        b"\xEF\xBB\xBF{\"prediction\": \"a b\", \"reference\": \"a c\"}\n",
    )
    .unwrap();
    let out = bartleby(&["score", "--input", pairs.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = tmp.path().join("in.csv");
    std::fs::write(&csv, b"\xEF\xBB\xBFid,dialogue\n1,\"A: hi\nB: hello\"\n").unwrap();
    let out = bartleby(&[
        "summarize",
        "--model",
        model_dir("tiny-gelu").to_str().unwrap(),
        "--input",
        csv.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"id\":\"1\""));
}

/// `export --min-token-agreement` takes a share from 0 to 1: NaN (which disabled the gate) and
/// 5 (which always failed) are clap errors, one line, exit 2, nothing written.
#[test]
fn min_token_agreement_is_a_share() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    for bad in ["nan", "5", "-0.5", "x"] {
        let run: Run = bartleby(&[
            "export",
            "--model",
            model_dir("tiny-gelu").to_str().unwrap(),
            "--quant",
            "q8",
            "--output",
            out.to_str().unwrap(),
            "--min-token-agreement",
            bad,
        ])
        .into();
        assert_eq!(run.code, Some(2), "{bad}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{bad}: {}", run.stderr);
        assert!(
            run.stderr.contains("share from 0 to 1"),
            "{bad}: {}",
            run.stderr
        );
        assert!(!out.exists());
    }
}

fn train_run(runs: &Path, name: &str, model: &Path, extra: &[&str]) -> Run {
    let data = root().join("../shared/data/dialogsum");
    let mut args = vec![
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
        "8",
        "--val-size",
        "2",
        "--max-source-tokens",
        "32",
        "--max-target-tokens",
        "8",
        "--micro-batch",
        "4",
        "--epochs",
        "2",
    ];
    // A flag in `extra` replaces its default above.
    for pair in extra.chunks(2) {
        if let Some(at) = args.iter().position(|a| *a == pair[0]) {
            args.drain(at..at + 2);
        }
    }
    args.extend_from_slice(extra);
    bartleby(&args).into()
}

/// Training faults that used to read as "training diverged (try a lower --lr)": a checkpoint
/// with NaN weights says so at the first step; NaN flags are refused up front; a tampered
/// trainer_state.json is refused on --resume, naming the file.
#[test]
fn training_faults_say_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let (_t, nan_model) = model_copy();
    rewrite_weights(&nan_model, |m| {
        let (_, data) = m.get_mut("model.encoder.layers.0.fc1.weight").unwrap();
        data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let run = train_run(&runs, "nan", &nan_model, &["--method", "full"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("before any update"), "{}", run.stderr);
    assert!(!run.stderr.contains("lower --lr"), "{}", run.stderr);
    let model = model_dir("tiny-gelu");
    for (flag, value) in [
        ("--weight-decay", "nan"),
        ("--max-grad-norm", "inf"),
        ("--lora-alpha", "nan"),
    ] {
        let run = train_run(&runs, "flags", &model, &[flag, value]);
        assert_eq!(run.code, Some(1), "{flag}: {}", run.stderr);
        assert!(
            run.stderr.contains("must be a finite number"),
            "{flag}: {}",
            run.stderr
        );
        assert!(!runs.join("flags").exists());
    }
    // A finished run, then its state edited two ways.
    let run = train_run(&runs, "ok", &model, &["--save-every", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let state_path = runs.join("ok/checkpoint/trainer_state.json");
    let original = std::fs::read_to_string(&state_path).unwrap();
    for (key, value, needle) in [
        ("step", 99_999_999u64, "outside this run's"),
        ("adam_step", 1, "does not equal step"),
    ] {
        let mut state: serde_json::Value = serde_json::from_str(&original).unwrap();
        state[key] = value.into();
        std::fs::write(&state_path, state.to_string()).unwrap();
        let run: Run = bartleby(&["train", "--resume", runs.join("ok").to_str().unwrap()]).into();
        assert_eq!(run.code, Some(1), "{key}: {}", run.stderr);
        assert!(
            run.stderr.contains("trainer_state.json"),
            "{key}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(needle), "{key}: {}", run.stderr);
    }
}

/// Unclear messages made clear: a negative count names its flag; a truncated checkpoint names
/// the tensor past the end; a target window with no room names --max-target-tokens; a
/// successful `--device wgpu` run prints nothing on stderr about XDG_RUNTIME_DIR.
#[test]
fn messages_name_what_is_wrong() {
    let (run, _out, _k) = summarize(&model_dir("tiny-gelu"), GOOD_INPUT, &["--num-beams", "-1"]);
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr.trim(),
        "error: invalid value '-1' for '--num-beams': expected a number of 0 or more"
    );

    let (_t, dir) = model_copy();
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let (run, out, _k) = summarize(&dir, GOOD_INPUT, &[]);
    assert_clear_error(
        &run,
        &out,
        &["model.safetensors", "the file is truncated", "tensor "],
    );

    let tmp = tempfile::tempdir().unwrap();
    let run = train_run(
        &tmp.path().join("runs"),
        "t",
        &model_dir("tiny-gelu"),
        &["--max-target-tokens", "2"],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("--max-target-tokens 2 leaves no room"),
        "{}",
        run.stderr
    );
    assert!(
        !tmp.path().join("runs/t").exists(),
        "validated before the run directory"
    );

    if wgpu_device("xdg").is_some() {
        let out = Command::new(bartleby_bin())
            .args([
                "summarize",
                "--model",
                model_dir("tiny-gelu").to_str().unwrap(),
                "--device",
                "wgpu",
            ])
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"A: hi\nB: hello")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    }
}
