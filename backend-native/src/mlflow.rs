//! Experiment tracking on an MLflow tracking server through its REST API (2.0), when
//! `MLFLOW_TRACKING_URI` is an http(s) URL: `train`, `eval` and each `benchmark` candidate log a
//! run — params, metrics with their step, tags, artifacts (through the server's artifact proxy,
//! `mlflow server`'s default). The server being down is a warning, never a failed command: what
//! could not be sent is kept and sent again at the next call (and at the end).

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The MLflow run a `train` run directory logs to (`mlflow_run.json`), so `--resume` continues it.
pub const RUN_FILE: &str = "mlflow_run.json";

/// MLflow's limits per `runs/log-batch` request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
/// Params values are cut at MLflow's 6,000 characters.
const MAX_PARAM_CHARS: usize = 6000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A request that could not be sent yet.
enum Pending {
    Batch(Value),
    Artifact { path: String, bytes: Vec<u8> },
    Update(Value),
}

/// The tracking server, when `MLFLOW_TRACKING_URI` names one over HTTP.
pub fn tracking_uri() -> Option<String> {
    let uri = std::env::var("MLFLOW_TRACKING_URI").ok()?;
    let uri = uri.trim().trim_end_matches('/').to_string();
    if uri.starts_with("http://") || uri.starts_with("https://") {
        Some(uri)
    } else {
        if !uri.is_empty() {
            eprintln!(
                "warning: MLFLOW_TRACKING_URI={uri}: only http(s):// tracking servers are supported; not logging to MLflow"
            );
        }
        None
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
}

/// What went wrong with a request, in one line.
fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            format!("HTTP {code}: {}", msg.lines().next().unwrap_or(""))
        }
        ureq::Error::Transport(t) => t.to_string(),
    }
}

fn auth(req: ureq::Request) -> ureq::Request {
    // MLflow's own client variable for a server behind authentication.
    if let Ok(token) = std::env::var("MLFLOW_TRACKING_TOKEN") {
        return req.set("Authorization", &format!("Bearer {token}"));
    }
    req
}

fn call(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<Value, String> {
    let url = format!("{base}/api/2.0/mlflow/{path}");
    let req = auth(agent.request(method, &url));
    let resp = if method == "GET" {
        let mut req = req;
        for (k, v) in body.as_object().into_iter().flatten() {
            req = req.query(k, v.as_str().unwrap_or_default());
        }
        req.call()
    } else {
        req.set("Content-Type", "application/json")
            .send_string(&body.to_string())
    };
    let text = resp
        .map_err(describe)?
        .into_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: not JSON: {e}"))
}

/// How the run is identified once it exists on the server.
struct Started {
    run_id: String,
    experiment_id: String,
    /// The artifact root as a path under the server's artifact proxy (`1/<run>/artifacts`).
    artifact_root: Option<String>,
}

/// One MLflow run. Created at once; started on the server at the first request that gets through
/// (so a server that is down at first is retried at each later call).
pub struct Run {
    base: String,
    agent: ureq::Agent,
    experiment: String,
    run_name: String,
    tags: Vec<(String, String)>,
    resume: Option<(String, String)>,
    started: Option<Started>,
    pending: VecDeque<Pending>,
    warned: bool,
}

impl Run {
    /// A run named `run_name` in `MLFLOW_EXPERIMENT_NAME` (default `default_experiment`), or the
    /// continuation of `resume` = (experiment id, run id), marked running again. `None` when no
    /// tracking server is configured.
    pub fn start(
        default_experiment: &str,
        run_name: &str,
        tags: &[(String, String)],
        resume: Option<(&str, &str)>,
    ) -> Option<Run> {
        let base = tracking_uri()?;
        let experiment = std::env::var("MLFLOW_EXPERIMENT_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| default_experiment.to_string());
        let mut run = Run {
            base,
            agent: agent(),
            experiment,
            run_name: run_name.to_string(),
            tags: tags.to_vec(),
            resume: resume.map(|(e, r)| (e.to_string(), r.to_string())),
            started: None,
            pending: VecDeque::new(),
            warned: false,
        };
        run.flush();
        Some(run)
    }

    /// (experiment id, run id) once the run exists on the server.
    pub fn ids(&self) -> Option<(String, String)> {
        self.started
            .as_ref()
            .map(|s| (s.experiment_id.clone(), s.run_id.clone()))
    }

    fn create(&self) -> Result<Started, String> {
        let (agent, base) = (&self.agent, self.base.as_str());
        if let Some((experiment_id, run_id)) = &self.resume {
            let got = call(agent, base, "GET", "runs/get", &json!({"run_id": run_id}))?;
            call(
                agent,
                base,
                "POST",
                "runs/update",
                &json!({"run_id": run_id, "status": "RUNNING"}),
            )?;
            return Ok(Started {
                run_id: run_id.clone(),
                experiment_id: experiment_id.clone(),
                artifact_root: artifact_root(got["run"]["info"]["artifact_uri"].as_str()),
            });
        }
        let experiment_id = match call(
            agent,
            base,
            "GET",
            "experiments/get-by-name",
            &json!({"experiment_name": self.experiment}),
        ) {
            Ok(v) => v["experiment"]["experiment_id"]
                .as_str()
                .ok_or("experiments/get-by-name: no experiment_id")?
                .to_string(),
            Err(e) if e.starts_with("HTTP 404") => call(
                agent,
                base,
                "POST",
                "experiments/create",
                &json!({"name": self.experiment}),
            )?["experiment_id"]
                .as_str()
                .ok_or("experiments/create: no experiment_id")?
                .to_string(),
            Err(e) => return Err(e),
        };
        let tags: Vec<Value> = self
            .tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .chain([json!({"key": "mlflow.runName", "value": self.run_name})])
            .collect();
        let created = call(
            agent,
            base,
            "POST",
            "runs/create",
            &json!({"experiment_id": experiment_id, "run_name": self.run_name,
                    "start_time": now_ms(), "tags": tags}),
        )?;
        let info = &created["run"]["info"];
        let run_id = info["run_id"]
            .as_str()
            .ok_or("runs/create: no run_id")?
            .to_string();
        let root = artifact_root(info["artifact_uri"].as_str());
        if root.is_none() {
            eprintln!(
                "warning: MLflow run {run_id}: artifact store {} is not the server's artifact proxy \
                 (`mlflow server` serves artifacts by default); artifacts are not uploaded",
                info["artifact_uri"].as_str().unwrap_or_default()
            );
        }
        Ok(Started {
            run_id,
            experiment_id,
            artifact_root: root,
        })
    }

    /// Params (each value cut at MLflow's limit), in batches of 100.
    pub fn log_params(&mut self, params: &[(String, String)]) {
        for chunk in params.chunks(MAX_PARAMS) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v.chars().take(MAX_PARAM_CHARS).collect::<String>()}))
                .collect();
            self.pending
                .push_back(Pending::Batch(json!({ "params": params })));
        }
        self.flush();
    }

    /// Metrics of one step: (key, value); non-finite values are skipped.
    pub fn log_metrics(&mut self, step: i64, timestamp_ms: i64, metrics: &[(String, f64)]) {
        let metrics: Vec<Value> = metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": timestamp_ms, "step": step}))
            .collect();
        for chunk in metrics.chunks(MAX_METRICS) {
            self.pending
                .push_back(Pending::Batch(json!({ "metrics": chunk })));
        }
        self.flush();
    }

    /// A file, under `artifact_dir` (`""` for the root) of the run's artifacts.
    pub fn log_artifact(&mut self, file: &Path, artifact_dir: &str) {
        let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        match std::fs::read(file) {
            Ok(bytes) => self.log_artifact_bytes(&join(artifact_dir, name), bytes),
            Err(e) => eprintln!("warning: MLflow: cannot read {}: {e}", file.display()),
        }
    }

    /// Every file of a folder (not recursive), under `artifact_dir`.
    pub fn log_artifact_dir(&mut self, dir: &Path, artifact_dir: &str) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            self.log_artifact(&f, artifact_dir);
        }
    }

    pub fn log_artifact_bytes(&mut self, path: &str, bytes: Vec<u8>) {
        if self
            .started
            .as_ref()
            .is_some_and(|s| s.artifact_root.is_none())
        {
            return;
        }
        self.pending.push_back(Pending::Artifact {
            path: path.to_string(),
            bytes,
        });
        self.flush();
    }

    /// Marks the run FINISHED (or FAILED) and sends what is still pending.
    pub fn finish(&mut self, ok: bool) {
        let status = if ok { "FINISHED" } else { "FAILED" };
        self.pending.push_back(Pending::Update(
            json!({"status": status, "end_time": now_ms()}),
        ));
        self.flush();
        if !self.pending.is_empty() {
            eprintln!(
                "warning: MLflow: {} request(s) to {} could not be sent; the run's local files have everything",
                self.pending.len(),
                self.base
            );
        }
    }

    /// Sends what is pending, in order, stopping at the first failure (kept for the next call).
    fn flush(&mut self) {
        if self.started.is_none() {
            match self.create() {
                Ok(started) => {
                    tracing::info!("MLflow: logging to run {} at {}", started.run_id, self.base);
                    self.started = Some(started);
                    self.warned = false;
                }
                Err(e) => {
                    if !self.warned {
                        eprintln!(
                            "warning: MLflow tracking server {}: {e}; will retry at the next log call",
                            self.base
                        );
                        self.warned = true;
                    }
                    return;
                }
            }
        }
        let Some(started) = &self.started else { return };
        let with_run = |body: &Value| {
            let mut body = body.clone();
            body["run_id"] = started.run_id.clone().into();
            body
        };
        while let Some(p) = self.pending.front() {
            let sent = match p {
                Pending::Batch(body) => call(
                    &self.agent,
                    &self.base,
                    "POST",
                    "runs/log-batch",
                    &with_run(body),
                )
                .map(|_| ()),
                Pending::Update(body) => call(
                    &self.agent,
                    &self.base,
                    "POST",
                    "runs/update",
                    &with_run(body),
                )
                .map(|_| ()),
                Pending::Artifact { path, bytes } => {
                    let Some(root) = started.artifact_root.as_deref() else {
                        self.pending.pop_front();
                        continue;
                    };
                    let url = format!(
                        "{}/api/2.0/mlflow-artifacts/artifacts/{}",
                        self.base,
                        join(root, path)
                    );
                    auth(self.agent.put(&url))
                        .send_bytes(bytes)
                        .map(|_| ())
                        .map_err(describe)
                }
            };
            match sent {
                Ok(()) => {
                    self.pending.pop_front();
                    self.warned = false;
                }
                Err(e) => {
                    // A request the server refuses (4xx but 429) will not succeed later: drop it.
                    let permanent = e.starts_with("HTTP 4") && !e.starts_with("HTTP 429");
                    if permanent {
                        eprintln!("warning: MLflow: {e} (dropped)");
                        self.pending.pop_front();
                        continue;
                    }
                    if !self.warned {
                        eprintln!(
                            "warning: MLflow tracking server {}: {e}; will retry at the next log call",
                            self.base
                        );
                        self.warned = true;
                    }
                    return;
                }
            }
        }
    }
}

/// `mlflow-artifacts:/1/<run>/artifacts` → `1/<run>/artifacts` (the proxy's path).
fn artifact_root(uri: Option<&str>) -> Option<String> {
    uri?.strip_prefix("mlflow-artifacts:")
        .map(|p| p.trim_start_matches('/').to_string())
}

fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The project's git commit (`git rev-parse HEAD` in the working directory), if any.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The leaves of a JSON value (a config, a report's settings): nested keys joined with `.`
/// under `prefix`, arrays kept whole, nulls left out. MLflow params and TensorBoard hparams are
/// both made from it.
pub fn leaves<'a>(prefix: &str, v: &'a Value) -> Vec<(String, &'a Value)> {
    fn walk<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Value::Null => {}
            leaf => out.push((prefix.to_string(), leaf)),
        }
    }
    let mut out = Vec::new();
    walk(prefix, v, &mut out);
    out
}

/// A JSON value as flat params ([`leaves`], strings as they are, the rest as JSON text).
pub fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    out.extend(leaves(prefix, v).into_iter().map(|(k, v)| match v {
        Value::String(s) => (k, s.clone()),
        other => (k, other.to_string()),
    }));
}
