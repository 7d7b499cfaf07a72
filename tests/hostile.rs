//! The hostile-input corpus (issue 26): corrupt and adversarial checkpoints, configs, generation
//! configs, tokenizers, adapters, web bundles, data files, pairs files, TOML configs and output
//! targets, generated here (nothing binary is committed), each run through every command that
//! reads that kind of file. Every case must fail with exit code 1 (2 for clap's own errors), one
//! `error:` line naming the file or field, no panic, and leave the file system exactly as it was
//! (nothing created, replaced or truncated). The corpus size is printed (`--nocapture`).

use bartleby_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file under `dir` with its bytes (symlinks as their target text).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    p.clone(),
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if m.is_dir() {
                out.insert(p.clone(), b"<dir>".to_vec());
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A case: a name, how to break a fresh copy of the inputs, and the commands to run on them.
struct Corpus {
    root: tempfile::TempDir,
    seed: PathBuf,
    cases: usize,
    runs: usize,
    failures: Vec<String>,
}

/// The inputs every case starts from (built once, then copied): a model, an adapter, data,
/// pairs, a TOML config, two `eval` metrics files, a `benchmark` ranking, and an `out/` folder.
fn seed_inputs(dir: &Path) {
    inputs(dir);
    let d = dir.to_str().unwrap();
    let data = format!("{d}/data");
    for name in ["a", "b"] {
        let out = bartleby(&[
            "eval",
            "--model",
            &format!("{d}/model"),
            "--data",
            &data,
            "--limit",
            "2",
            "--out",
            &format!("{d}/metrics"),
            "--name",
            name,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for f in std::fs::read_dir(dir.join("metrics")).unwrap() {
        let f = f.unwrap().path();
        if !f.to_string_lossy().ends_with("_metrics.json") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let out = bartleby(&[
        "benchmark",
        "--model",
        model_dir("tiny-gelu").to_str().unwrap(),
        "--model",
        model_dir("tiny-silu").to_str().unwrap(),
        "--data",
        &data,
        "--limit",
        "2",
        "--out",
        &format!("{d}/bench"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(
        dir.join("bench/final_ranking.json"),
        dir.join("final_ranking.json"),
    )
    .unwrap();
    std::fs::remove_dir_all(dir.join("bench")).unwrap();
}

fn inputs(dir: &Path) {
    copy_dir(&model_dir("tiny-gelu"), &dir.join("model"));
    copy_dir(&fixtures().join("lora/gelu-qv"), &dir.join("adapter"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rows =
        std::fs::read_to_string(root().join("../shared/data/dialogsum/validation.jsonl")).unwrap();
    let rows: Vec<&str> = rows.lines().take(12).collect();
    std::fs::write(data.join("train.jsonl"), rows.join("\n") + "\n").unwrap();
    std::fs::write(data.join("validation.jsonl"), rows[..4].join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("pairs.jsonl"),
        "{\"id\": 1, \"prediction\": \"a b c\", \"reference\": \"a c d\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("in.jsonl"),
        "{\"id\": 1, \"dialogue\": \"A: hi\\nB: hello\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("train.toml"),
        "train_size = 8\nval_size = 2\nepochs = 1\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
}

/// The commands that read each kind of input (`{d}` = the case's directory).
fn commands(kind: &str) -> Vec<Vec<&'static str>> {
    let summarize = vec![
        "summarize",
        "--model",
        "{d}/model",
        "--input",
        "{d}/in.jsonl",
        "--output",
        "{d}/out/s.jsonl",
    ];
    let eval = vec![
        "eval",
        "--model",
        "{d}/model",
        "--data",
        "{d}/data",
        "--limit",
        "2",
        "--out",
        "{d}/out/eval",
        "--name",
        "e",
    ];
    let merge = vec![
        "merge",
        "--model",
        "{d}/model",
        "--adapter",
        "{d}/adapter",
        "--output",
        "{d}/out/merged",
    ];
    let export = vec![
        "export",
        "--model",
        "{d}/model",
        "--quant",
        "q8",
        "--block-size",
        "4",
        "--output",
        "{d}/out/bundle",
    ];
    let train = vec![
        "train",
        "--model",
        "{d}/model",
        "--data",
        "{d}/data",
        "--runs-dir",
        "{d}/out/runs",
        "--name",
        "t",
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
        "1",
    ];
    let inspect = vec![
        "data",
        "inspect",
        "--data",
        "{d}/data",
        "--tokenizer",
        "{d}/model",
    ];
    let score = vec![
        "score",
        "--input",
        "{d}/pairs.jsonl",
        "--output",
        "{d}/out/scores.json",
    ];
    let with_adapter = vec![
        "summarize",
        "--model",
        "{d}/model",
        "--adapter",
        "{d}/adapter",
        "--input",
        "{d}/in.jsonl",
        "--output",
        "{d}/out/s.jsonl",
    ];
    let bundle = vec![
        "summarize",
        "--model",
        "{d}/bundle",
        "--input",
        "{d}/in.jsonl",
        "--output",
        "{d}/out/s.jsonl",
    ];
    let toml = vec![
        "train",
        "--config",
        "{d}/train.toml",
        "--model",
        "{d}/model",
        "--data",
        "{d}/data",
        "--runs-dir",
        "{d}/out/runs",
        "--name",
        "t",
    ];
    let card = vec![
        "card",
        "--model",
        "{d}/model",
        "--metrics",
        "{d}/metrics/a_metrics.json",
        "--metrics",
        "{d}/metrics/b_metrics.json",
        "--output",
        "{d}/out/README.md",
    ];
    match kind {
        "weights" => vec![summarize, eval, merge, export, train],
        "config" => vec![summarize, eval, merge, export, train, card],
        "generation" => vec![summarize, eval, merge, export],
        "tokenizer" => vec![summarize, eval, export, train, inspect],
        "adapter" => vec![with_adapter, merge],
        "bundle" => vec![bundle],
        "data" => vec![eval, train, inspect],
        "pairs" => vec![score],
        "input" => vec![summarize],
        "toml" => vec![toml],
        "metrics" => vec![vec![
            "compare",
            "{d}/metrics/a_metrics.json",
            "{d}/metrics/b_metrics.json",
            "--out",
            "{d}/out/cmp",
        ]],
        "ranking" => vec![vec![
            "plan",
            "--ranking",
            "{d}/final_ranking.json",
            "--data",
            "{d}/data",
            "--out",
            "{d}/out/plan",
        ]],
        other => panic!("{other}"),
    }
}

impl Corpus {
    /// Runs `kind`'s commands on inputs broken by `breaks`; `needles`: one of them must be in
    /// the error line (the file or field).
    fn case(&mut self, kind: &str, name: &str, needles: &[&str], breaks: impl Fn(&Path)) {
        self.cases += 1;
        for cmd in commands(kind) {
            let dir = self.root.path().join(format!("c{}", self.runs));
            self.runs += 1;
            if !self.seed.join("final_ranking.json").exists() {
                seed_inputs(&self.seed);
            }
            copy_dir(&self.seed, &dir);
            if kind == "bundle" {
                let out = bartleby(&[
                    "export",
                    "--model",
                    dir.join("model").to_str().unwrap(),
                    "--quant",
                    "q8",
                    "--block-size",
                    "4",
                    "--output",
                    dir.join("bundle").to_str().unwrap(),
                ]);
                assert!(out.status.success());
            }
            breaks(&dir);
            let before = snapshot(&dir);
            let args: Vec<String> = cmd
                .iter()
                .map(|a| a.replace("{d}", dir.to_str().unwrap()))
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = Command::new(bartleby_bin()).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            let what = format!("{kind}/{name}: bartleby {}", cmd.join(" "));
            let mut problems = Vec::new();
            if !matches!(out.status.code(), Some(1) | Some(2)) {
                problems.push(format!("exit {:?}", out.status.code()));
            }
            if stderr.contains("panicked") {
                problems.push("panicked".into());
            }
            if errors.len() != 1 {
                problems.push(format!("{} error lines", errors.len()));
            } else if !needles.iter().any(|n| errors[0].contains(n)) {
                problems.push(format!("error line lacks {needles:?}"));
            }
            let after = snapshot(&dir);
            if after != before {
                let changed: Vec<String> = after
                    .keys()
                    .chain(before.keys())
                    .filter(|k| after.get(*k) != before.get(*k))
                    .map(|k| k.strip_prefix(&dir).unwrap().display().to_string())
                    .collect();
                problems.push(format!("file system changed: {changed:?}"));
            }
            if !problems.is_empty() {
                self.failures.push(format!(
                    "{what}: {} — {}",
                    problems.join("; "),
                    stderr.trim()
                ));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn edit_json(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// safetensors bytes with a header rewritten by `edit` (data kept).
fn edit_safetensors_header(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

fn first_tensor(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "__metadata__")
        .unwrap()
        .clone()
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let seed = root.path().join("seed");
    let mut c = Corpus {
        root,
        seed,
        cases: 0,
        runs: 0,
        failures: Vec::new(),
    };
    let w = |d: &Path| d.join("model/model.safetensors");
    // Checkpoints.
    c.case("weights", "empty", &["model.safetensors"], |d| {
        std::fs::write(w(d), b"").unwrap()
    });
    c.case("weights", "garbage", &["model.safetensors"], |d| {
        std::fs::write(w(d), [7u8; 4096]).unwrap()
    });
    c.case(
        "weights",
        "huge header length",
        &["model.safetensors"],
        |d| {
            let mut b = u64::MAX.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            std::fs::write(w(d), b).unwrap()
        },
    );
    c.case("weights", "header not JSON", &["model.safetensors"], |d| {
        let mut b = 10u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"not json!!");
        std::fs::write(w(d), b).unwrap()
    });
    c.case("weights", "truncated", &["model.safetensors"], |d| {
        let b = std::fs::read(w(d)).unwrap();
        std::fs::write(w(d), &b[..b.len() / 2]).unwrap()
    });
    c.case(
        "weights",
        "shape disagrees with its bytes",
        &["model.safetensors"],
        |d| {
            let t = first_tensor(&w(d));
            edit_safetensors_header(&w(d), |h| h[&t]["shape"] = serde_json::json!([3, 3]))
        },
    );
    c.case("weights", "unknown dtype", &["model.safetensors"], |d| {
        let t = first_tensor(&w(d));
        edit_safetensors_header(&w(d), |h| h[&t]["dtype"] = "F99".into())
    });
    c.case(
        "weights",
        "integer dtype",
        &["model.safetensors", "dtype"],
        |d| {
            let t = first_tensor(&w(d));
            edit_safetensors_header(&w(d), |h| h[&t]["dtype"] = "I32".into())
        },
    );
    c.case("weights", "missing", &["model.safetensors", "model"], |d| {
        std::fs::remove_file(w(d)).unwrap()
    });
    c.case(
        "weights",
        "shard index outside the folder",
        &["outside the model directory"],
        |d| {
            std::fs::remove_file(w(d)).unwrap();
            std::fs::write(
                d.join("model/model.safetensors.index.json"),
                r#"{"weight_map": {"a": "../../../../etc/passwd"}}"#,
            )
            .unwrap()
        },
    );
    // config.json.
    let cfg = |d: &Path| d.join("model/config.json");
    c.case("config", "not JSON", &["config.json"], |d| {
        std::fs::write(cfg(d), "{").unwrap()
    });
    c.case("config", "not an object", &["config.json"], |d| {
        std::fs::write(cfg(d), "[1, 2]").unwrap()
    });
    c.case(
        "config",
        "string d_model",
        &["config.json", "d_model"],
        |d| edit_json(&cfg(d), |v| v["d_model"] = "big".into()),
    );
    c.case(
        "config",
        "negative layers",
        &["config.json", "layers"],
        |d| edit_json(&cfg(d), |v| v["encoder_layers"] = (-3).into()),
    );
    c.case("config", "a million layers", &["config.json"], |d| {
        edit_json(&cfg(d), |v| v["decoder_layers"] = 1_000_000.into())
    });
    c.case("config", "zero heads", &["config.json", "heads"], |d| {
        edit_json(&cfg(d), |v| v["encoder_attention_heads"] = 0.into())
    });
    c.case(
        "config",
        "unknown model_type",
        &["config.json", "model_type"],
        |d| edit_json(&cfg(d), |v| v["model_type"] = "gpt2".into()),
    );
    c.case(
        "config",
        "vocab smaller than the weights",
        &["vocab", "shape"],
        |d| edit_json(&cfg(d), |v| v["vocab_size"] = 10.into()),
    );
    c.case("config", "missing", &["config.json"], |d| {
        std::fs::remove_file(cfg(d)).unwrap()
    });
    // generation_config.json.
    let g = |d: &Path| d.join("model/generation_config.json");
    c.case("generation", "not JSON", &["generation_config.json"], |d| {
        std::fs::write(g(d), "nope").unwrap()
    });
    c.case(
        "generation",
        "negative beams",
        &["generation_config.json", "num_beams"],
        |d| edit_json(&g(d), |v| v["num_beams"] = (-1).into()),
    );
    c.case(
        "generation",
        "eos outside the vocabulary",
        &["eos_token_id"],
        |d| edit_json(&g(d), |v| v["eos_token_id"] = 99_999.into()),
    );
    c.case(
        "generation",
        "unsupported option",
        &["generation_config.json", "repetition_penalty"],
        |d| edit_json(&g(d), |v| v["repetition_penalty"] = 1.5.into()),
    );
    // Tokenizer.
    let t = |d: &Path| d.join("model/tokenizer.json");
    c.case("tokenizer", "not JSON", &["tokenizer"], |d| {
        std::fs::write(t(d), "{{").unwrap()
    });
    c.case("tokenizer", "empty", &["tokenizer"], |d| {
        std::fs::write(t(d), "").unwrap()
    });
    c.case("tokenizer", "unknown model", &["tokenizer"], |d| {
        edit_json(&t(d), |v| v["model"]["type"] = "Nope".into())
    });
    c.case("tokenizer", "missing", &["tokenizer"], |d| {
        std::fs::remove_file(t(d)).unwrap()
    });
    // Adapters.
    let ac = |d: &Path| d.join("adapter/adapter_config.json");
    let aw = |d: &Path| d.join("adapter/adapter_model.safetensors");
    c.case(
        "adapter",
        "config not JSON",
        &["adapter_config.json"],
        |d| std::fs::write(ac(d), "x").unwrap(),
    );
    c.case("adapter", "rank 0", &["adapter_config.json", "r"], |d| {
        edit_json(&ac(d), |v| v["r"] = 0.into())
    });
    c.case(
        "adapter",
        "not LoRA",
        &["adapter_config.json", "peft_type"],
        |d| edit_json(&ac(d), |v| v["peft_type"] = "IA3".into()),
    );
    c.case("adapter", "targets nothing", &["target_modules"], |d| {
        edit_json(&ac(d), |v| {
            v["target_modules"] = serde_json::json!(["nothing_here"])
        })
    });
    c.case(
        "adapter",
        "weights garbage",
        &["adapter_model.safetensors"],
        |d| std::fs::write(aw(d), [1u8; 100]).unwrap(),
    );
    c.case(
        "adapter",
        "weights missing",
        &["adapter_model.safetensors"],
        |d| std::fs::remove_file(aw(d)).unwrap(),
    );
    c.case(
        "adapter",
        "wrong rank in the weights",
        &[
            "adapter_config.json",
            "adapter_model.safetensors",
            "shape",
            "r",
        ],
        |d| edit_json(&ac(d), |v| v["r"] = 3.into()),
    );
    // Web bundles.
    let m = |d: &Path| d.join("bundle/manifest.json");
    c.case("bundle", "manifest not JSON", &["manifest.json"], |d| {
        std::fs::write(m(d), "]").unwrap()
    });
    c.case("bundle", "a file changed", &["config.json"], |d| {
        let p = d.join("bundle/config.json");
        let mut b = std::fs::read(&p).unwrap();
        b.push(b' ');
        std::fs::write(p, b).unwrap()
    });
    c.case("bundle", "file missing", &["tokenizer.json"], |d| {
        std::fs::remove_file(d.join("bundle/tokenizer.json")).unwrap()
    });
    // Data files.
    let tr = |d: &Path| d.join("data/train.jsonl");
    let va = |d: &Path| d.join("data/validation.jsonl");
    c.case(
        "data",
        "invalid JSON line",
        &["line 2", "invalid JSON"],
        |d| {
            std::fs::write(
                tr(d),
                "{\"id\":1,\"dialogue\":\"a\",\"summary\":\"b\"}\n{oops\n",
            )
            .unwrap();
            std::fs::write(va(d), "{oops\n").unwrap()
        },
    );
    c.case("data", "missing summary", &["summary"], |d| {
        std::fs::write(tr(d), "{\"id\":1,\"dialogue\":\"a\"}\n").unwrap();
        std::fs::write(va(d), "{\"id\":1,\"dialogue\":\"a\"}\n").unwrap()
    });
    c.case(
        "data",
        "binary garbage",
        &["train.jsonl", "validation.jsonl"],
        |d| {
            std::fs::write(tr(d), [0xffu8, 0xfe, 0, 1, 2]).unwrap();
            std::fs::write(va(d), [0xffu8, 0xfe, 0, 1, 2]).unwrap()
        },
    );
    c.case(
        "data",
        "empty splits",
        &["train", "validation", "no rows", "empty"],
        |d| {
            std::fs::write(tr(d), "").unwrap();
            std::fs::write(va(d), "").unwrap()
        },
    );
    c.case("data", "parquet garbage", &["parquet"], |d| {
        std::fs::remove_file(tr(d)).unwrap();
        std::fs::remove_file(va(d)).unwrap();
        std::fs::write(d.join("data/train.parquet"), b"PAR1 not really").unwrap();
        std::fs::write(d.join("data/validation.parquet"), b"PAR1 not really").unwrap()
    });
    // Pairs files (score).
    let p = |d: &Path| d.join("pairs.jsonl");
    c.case("pairs", "invalid JSON", &["pairs.jsonl"], |d| {
        std::fs::write(p(d), "{").unwrap()
    });
    c.case("pairs", "prediction not a string", &["prediction"], |d| {
        std::fs::write(p(d), "{\"prediction\": 3, \"reference\": \"a\"}\n").unwrap()
    });
    c.case("pairs", "no reference", &["reference"], |d| {
        std::fs::write(p(d), "{\"prediction\": \"a\"}\n").unwrap()
    });
    c.case("pairs", "empty", &["pairs.jsonl", "no pairs"], |d| {
        std::fs::write(p(d), "\n\n").unwrap()
    });
    // Inputs and output targets (summarize).
    let i = |d: &Path| d.join("in.jsonl");
    c.case("input", "invalid UTF-8", &["in.jsonl", "UTF-8"], |d| {
        std::fs::write(i(d), [0x7bu8, 0xff, 0x7d]).unwrap()
    });
    c.case("input", "empty dialogue", &["in.jsonl", "dialogue"], |d| {
        std::fs::write(i(d), "{\"dialogue\": \"\"}\n").unwrap()
    });
    c.case(
        "input",
        "output onto the input",
        &["is the --input file"],
        |d| std::os::unix::fs::symlink(d.join("in.jsonl"), d.join("out/s.jsonl")).unwrap(),
    );
    c.case(
        "input",
        "output folder is a file",
        &["out/s.jsonl", "out"],
        |d| {
            std::fs::remove_dir(d.join("out")).unwrap();
            std::fs::write(d.join("out"), "a file").unwrap()
        },
    );
    c.case("input", "output is a folder", &["is a directory"], |d| {
        std::fs::create_dir(d.join("out/s.jsonl")).unwrap()
    });
    // TOML training configs.
    let tm = |d: &Path| d.join("train.toml");
    c.case("toml", "not TOML", &["train.toml"], |d| {
        std::fs::write(tm(d), "= = =").unwrap()
    });
    c.case("toml", "unknown key", &["train.toml", "lr_typo"], |d| {
        std::fs::write(tm(d), "lr_typo = 1.0\n").unwrap()
    });
    c.case("toml", "wrong type", &["train.toml", "epochs"], |d| {
        std::fs::write(tm(d), "epochs = \"two\"\n").unwrap()
    });
    c.case("toml", "nan learning rate", &["lr"], |d| {
        std::fs::write(tm(d), "lr = nan\n").unwrap()
    });

    // Metrics files (compare) and rankings (plan).
    let mm = |d: &Path| d.join("metrics/b_metrics.json");
    c.case("metrics", "not JSON", &["b_metrics.json"], |d| {
        std::fs::write(mm(d), "{").unwrap()
    });
    c.case(
        "metrics",
        "no corpus scores",
        &["b_metrics.json", "corpus"],
        |d| {
            edit_json(&mm(d), |v| {
                v.as_object_mut().unwrap().remove("corpus");
            })
        },
    );
    c.case("metrics", "scores as strings", &["b_metrics.json"], |d| {
        edit_json(&mm(d), |v| v["corpus"]["rouge1"] = "high".into())
    });
    c.case("metrics", "missing", &["b_metrics.json"], |d| {
        std::fs::remove_file(mm(d)).unwrap()
    });
    let rk = |d: &Path| d.join("final_ranking.json");
    c.case("ranking", "not JSON", &["final_ranking.json"], |d| {
        std::fs::write(rk(d), "[").unwrap()
    });
    c.case("ranking", "not a list", &["final_ranking.json"], |d| {
        std::fs::write(rk(d), "{}").unwrap()
    });
    c.case("ranking", "empty list", &["final_ranking.json"], |d| {
        std::fs::write(rk(d), "[]").unwrap()
    });
    c.case(
        "ranking",
        "a model that is gone",
        &["no-such-model", "final_ranking.json"],
        |d| {
            edit_json(&rk(d), |v| {
                for row in v.as_array_mut().unwrap() {
                    row["model_id"] = "./no-such-model".into();
                }
            })
        },
    );

    println!("hostile corpus: {} cases, {} command runs", c.cases, c.runs);
    assert!(
        c.failures.is_empty(),
        "{} of {} runs failed the contract:\n{}",
        c.failures.len(),
        c.runs,
        c.failures.join("\n")
    );
}

/// A training run's checkpoint broken after the fact: `train --resume` fails with one line
/// naming the checkpoint file, and the run's files are left as they were.
#[test]
fn broken_training_checkpoints_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let model = model_dir("tiny-gelu");
    let data = root().join("../shared/data/dialogsum");
    let out = bartleby(&[
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
        "--save-every",
        "1",
        "--stop-after-step",
        "1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ck = runs.join("r/checkpoint");
    let files: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".safetensors") || n.ends_with(".json"))
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let path = ck.join(f);
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() / 3]).unwrap();
        let before = snapshot(&runs);
        let out = bartleby(&["train", "--resume", runs.join("r").to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(out.status.code(), Some(1), "{f}: {stderr}");
        assert_eq!(errors.len(), 1, "{f}: {stderr}");
        assert!(errors[0].contains(f.as_str()), "{f}: {}", errors[0]);
        assert_eq!(snapshot(&runs), before, "{f}: the run's files changed");
        std::fs::write(&path, good).unwrap();
    }
}
