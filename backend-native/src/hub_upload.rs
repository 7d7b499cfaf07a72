//! Uploading a folder to the Hugging Face Hub with the Hub's own HTTP protocol, as
//! `huggingface_hub`'s `create_repo` + `upload_folder` do it:
//!
//! 1. `POST /api/repos/create` (409: it exists);
//! 2. `POST /api/{type}s/{repo}/preupload/{revision}`: which files go to LFS;
//! 3. LFS files: `POST /{prefix}{repo}.git/info/lfs/objects/batch` (Git LFS batch API, sha256
//!    oids); objects the Hub already has come back without actions and are skipped (an
//!    interrupted push resumes by uploading only what is missing); the others are uploaded with
//!    the `basic` transfer (one PUT) or the Hub's `multipart` one (a PUT per part, then the
//!    completion POST), then verified;
//! 4. `POST /api/{type}s/{repo}/commit/{revision}` (`application/x-ndjson`: a header line, a
//!    line per file): the last request, so an upload that fails before it leaves the repository
//!    as it was.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// model, dataset or space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RepoType {
    Model,
    Dataset,
    Space,
}

impl RepoType {
    fn plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
            RepoType::Space => "spaces",
        }
    }
    /// The prefix of the repository's git (and web) URLs.
    fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
            RepoType::Space => "spaces/",
        }
    }
    fn name(self) -> &'static str {
        match self {
            RepoType::Model => "model",
            RepoType::Dataset => "dataset",
            RepoType::Space => "space",
        }
    }
}

/// `HF_ENDPOINT`, else the Hub.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

/// `HF_TOKEN`, else the token file `huggingface-cli login` writes (`$HF_HOME/token`).
pub fn token() -> Result<String> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    hf_hub::Cache::from_env().token().filter(|t| !t.is_empty()).ok_or_else(|| {
        anyhow!(
            "no Hugging Face token: run `huggingface-cli login` (or `hf auth login`), or set HF_TOKEN to a token with write access"
        )
    })
}

/// A file to upload: its path in the repository and on disk.
pub struct Upload {
    pub path_in_repo: String,
    pub local: PathBuf,
    pub size: u64,
}

pub struct Client {
    endpoint: String,
    token: String,
    agent: ureq::Agent,
    repo_type: RepoType,
    repo: String,
}

/// Percent-encodes a path segment (the revision).
fn quote(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    pub fn new(repo_type: RepoType, repo: &str, token: String) -> Result<Self> {
        let parts: Vec<&str> = repo.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !p.starts_with(['-', '.'])
        };
        if parts.len() != 2 || !parts.iter().all(|p| valid(p)) {
            bail!("--repo {repo:?}: expected NAMESPACE/NAME (letters, digits, - _ .)");
        }
        Ok(Self {
            endpoint: endpoint(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(15))
                .timeout_read(Duration::from_secs(300))
                .build(),
            repo_type,
            repo: repo.to_string(),
        })
    }

    /// A failed request as one line naming what it was for.
    fn fail(&self, what: &str, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::Status(code, resp) => {
                let body = resp.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| {
                        body.lines()
                            .next()
                            .unwrap_or("")
                            .chars()
                            .take(200)
                            .collect()
                    });
                let hint = match code {
                    401 => " (the token was refused: check HF_TOKEN or `huggingface-cli login`)",
                    403 => " (the token has no write access to this repository)",
                    404 => " (no such repository, or the token cannot see it)",
                    409 => " (conflict: the repository or revision changed meanwhile)",
                    _ => "",
                };
                anyhow!(
                    "{} {}: {what}: HTTP {code}{hint}{}",
                    self.repo_type.name(),
                    self.repo,
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(": {msg}")
                    }
                )
            }
            ureq::Error::Transport(t) => anyhow!("cannot reach {}: {what}: {t}", self.endpoint),
        }
    }

    fn post_json(&self, url: &str, body: &Value, what: &str) -> Result<Value> {
        let resp = self
            .agent
            .post(url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .map_err(|e| self.fail(what, e))?;
        let text = resp.into_string().unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates the repository unless it exists.
    pub fn create_repo(&self, private: bool) -> Result<bool> {
        let (namespace, name) = self.repo.split_once('/').expect("checked in new");
        let mut body = json!({"name": name, "organization": namespace, "private": private});
        if self.repo_type != RepoType::Model {
            body["type"] = self.repo_type.name().into();
        }
        if self.repo_type == RepoType::Space {
            body["sdk"] = "static".into();
        }
        let url = format!("{}/api/repos/create", self.endpoint);
        match self
            .agent
            .post(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
        {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(409, _)) => Ok(false),
            Err(e) => Err(self.fail("creating the repository", e)),
        }
    }

    fn api(&self, action: &str, revision: &str) -> String {
        format!(
            "{}/api/{}/{}/{action}/{}",
            self.endpoint,
            self.repo_type.plural(),
            self.repo,
            quote(revision)
        )
    }

    /// Which files the Hub wants through LFS (`preupload`), in batches of 256.
    fn lfs_paths(&self, files: &[Upload], revision: &str) -> Result<Vec<bool>> {
        let mut lfs = Vec::with_capacity(files.len());
        for chunk in files.chunks(256) {
            let mut entries = Vec::new();
            for f in chunk {
                let mut sample = vec![0u8; 512];
                let n = std::fs::File::open(&f.local)
                    .and_then(|mut h| h.read(&mut sample))
                    .with_context(|| format!("{}: cannot read", f.local.display()))?;
                sample.truncate(n);
                entries
                    .push(json!({"path": f.path_in_repo, "sample": b64(&sample), "size": f.size}));
            }
            let v = self.post_json(
                &self.api("preupload", revision),
                &json!({"files": entries}),
                "preupload",
            )?;
            let modes: std::collections::HashMap<&str, &str> = v["files"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| Some((f["path"].as_str()?, f["uploadMode"].as_str()?)))
                        .collect()
                })
                .unwrap_or_default();
            for f in chunk {
                lfs.push(modes.get(f.path_in_repo.as_str()) == Some(&"lfs"));
            }
        }
        Ok(lfs)
    }

    /// Uploads `files` in one commit on `revision`; returns the commit's URL (or its oid).
    pub fn upload(&self, files: &[Upload], revision: &str, message: &str) -> Result<String> {
        let lfs = self.lfs_paths(files, revision)?;
        let mut lines =
            vec![json!({"key": "header", "value": {"summary": message, "description": ""}})];
        let lfs_total: u64 = files
            .iter()
            .zip(&lfs)
            .filter(|(_, l)| **l)
            .map(|(f, _)| f.size)
            .sum();
        let bar = crate::progress::bytes_bar(lfs_total, "uploading");
        for (f, is_lfs) in files.iter().zip(&lfs) {
            if *is_lfs {
                let oid = sha256_file(&f.local)?;
                self.lfs_upload(f, &oid, revision, &bar)?;
                lines.push(json!({"key": "lfsFile", "value": {"path": f.path_in_repo, "algo": "sha256", "oid": oid}}));
            } else {
                let bytes = std::fs::read(&f.local)
                    .with_context(|| format!("{}: cannot read", f.local.display()))?;
                lines.push(json!({"key": "file", "value": {"content": b64(&bytes), "path": f.path_in_repo, "encoding": "base64"}}));
            }
        }
        bar.finish_and_clear();
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let resp = self
            .agent
            .post(&self.api("commit", revision))
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Content-Type", "application/x-ndjson")
            .send_string(&body)
            .map_err(|e| self.fail("commit", e))?;
        let v: Value =
            serde_json::from_str(&resp.into_string().unwrap_or_default()).unwrap_or(Value::Null);
        Ok(v["commitUrl"]
            .as_str()
            .or(v["commitOid"].as_str())
            .unwrap_or("")
            .to_string())
    }

    /// One LFS object through the batch API: skipped when the Hub has it, else uploaded (basic or
    /// multipart) and verified.
    fn lfs_upload(
        &self,
        f: &Upload,
        oid: &str,
        revision: &str,
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let url = format!(
            "{}/{}{}.git/info/lfs/objects/batch",
            self.endpoint,
            self.repo_type.url_prefix(),
            self.repo
        );
        let body = json!({
            "operation": "upload", "transfers": ["basic", "multipart"],
            "objects": [{"oid": oid, "size": f.size}], "hash_algo": "sha256",
            "ref": {"name": revision},
        });
        let what = format!("LFS batch for {}", f.path_in_repo);
        let resp = self
            .agent
            .post(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Accept", "application/vnd.git-lfs+json")
            .set("Content-Type", "application/vnd.git-lfs+json")
            .send_string(&body.to_string())
            .map_err(|e| self.fail(&what, e))?;
        let v: Value = serde_json::from_str(&resp.into_string().unwrap_or_default())
            .map_err(|e| anyhow!("{what}: the answer is not JSON: {e}"))?;
        let obj = &v["objects"][0];
        if let Some(err) = obj.get("error") {
            bail!(
                "{} {}: {what}: {}",
                self.repo_type.name(),
                self.repo,
                err["message"].as_str().unwrap_or("refused")
            );
        }
        let Some(actions) = obj.get("actions").filter(|a| !a.is_null()) else {
            bar.inc(f.size); // the Hub has it already
            return Ok(());
        };
        let upload = &actions["upload"];
        let href = upload["href"]
            .as_str()
            .ok_or_else(|| anyhow!("{what}: no upload href"))?;
        let header = upload["header"].as_object().cloned().unwrap_or_default();
        let what = format!("uploading {}", f.path_in_repo);
        if let Some(chunk_size) = header.get("chunk_size").and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        }) {
            // Multipart: the part URLs are the header's numeric keys.
            let mut parts: Vec<(u64, &str)> = header
                .iter()
                .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v.as_str()?)))
                .collect();
            parts.sort();
            let mut file = std::fs::File::open(&f.local)
                .with_context(|| format!("{}: cannot read", f.local.display()))?;
            let mut etags = Vec::new();
            for (n, part_url) in parts {
                let mut buf = Vec::with_capacity(chunk_size as usize);
                (&mut file).take(chunk_size).read_to_end(&mut buf)?;
                let resp = self
                    .agent
                    .put(part_url)
                    .send_bytes(&buf)
                    .map_err(|e| self.fail(&what, e))?;
                let etag = resp
                    .header("etag")
                    .ok_or_else(|| anyhow!("{what}: part {n} has no ETag"))?
                    .to_string();
                etags.push(json!({"partNumber": n, "etag": etag}));
                bar.inc(buf.len() as u64);
            }
            self.agent
                .post(href)
                .set("Accept", "application/vnd.git-lfs+json")
                .set("Content-Type", "application/vnd.git-lfs+json")
                .send_string(&json!({"oid": oid, "parts": etags}).to_string())
                .map_err(|e| self.fail(&what, e))?;
        } else {
            // Streamed from the file (with its length: storage PUTs take no chunked bodies).
            let file = std::fs::File::open(&f.local)
                .with_context(|| format!("{}: cannot read", f.local.display()))?;
            let mut req = self
                .agent
                .put(href)
                .set("Content-Length", &f.size.to_string());
            for (k, v) in &header {
                if let Some(v) = v.as_str() {
                    req = req.set(k, v);
                }
            }
            req.send(bar.wrap_read(file))
                .map_err(|e| self.fail(&what, e))?;
        }
        if let Some(verify) = actions.get("verify").filter(|v| !v.is_null()) {
            let href = verify["href"]
                .as_str()
                .ok_or_else(|| anyhow!("{what}: no verify href"))?;
            let mut req = self
                .agent
                .post(href)
                .set("Authorization", &format!("Bearer {}", self.token))
                .set("Accept", "application/vnd.git-lfs+json")
                .set("Content-Type", "application/vnd.git-lfs+json");
            for (k, v) in verify["header"].as_object().into_iter().flatten() {
                if let Some(v) = v.as_str() {
                    req = req.set(k, v);
                }
            }
            req.send_string(&json!({"oid": oid, "size": f.size}).to_string())
                .map_err(|e| self.fail(&format!("verifying {}", f.path_in_repo), e))?;
        }
        Ok(())
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The files of `dir` to upload, sorted: everything but hidden files and folders (`.git`,
/// `.cache`, Bartleby's `.bartleby-*` temps and `.lock`), as `upload_folder` leaves out `.git`.
pub fn folder_files(dir: &Path) -> Result<Vec<Upload>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Upload>) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))?;
        for e in entries {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = e.path();
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).expect("under root");
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(Upload {
                    path_in_repo: parts.join("/"),
                    local: path.clone(),
                    size: meta.len(),
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.path_in_repo.cmp(&b.path_in_repo));
    Ok(out)
}
