//! A loopback stand-in for the Hugging Face Hub (the one service these tests cannot reach),
//! written from `huggingface_hub`'s documented behaviour and checked with that client itself
//! (tests/push.rs runs `create_repo`, `upload_folder` and `hf_hub_download` against it):
//!
//! - `POST /api/repos/create` (409 when it exists), bearer-token auth (401), a namespace the token
//!   may not write (`forbidden-org`: 403), unknown repositories (404);
//! - `POST /api/{models|datasets|spaces}/NS/NAME/preupload/REV`: `lfs` for the Hub's default
//!   `.gitattributes` patterns, binary samples and files over 10 MB, else `regular`;
//! - the Git LFS batch API at `/[datasets/|spaces/]NS/NAME.git/info/lfs/objects/batch`: objects it
//!   has come back without actions; others get a `basic` upload (PUT) or, over 64 KiB, the Hub's
//!   `multipart` one (`chunk_size` + numbered part URLs, completion POST with the parts' ETags),
//!   and a `verify` action; uploads are checked against their sha256;
//! - `POST .../commit/REV` (`application/x-ndjson`): a commit of every file, LFS ones by oid;
//! - `GET`/`HEAD /[...]NS/NAME/resolve/REV/PATH` with `X-Repo-Commit`, `ETag` (and
//!   `X-Linked-Etag`/`X-Linked-Size` for LFS files) and byte ranges — what `hf_hub_download` and
//!   the `hf-hub` crate read.
//!
//! Fault injection: `fail_lfs_uploads` makes every LFS upload fail with 500 (an upload interrupted
//! halfway); `conflict_commits` answers commits with 409.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post, put};
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub const TOKEN: &str = "hf_standin_token";

#[derive(Default, Clone)]
pub struct Commit {
    pub oid: String,
    pub message: String,
    /// path → (bytes, LFS oid).
    pub files: BTreeMap<String, (Vec<u8>, Option<String>)>,
}

#[derive(Default)]
pub struct Repo {
    pub private: bool,
    pub sdk: Option<String>,
    pub commits: Vec<Commit>,
}

#[derive(Default)]
pub struct Hub {
    /// "models/NS/NAME" → repository.
    pub repos: HashMap<String, Repo>,
    pub lfs: HashMap<String, Vec<u8>>,
    parts: HashMap<String, BTreeMap<u64, Vec<u8>>>,
    pub fail_lfs_uploads: bool,
    /// Answer every commit with 409 (another commit landed meanwhile, as the Hub says).
    pub conflict_commits: bool,
    /// LFS objects actually uploaded (not skipped), in order.
    pub lfs_uploads: Vec<String>,
    base: String,
}

pub struct StandIn {
    pub url: String,
    pub hub: Arc<Mutex<Hub>>,
    _runtime: tokio::runtime::Runtime,
}

impl StandIn {
    pub fn start() -> StandIn {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hub = Arc::new(Mutex::new(Hub {
            base: url.clone(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/api/repos/create", post(create))
            .route("/api/{kind}/{ns}/{name}/preupload/{rev}", post(preupload))
            .route("/api/{kind}/{ns}/{name}/commit/{rev}", post(commit))
            .route("/lfs-upload/{oid}", put(lfs_put))
            .route("/lfs-part/{oid}/{n}", put(lfs_part))
            .route("/lfs-complete/{oid}", post(lfs_complete))
            .route("/lfs-verify/{oid}", post(lfs_verify))
            .fallback(any(git_or_resolve))
            .with_state(hub.clone());
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StandIn {
            url,
            hub,
            _runtime: runtime,
        }
    }

    /// The latest commit of `kind/ns/name` (`models/...`).
    pub fn head(&self, key: &str) -> Option<Commit> {
        let hub = self.hub.lock().unwrap();
        hub.repos.get(key)?.commits.last().cloned()
    }
}

type St = State<Arc<Mutex<Hub>>>;

fn err(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({"error": msg}))).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"))
}

fn sha256(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn sha1ish(b: &[u8]) -> String {
    sha256(b)[..40].to_string()
}

/// The Hub's default `.gitattributes` LFS patterns (as `create_repo` commits them).
fn lfs_pattern(path: &str) -> bool {
    const EXT: &[&str] = &[
        "7z",
        "arrow",
        "bin",
        "bz2",
        "ckpt",
        "ftz",
        "gz",
        "h5",
        "joblib",
        "mlmodel",
        "model",
        "msgpack",
        "npy",
        "npz",
        "onnx",
        "ot",
        "parquet",
        "pb",
        "pickle",
        "pkl",
        "pt",
        "pth",
        "rar",
        "safetensors",
        "tar",
        "tflite",
        "tgz",
        "wasm",
        "xz",
        "zip",
        "zst",
    ];
    let name = path.rsplit('/').next().unwrap_or(path);
    name.contains("tfevents")
        || name
            .rsplit_once('.')
            .is_some_and(|(_, ext)| EXT.contains(&ext))
}

async fn create(State(hub): St, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers) {
        return err(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials in Authorization header",
        );
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return err(StatusCode::BAD_REQUEST, "invalid JSON"),
    };
    let ns = v["organization"].as_str().unwrap_or("user");
    if ns == "forbidden-org" {
        return err(
            StatusCode::FORBIDDEN,
            "You don't have the rights to create a repo under this namespace",
        );
    }
    let kind = match v["type"].as_str() {
        None | Some("model") => "models",
        Some("dataset") => "datasets",
        Some("space") => "spaces",
        Some(_) => return err(StatusCode::BAD_REQUEST, "invalid type"),
    };
    let key = format!("{kind}/{ns}/{}", v["name"].as_str().unwrap_or(""));
    let mut hub = hub.lock().unwrap();
    let web = key.strip_prefix("models/").unwrap_or(&key).to_string();
    let url = format!("{}/{web}", hub.base);
    if hub.repos.contains_key(&key) {
        // As the Hub: the existing repository's URL with the 409 (`create_repo(exist_ok=True)` reads it).
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"error": "You already created this repo", "url": url})),
        )
            .into_response();
    }
    // The Hub's first commit: .gitattributes.
    let mut first = Commit {
        message: "initial commit".into(),
        ..Default::default()
    };
    let ga = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n".to_vec();
    first.oid = sha1ish(&ga);
    first.files.insert(".gitattributes".into(), (ga, None));
    hub.repos.insert(
        key.clone(),
        Repo {
            private: v["private"].as_bool().unwrap_or(false),
            sdk: v["sdk"].as_str().map(str::to_string),
            commits: vec![first],
        },
    );
    axum::Json(json!({"url": url, "name": key})).into_response()
}

fn repo_key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

async fn preupload(
    State(hub): St,
    Path((kind, ns, name, _rev)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return err(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials in Authorization header",
        );
    }
    if !hub
        .lock()
        .unwrap()
        .repos
        .contains_key(&repo_key(&kind, &ns, &name))
    {
        return err(StatusCode::NOT_FOUND, "Repository not found");
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let files: Vec<Value> = v["files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let path = f["path"].as_str().unwrap_or("");
            let size = f["size"].as_u64().unwrap_or(0);
            let sample = b64_decode(f["sample"].as_str().unwrap_or("")).unwrap_or_default();
            let binary = std::str::from_utf8(&sample).is_err() || sample.contains(&0);
            let lfs = lfs_pattern(path) || size > 10 * 1024 * 1024 || binary;
            json!({"path": path, "uploadMode": if lfs { "lfs" } else { "regular" }, "shouldIgnore": false})
        })
        .collect();
    axum::Json(json!({"files": files, "commitOid": "0000"})).into_response()
}

const MULTIPART_OVER: u64 = 64 * 1024;
const CHUNK: u64 = 32 * 1024;

async fn git_or_resolve(
    State(hub): St,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches('/').to_string();
    if path.ends_with(".git/info/lfs/objects/batch") && method == Method::POST {
        return lfs_batch(hub, &path, &headers, &body);
    }
    if let Some(r) = resolve(&hub, &path, &method, &headers) {
        return r;
    }
    err(StatusCode::NOT_FOUND, "Not found")
}

fn lfs_batch(hub: Arc<Mutex<Hub>>, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if !authorized(headers) {
        return err(StatusCode::UNAUTHORIZED, "Invalid credentials");
    }
    let repo = path.trim_end_matches(".git/info/lfs/objects/batch");
    let key = if repo.starts_with("datasets/") || repo.starts_with("spaces/") {
        repo.to_string()
    } else {
        format!("models/{repo}")
    };
    let hub = hub.lock().unwrap();
    if !hub.repos.contains_key(&key) {
        return err(StatusCode::NOT_FOUND, "Repository not found");
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let base = hub.base.clone();
    let objects: Vec<Value> = v["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let oid = o["oid"].as_str().unwrap_or("").to_string();
            let size = o["size"].as_u64().unwrap_or(0);
            if hub.lfs.contains_key(&oid) {
                return json!({"oid": oid, "size": size});
            }
            let verify = json!({"href": format!("{base}/lfs-verify/{oid}"), "header": {"Authorization": format!("Bearer {TOKEN}")}});
            let upload = if size > MULTIPART_OVER {
                let mut header = serde_json::Map::new();
                header.insert("chunk_size".into(), CHUNK.to_string().into());
                for n in 1..=size.div_ceil(CHUNK) {
                    header.insert(n.to_string(), format!("{base}/lfs-part/{oid}/{n}").into());
                }
                json!({"href": format!("{base}/lfs-complete/{oid}"), "header": header})
            } else {
                json!({"href": format!("{base}/lfs-upload/{oid}"), "header": {}})
            };
            json!({"oid": oid, "size": size, "authenticated": true,
                   "actions": {"upload": upload, "verify": verify}})
        })
        .collect();
    (
        [("content-type", "application/vnd.git-lfs+json")],
        json!({"transfer": "basic", "objects": objects}).to_string(),
    )
        .into_response()
}

async fn lfs_put(State(hub): St, Path(oid): Path<String>, body: Bytes) -> Response {
    let mut hub = hub.lock().unwrap();
    if hub.fail_lfs_uploads {
        return err(StatusCode::INTERNAL_SERVER_ERROR, "storage backend failed");
    }
    if sha256(&body) != oid {
        return err(StatusCode::BAD_REQUEST, "sha256 mismatch");
    }
    hub.lfs.insert(oid.clone(), body.to_vec());
    hub.lfs_uploads.push(oid);
    StatusCode::OK.into_response()
}

async fn lfs_part(State(hub): St, Path((oid, n)): Path<(String, u64)>, body: Bytes) -> Response {
    let mut hub = hub.lock().unwrap();
    if hub.fail_lfs_uploads {
        return err(StatusCode::INTERNAL_SERVER_ERROR, "storage backend failed");
    }
    let etag = format!("\"{}\"", &sha256(&body)[..16]);
    hub.parts.entry(oid).or_default().insert(n, body.to_vec());
    ([("etag", etag)], "").into_response()
}

async fn lfs_complete(State(hub): St, Path(oid): Path<String>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut hub = hub.lock().unwrap();
    let Some(parts) = hub.parts.remove(&oid) else {
        return err(StatusCode::BAD_REQUEST, "no parts");
    };
    let listed = v["parts"].as_array().map_or(0, |p| p.len());
    for p in v["parts"].as_array().into_iter().flatten() {
        let n = p["partNumber"].as_u64().unwrap_or(0);
        let want = parts.get(&n).map(|b| format!("\"{}\"", &sha256(b)[..16]));
        if want.as_deref() != p["etag"].as_str() {
            return err(StatusCode::BAD_REQUEST, "etag mismatch");
        }
    }
    if listed != parts.len() {
        return err(StatusCode::BAD_REQUEST, "missing parts");
    }
    let bytes: Vec<u8> = parts.into_values().flatten().collect();
    if sha256(&bytes) != oid {
        return err(StatusCode::BAD_REQUEST, "sha256 mismatch");
    }
    hub.lfs.insert(oid.clone(), bytes);
    hub.lfs_uploads.push(oid);
    StatusCode::OK.into_response()
}

async fn lfs_verify(
    State(hub): St,
    Path(oid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return err(StatusCode::UNAUTHORIZED, "Invalid credentials");
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hub = hub.lock().unwrap();
    match hub.lfs.get(&oid) {
        Some(b) if Some(b.len() as u64) == v["size"].as_u64() => StatusCode::OK.into_response(),
        _ => err(StatusCode::NOT_FOUND, "object not found"),
    }
}

async fn commit(
    State(hub): St,
    Path((kind, ns, name, rev)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return err(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials in Authorization header",
        );
    }
    if rev != "main" {
        return err(
            StatusCode::NOT_FOUND,
            "Revision not found (the stand-in has main only)",
        );
    }
    let key = repo_key(&kind, &ns, &name);
    let mut hub = hub.lock().unwrap();
    if hub.conflict_commits {
        return err(
            StatusCode::CONFLICT,
            "A commit has happened since. Please refresh and try again.",
        );
    }
    let Some(prev) = hub
        .repos
        .get(&key)
        .map(|r| r.commits.last().cloned().unwrap_or_default())
    else {
        return err(StatusCode::NOT_FOUND, "Repository not found");
    };
    let mut next = prev.clone();
    let mut header = None;
    for line in String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return err(StatusCode::BAD_REQUEST, "invalid ndjson line");
        };
        let value = &v["value"];
        match v["key"].as_str() {
            Some("header") => header = value["summary"].as_str().map(str::to_string),
            Some("file") => {
                let Some(bytes) = b64_decode(value["content"].as_str().unwrap_or("")) else {
                    return err(StatusCode::BAD_REQUEST, "invalid base64");
                };
                next.files
                    .insert(value["path"].as_str().unwrap_or("").into(), (bytes, None));
            }
            Some("lfsFile") => {
                let oid = value["oid"].as_str().unwrap_or("").to_string();
                let Some(bytes) = hub.lfs.get(&oid).cloned() else {
                    return err(StatusCode::BAD_REQUEST, "lfs object not uploaded");
                };
                next.files.insert(
                    value["path"].as_str().unwrap_or("").into(),
                    (bytes, Some(oid)),
                );
            }
            Some("deletedFile") => {
                next.files.remove(value["path"].as_str().unwrap_or(""));
            }
            _ => return err(StatusCode::BAD_REQUEST, "unknown ndjson key"),
        }
    }
    let Some(message) = header else {
        return err(StatusCode::BAD_REQUEST, "no header line");
    };
    next.message = message;
    next.oid = sha1ish(format!("{}{}{:?}", prev.oid, next.message, next.files.keys()).as_bytes());
    let oid = next.oid.clone();
    hub.repos.get_mut(&key).unwrap().commits.push(next);
    let base = hub.base.clone();
    axum::Json(json!({"success": true, "commitOid": oid, "commitUrl": format!("{base}/{key}/commit/{oid}")}))
        .into_response()
}

/// `[datasets/|spaces/]NS/NAME/resolve/REV/PATH`.
fn resolve(
    hub: &Arc<Mutex<Hub>>,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response> {
    let (kind, rest) = match path.split_once('/') {
        Some(("datasets", r)) => ("datasets", r),
        Some(("spaces", r)) => ("spaces", r),
        _ => ("models", path),
    };
    let mut it = rest.splitn(5, '/');
    let (ns, name, resolve, rev, file) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    if resolve != "resolve" {
        return None;
    }
    let file = percent_decode(file);
    let hub = hub.lock().unwrap();
    let Some(repo) = hub.repos.get(&repo_key(kind, ns, name)) else {
        return Some(
            (
                StatusCode::NOT_FOUND,
                [("x-error-code", "RepoNotFound")],
                "Repository not found",
            )
                .into_response(),
        );
    };
    if repo.private && !authorized(headers) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                [("x-error-code", "RepoNotFound")],
                "",
            )
                .into_response(),
        );
    }
    let commit = repo
        .commits
        .iter()
        .rev()
        .find(|c| rev == "main" || c.oid == rev)?;
    let Some((bytes, lfs)) = commit.files.get(&file) else {
        return Some(
            (
                StatusCode::NOT_FOUND,
                [("x-error-code", "EntryNotFound")],
                "Entry not found",
            )
                .into_response(),
        );
    };
    let total = bytes.len() as u64;
    let etag = match lfs {
        Some(oid) => oid.clone(),
        None => sha1ish(bytes),
    };
    let (status, start, end) = match headers
        .get("range")
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
    {
        Some((a, b)) if total > 0 => {
            let a: u64 = a.parse().unwrap_or(0);
            let b: u64 = b.parse().unwrap_or(total - 1).min(total - 1);
            (StatusCode::PARTIAL_CONTENT, a.min(total), b + 1)
        }
        _ => (StatusCode::OK, 0, total),
    };
    let body = if *method == Method::HEAD {
        Vec::new()
    } else {
        bytes[start as usize..(end as usize).max(start as usize)].to_vec()
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert("x-repo-commit", commit.oid.parse().unwrap());
    h.insert("etag", format!("\"{etag}\"").parse().unwrap());
    h.insert("accept-ranges", "bytes".parse().unwrap());
    if lfs.is_some() {
        h.insert("x-linked-etag", format!("\"{etag}\"").parse().unwrap());
        h.insert("x-linked-size", total.to_string().parse().unwrap());
    }
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            "content-range",
            format!("bytes {start}-{}/{total}", end.saturating_sub(1))
                .parse()
                .unwrap(),
        );
    }
    if *method == Method::HEAD {
        h.insert("content-length", (end - start).to_string().parse().unwrap());
    }
    Some(resp)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().as_bytes();
    if s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for c in s.chunks(4) {
        let pad = c.iter().rev().take_while(|&&x| x == b'=').count();
        let mut n = 0u32;
        for (i, &x) in c.iter().enumerate() {
            n |= if x == b'=' { 0 } else { val(x)? } << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Some(out)
}
