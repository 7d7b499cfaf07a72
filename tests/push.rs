//! `bartleby push` (issue 25) against the loopback Hub stand-in (tests/hub_standin.rs), which is
//! first checked with huggingface_hub's own client; what was pushed is pulled back with the
//! existing download code (`summarize --model NS/NAME`, `--adapter NS/NAME`) and with
//! `hf_hub_download`. Faults: no token, refused tokens, a namespace without rights, a server that
//! is down, an upload that fails halfway (the repository keeps its last commit, and the next push
//! sends only what is missing), empty folders, unreadable metrics, a Space without index.html.

use bartleby_tests::hub_standin::{StandIn, TOKEN};
use bartleby_tests::{bartleby_bin, fixtures, model_dir, test_venv};
use std::path::Path;
use std::process::{Command, Output};

struct Env {
    hub: StandIn,
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            hub: StandIn::start(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `bartleby ARGS` with HF_ENDPOINT at the stand-in, its own HF_HOME (cache, no token file)
    /// and `token` as HF_TOKEN.
    fn run(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut cmd = Command::new(bartleby_bin());
        cmd.args(args)
            .env("HF_ENDPOINT", &self.hub.url)
            .env("HF_HOME", self.home.path())
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE");
        if let Some(t) = token {
            cmd.env("HF_TOKEN", t);
        }
        cmd.output().unwrap()
    }

    fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new(test_venv().join("bin/python"))
            .args(["-c", script])
            .args(args)
            .env("HF_ENDPOINT", &self.hub.url)
            .env("HF_TOKEN", TOKEN)
            .env("HF_HOME", self.home.path().join("py"))
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit 1 and one line containing `needle`.
fn fails(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(needle), "{needle:?} not in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn ids(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["token_ids"].to_string())
        .collect()
}

const DIALOGUE: &str =
    "Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you tomorrow :-)";

#[test]
fn the_stand_in_speaks_huggingface_hub_protocol() {
    // huggingface_hub's own client: create_repo (twice: exist_ok), upload_folder (LFS multipart
    // for model.safetensors, regular for the JSON files), hf_hub_download.
    let env = Env::new();
    let model = model_dir("tiny-gelu");
    let script = r#"
import sys, filecmp
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
api.create_repo("user/py-model", exist_ok=True)
api.create_repo("user/py-model", exist_ok=True)
info = api.upload_folder(folder_path=sys.argv[1], repo_id="user/py-model", commit_message="from huggingface_hub")
for f in ("config.json", "model.safetensors"):
    p = hf_hub_download("user/py-model", f)
    assert filecmp.cmp(p, sys.argv[1] + "/" + f, shallow=False), f
print(info.oid)
"#;
    let oid = env.python(script, &[model.to_str().unwrap()]);
    let head = env.hub.head("models/user/py-model").unwrap();
    assert_eq!(head.oid, oid.trim());
    assert_eq!(head.message, "from huggingface_hub");
    let (bytes, lfs) = &head.files["model.safetensors"];
    assert!(lfs.is_some(), "model.safetensors went through LFS");
    assert_eq!(
        bytes,
        &std::fs::read(model.join("model.safetensors")).unwrap()
    );
    assert!(head.files["config.json"].1.is_none());
}

#[test]
fn push_a_model_and_an_adapter_then_pull_them_back() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    copy_dir(&model_dir("tiny-gelu"), &model);
    let metrics = tmp.path().join("eval");
    // An evaluation for the card's model-index.
    let data = bartleby_tests::root().join("../shared/data/dialogsum");
    ok(&env.run(
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--split",
            "validation",
            "--limit",
            "3",
            "--name",
            "tiny",
            "--out",
            metrics.to_str().unwrap(),
        ],
        None,
    ));
    let url = ok(&env.run(
        &[
            "push",
            "--repo",
            "user/tiny-summarizer",
            "--path",
            model.to_str().unwrap(),
            "--metrics",
            metrics.join("tiny_metrics.json").to_str().unwrap(),
            "--license",
            "mit",
        ],
        Some(TOKEN),
    ));
    assert!(url.contains("/commit/"), "{url}");
    // The folder was not touched; the commit has the card (written for it) and the files.
    assert!(!model.join("README.md").exists());
    let head = env.hub.head("models/user/tiny-summarizer").unwrap();
    let card = String::from_utf8(head.files["README.md"].0.clone()).unwrap();
    assert!(card.starts_with("---\n"), "{card}");
    assert!(card.contains("pipeline_tag: summarization"), "{card}");
    assert!(card.contains("license: \"mit\""), "{card}");
    assert!(card.contains("model-index"), "{card}");
    assert!(card.contains("user/tiny-summarizer"), "{card}");
    assert!(head.files["model.safetensors"].1.is_some());
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert_eq!(
            head.files[f].0,
            std::fs::read(model.join(f)).unwrap(),
            "{f}"
        );
    }
    // Pulled back by the existing download code: the same summaries as the local folder.
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, DIALOGUE).unwrap();
    let local = ok(&env.run(
        &[
            "summarize",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    ));
    let pulled = ok(&env.run(
        &[
            "summarize",
            "--model",
            "user/tiny-summarizer",
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    ));
    assert_eq!(ids(&local), ids(&pulled));
    // ... and by huggingface_hub.
    let same = env.python(
        "import sys, filecmp; from huggingface_hub import hf_hub_download; \
         print(filecmp.cmp(hf_hub_download('user/tiny-summarizer', 'model.safetensors'), sys.argv[1], shallow=False))",
        &[model.join("model.safetensors").to_str().unwrap()],
    );
    assert_eq!(same.trim(), "True");

    // An adapter (with its own README), pulled back with --adapter NS/NAME.
    let adapter = tmp.path().join("adapter");
    copy_dir(&fixtures().join("lora/gelu-qv"), &adapter);
    std::fs::write(
        adapter.join("README.md"),
        "---\nlibrary_name: peft\n---\n# gelu-qv\n",
    )
    .unwrap();
    ok(&env.run(
        &[
            "push",
            "--repo",
            "user/gelu-qv",
            "--path",
            adapter.to_str().unwrap(),
        ],
        Some(TOKEN),
    ));
    let local = ok(&env.run(
        &[
            "summarize",
            "--model",
            model.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    ));
    let pulled = ok(&env.run(
        &[
            "summarize",
            "--model",
            "user/tiny-summarizer",
            "--adapter",
            "user/gelu-qv",
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    ));
    assert_eq!(ids(&local), ids(&pulled));
    let plain = ok(&env.run(
        &[
            "summarize",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    ));
    assert_ne!(
        ids(&plain),
        ids(&pulled),
        "the adapter changes the output (the check can fail)"
    );
}

#[test]
fn an_interrupted_upload_leaves_the_repository_unchanged_and_resumes() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    copy_dir(&model_dir("tiny-gelu"), &model);
    std::fs::write(model.join("README.md"), "# m\n").unwrap();
    // Two LFS files: one small (basic upload), one large (multipart).
    std::fs::write(model.join("extra.bin"), vec![7u8; 1000]).unwrap();
    env.hub.hub.lock().unwrap().fail_lfs_uploads = true;
    let out = env.run(
        &[
            "push",
            "--repo",
            "user/m",
            "--path",
            model.to_str().unwrap(),
        ],
        Some(TOKEN),
    );
    fails(&out, "HTTP 500");
    let head = env.hub.head("models/user/m").unwrap();
    assert_eq!(
        head.files.keys().collect::<Vec<_>>(),
        vec![".gitattributes"],
        "no commit was made"
    );
    env.hub.hub.lock().unwrap().fail_lfs_uploads = false;
    ok(&env.run(
        &[
            "push",
            "--repo",
            "user/m",
            "--path",
            model.to_str().unwrap(),
        ],
        Some(TOKEN),
    ));
    let uploaded = env.hub.hub.lock().unwrap().lfs_uploads.len();
    assert_eq!(uploaded, 2);
    let head = env.hub.head("models/user/m").unwrap();
    assert!(head.files.contains_key("model.safetensors") && head.files.contains_key("extra.bin"));
    // Again: the Hub has every LFS object, so nothing is uploaded twice; a new commit is made.
    ok(&env.run(
        &[
            "push",
            "--repo",
            "user/m",
            "--path",
            model.to_str().unwrap(),
            "--message",
            "again",
        ],
        Some(TOKEN),
    ));
    assert_eq!(env.hub.hub.lock().unwrap().lfs_uploads.len(), uploaded);
    assert_eq!(env.hub.head("models/user/m").unwrap().message, "again");
}

#[test]
fn a_static_space_from_the_web_app() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("dist");
    std::fs::create_dir_all(site.join("model")).unwrap();
    std::fs::write(site.join("index.html"), "<!doctype html><title>x</title>").unwrap();
    std::fs::write(site.join("app_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(
        site.join("model/manifest.json"),
        r#"{"quantization": "q8", "parameters": 123, "source": {"model": "bartleby-small"}}"#,
    )
    .unwrap();
    ok(&env.run(
        &[
            "push",
            "--repo",
            "user/demo",
            "--repo-type",
            "space",
            "--path",
            site.to_str().unwrap(),
        ],
        Some(TOKEN),
    ));
    let hub = env.hub.hub.lock().unwrap();
    let repo = &hub.repos["spaces/user/demo"];
    assert_eq!(repo.sdk.as_deref(), Some("static"));
    let head = repo.commits.last().unwrap();
    let readme = String::from_utf8(head.files["README.md"].0.clone()).unwrap();
    assert!(
        readme.contains("sdk: static") && readme.contains("app_file: index.html"),
        "{readme}"
    );
    assert!(readme.contains("bartleby-small"), "{readme}");
    assert!(
        head.files["app_bg.wasm"].1.is_some(),
        "wasm goes through LFS"
    );
    assert!(head.files.contains_key("model/manifest.json"));
}

#[test]
fn push_faults_are_one_line_errors() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    copy_dir(&model_dir("tiny-gelu"), &model);
    let m = model.to_str().unwrap();
    fails(
        &env.run(&["push", "--repo", "user/x", "--path", m], None),
        "huggingface-cli login",
    );
    fails(
        &env.run(&["push", "--repo", "user/x", "--path", m], Some("hf_wrong")),
        "HTTP 401",
    );
    fails(
        &env.run(
            &["push", "--repo", "forbidden-org/x", "--path", m],
            Some(TOKEN),
        ),
        "HTTP 403",
    );
    fails(
        &env.run(
            &["push", "--repo", "user/x", "--path", m, "--revision", "dev"],
            Some(TOKEN),
        ),
        "HTTP 404",
    );
    fails(
        &env.run(&["push", "--repo", "not a repo", "--path", m], Some(TOKEN)),
        "NAMESPACE/NAME",
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(
        &env.run(
            &[
                "push",
                "--repo",
                "user/x",
                "--path",
                empty.to_str().unwrap(),
            ],
            Some(TOKEN),
        ),
        "nothing to push",
    );
    fails(
        &env.run(
            &["push", "--repo", "user/x", "--path", "/nonexistent"],
            Some(TOKEN),
        ),
        "must be a folder",
    );
    let bad = tmp.path().join("bad_metrics.json");
    std::fs::write(&bad, "{not json").unwrap();
    fails(
        &env.run(
            &[
                "push",
                "--repo",
                "user/x",
                "--path",
                m,
                "--metrics",
                bad.to_str().unwrap(),
            ],
            Some(TOKEN),
        ),
        "bad_metrics.json",
    );
    fails(
        &env.run(
            &[
                "push",
                "--repo",
                "user/site",
                "--repo-type",
                "space",
                "--path",
                m,
            ],
            Some(TOKEN),
        ),
        "index.html",
    );
    // A conflicting commit (409): nothing is committed.
    env.hub.hub.lock().unwrap().conflict_commits = true;
    fails(
        &env.run(
            &["push", "--repo", "user/conflict", "--path", m],
            Some(TOKEN),
        ),
        "HTTP 409",
    );
    assert_eq!(
        env.hub.head("models/user/conflict").unwrap().files.len(),
        1,
        "only .gitattributes"
    );
    env.hub.hub.lock().unwrap().conflict_commits = false;
    // The server is down.
    let down = Command::new(bartleby_bin())
        .args(["push", "--repo", "user/x", "--path", m])
        .env("HF_ENDPOINT", "http://127.0.0.1:1")
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    fails(&down, "cannot reach http://127.0.0.1:1");
    // The token file `huggingface-cli login` writes is used when HF_TOKEN is unset.
    std::fs::write(env.home.path().join("token"), TOKEN).unwrap();
    ok(&env.run(
        &[
            "push",
            "--repo",
            "user/from-token-file",
            "--path",
            m,
            "--license",
            "mit",
        ],
        None,
    ));
}
