//! MLflow tracking (issue 25) against a real `mlflow server` (PyPI `mlflow`, SQLite backend,
//! artifacts proxied by the server) on loopback, read back with MLflow's own Python client:
//! `train` (params = every resolved setting, metrics with their step, tags, artifacts), `train
//! --resume` continuing the same run, `eval`, and a server that is down (a warning, exit 0).
//!
//! The server comes from `target/test-venv` (tests/run.sh installs it) or `BARTLEBY_TEST_VENV`
//! (a venv folder).

use bartleby_tests::{bartleby_bin, model_dir, root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn venv() -> PathBuf {
    bartleby_tests::test_venv()
}

struct Server {
    child: Child,
    uri: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // gunicorn workers are in the server's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(venv().join("bin/mlflow"));
    cmd.args([
        "server",
        "--backend-store-uri",
        &format!("sqlite:///{}/mlflow.db", dir.path().display()),
        "--artifacts-destination",
        &dir.path().join("artifacts").display().to_string(),
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--workers",
        "1",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().unwrap();
    let uri = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = write!(s, "GET /health HTTP/1.0\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.") && out.contains(" 200 ") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "mlflow server did not start"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    Server {
        child,
        uri,
        _dir: dir,
    }
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bartleby_bin());
    cmd.args(args).current_dir(root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// MLflow's own client: the run's info, params, tags, metric histories and artifact files.
fn read_back(uri: &str, run_id: &str) -> Value {
    let script = r#"
import json, sys, mlflow
from mlflow.tracking import MlflowClient
mlflow.set_tracking_uri(sys.argv[1])
c = MlflowClient(sys.argv[1])
r = c.get_run(sys.argv[2])
def files(path=None):
    out = []
    for f in c.list_artifacts(r.info.run_id, path):
        out += files(f.path) if f.is_dir else [f.path]
    return out
hist = {k: [[m.step, m.value] for m in sorted(c.get_metric_history(r.info.run_id, k), key=lambda m: (m.step, m.timestamp))]
        for k in r.data.metrics}
exp = c.get_experiment(r.info.experiment_id).name
print(json.dumps({"status": r.info.status, "name": r.info.run_name, "experiment": exp,
                  "params": r.data.params, "tags": r.data.tags, "metrics": hist, "artifacts": sorted(files())}))
"#;
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", script, uri, run_id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn data() -> String {
    bartleby_tests::dialogsum_dir()
}

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
        "1",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--seed",
        "3",
        "--save-every",
        "1",
        "--log-every",
        "1",
    ]
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_id(dir: &Path) -> String {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("mlflow_run.json")).unwrap()).unwrap();
    v["run_id"].as_str().unwrap().to_string()
}

#[test]
fn train_resume_and_eval_log_to_a_real_mlflow_server() {
    let server = start_server();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let model = model_dir("tiny-gelu");
    let model = model.to_str().unwrap();
    let data = data();
    let env = [
        ("MLFLOW_TRACKING_URI", server.uri.as_str()),
        ("MLFLOW_EXPERIMENT_NAME", "bartleby-tests"),
    ];
    // Stopped after step 3 (exit 3, as a kill after a checkpoint), then resumed.
    let mut args = train_args(runs, "lora", model, &data);
    args.extend(["--stop-after-step", "3"]);
    let out = run(&args, &env);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp.path().join("lora");
    let first_id = run_id(&dir);
    let mid = read_back(&server.uri, &first_id);
    assert_eq!(mid["status"], "RUNNING");
    ok(&run(&["train", "--resume", dir.to_str().unwrap()], &env));
    assert_eq!(
        run_id(&dir),
        first_id,
        "--resume continued the same MLflow run"
    );
    let got = read_back(&server.uri, &first_id);
    assert_eq!(got["status"], "FINISHED");
    assert_eq!(got["name"], "lora");
    assert_eq!(got["experiment"], "bartleby-tests");
    // Params: every resolved setting of config.toml.
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    let params = got["params"].as_object().unwrap();
    for key in [
        "lora_r",
        "lora_alpha",
        "lr",
        "micro_batch",
        "seed",
        "model",
        "max_source_tokens",
    ] {
        let want = match &cfg[key] {
            toml::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        assert_eq!(params[key].as_str().unwrap(), want, "param {key}");
    }
    assert_eq!(params["lora_r"], "8");
    // Tags: model, data, the project's git commit, the command.
    let tags = &got["tags"];
    assert_eq!(tags["model"], model);
    assert_eq!(tags["bartleby.command"], "train");
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root())
        .output()
        .unwrap();
    if commit.status.success() {
        assert_eq!(
            tags["mlflow.source.git.commit"],
            String::from_utf8_lossy(&commit.stdout).trim()
        );
    }
    // Metrics: each logged step once, with the values of metrics.jsonl (both halves of the run).
    let logged = lines(&dir.join("metrics.jsonl"));
    let train_lines: Vec<&Value> = logged.iter().filter(|l| l.get("loss").is_some()).collect();
    assert_eq!(train_lines.len(), 8, "2 epochs x 4 steps");
    let loss = got["metrics"]["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), train_lines.len(), "{loss:?}");
    for (m, l) in loss.iter().zip(&train_lines) {
        assert_eq!(m[0], l["step"]);
        let (a, b) = (m[1].as_f64().unwrap(), l["loss"].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }
    for key in [
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "val/val_loss",
        "val/rougeL",
    ] {
        assert!(
            got["metrics"][key]
                .as_array()
                .is_some_and(|h| !h.is_empty()),
            "{key}: {}",
            got["metrics"]
        );
    }
    // Artifacts: the adapter, the settings, the metrics, the curve, the TensorBoard file.
    let artifacts: Vec<&str> = got["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "config.toml",
        "metrics.jsonl",
        "loss.png",
        "events.out.tfevents.bartleby",
        "README.md",
    ] {
        assert!(artifacts.contains(&want), "{want} not in {artifacts:?}");
    }

    // eval: a run with the generation settings, the corpus scores and the output files.
    let out_dir = tmp.path().join("eval");
    ok(&run(
        &[
            "eval",
            "--model",
            model,
            "--data",
            &data,
            "--split",
            "validation",
            "--limit",
            "4",
            "--name",
            "tiny",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &env,
    ));
    let report: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("tiny_metrics.json")).unwrap()).unwrap();
    let list = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import sys, mlflow; from mlflow.tracking import MlflowClient as C; c = C(sys.argv[1]); \
             e = c.get_experiment_by_name('bartleby-tests'); \
             print([r.info.run_id for r in c.search_runs([e.experiment_id], \"attributes.run_name = 'tiny'\")][0])",
            &server.uri,
        ])
        .output()
        .unwrap();
    let eval_id = String::from_utf8_lossy(&list.stdout).trim().to_string();
    assert!(
        !eval_id.is_empty(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let got = read_back(&server.uri, &eval_id);
    assert_eq!(got["status"], "FINISHED");
    assert_eq!(got["tags"]["bartleby.command"], "eval");
    assert_eq!(
        got["params"]["generation.num_beams"],
        report["generation"]["num_beams"].to_string()
    );
    assert_eq!(got["params"]["n"], "4");
    let rouge_l = got["metrics"]["rougeL"][0][1].as_f64().unwrap();
    assert_eq!(rouge_l, report["corpus"]["rougeL"]["mid"].as_f64().unwrap());
    let artifacts = got["artifacts"].to_string();
    for f in [
        "tiny_predictions.csv",
        "tiny_metrics.json",
        "tiny_failures.md",
    ] {
        assert!(artifacts.contains(f), "{f} not in {artifacts}");
    }
}

#[test]
fn a_tracking_server_that_is_down_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let model = model_dir("tiny-gelu");
    let data = data();
    let mut args = train_args(runs, "down", model.to_str().unwrap(), &data);
    let at = args.iter().position(|a| *a == "--epochs").unwrap();
    args[at + 1] = "1";
    let port = free_port().to_string();
    let uri = format!("http://127.0.0.1:{port}");
    let out = run(&args, &[("MLFLOW_TRACKING_URI", uri.as_str())]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    // Said once (not once per step), and the run's files are complete.
    assert_eq!(err.matches("will retry").count(), 1, "{err}");
    assert!(err.contains(&uri), "{err}");
    assert!(tmp
        .path()
        .join("down/adapter/adapter_model.safetensors")
        .is_file());
    assert!(!tmp.path().join("down/mlflow_run.json").exists());
}
