//! Helpers shared by the integration tests: fixture paths, loading, the built CLI binary.

pub mod hub_standin;

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// The fixture models that `tools/reference/make_fixtures.py` produced.
pub const MODELS: [&str; 4] = [
    "tiny-gelu",
    "tiny-relu-scaled",
    "tiny-gelunew-sharded",
    "tiny-silu",
];

/// The T5 fixture models (tools/reference/make_t5_fixtures.py).
pub const T5_MODELS: [&str; 3] = ["t5-relu-tied", "t5-gatedgelu-untied", "t5-gatedsilu-f16"];

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn parity(name: &str) -> Value {
    read_json(&fixtures().join("parity").join(format!("{name}.json")))
}

/// Loads a fixture model with the same code the CLI uses.
pub fn load(name: &str, device: &burn::tensor::Device) -> bartleby_core::Summarizer {
    let files = bartleby::model_files::resolve(model_dir(name).to_str().unwrap()).unwrap();
    bartleby::model_files::load(&files, device, Default::default()).unwrap()
}

/// A JSON array of arrays of numbers, each number read by `f`.
fn rows<T>(v: &Value, f: impl Fn(&Value) -> T + Copy) -> Vec<Vec<T>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(f).collect())
        .collect()
}

pub fn i64_rows(v: &Value) -> Vec<Vec<i64>> {
    rows(v, |x| x.as_i64().unwrap())
}

pub fn u32_rows(v: &Value) -> Vec<Vec<u32>> {
    rows(v, |x| x.as_u64().unwrap() as u32)
}

pub fn f32_flat(v: &Value, out: &mut Vec<f32>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| f32_flat(x, out)),
        x => out.push(x.as_f64().unwrap() as f32),
    }
}

/// The `bartleby` binary built next to the test binaries (`cargo build --release --bins` first).
pub fn bartleby_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/bartleby
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(format!("bartleby{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: build it first with `cargo build --release --bins` (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// Runs the built `bartleby` binary with `args` and waits for it.
pub fn bartleby(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bartleby_bin())
        .args(args)
        .output()
        .unwrap()
}

/// Runs `bartleby` with `args` where no file may grow past `kib` KiB (`ulimit -f`, SIGXFSZ
/// ignored): a write past it fails with EFBIG, as a full disk fails with ENOSPC, without root.
#[cfg(unix)]
pub fn bartleby_with_file_limit(kib: u32, args: &[&str]) -> Run {
    std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$@\""))
        .arg("bash")
        .arg(bartleby_bin())
        .args(args)
        .output()
        .unwrap()
        .into()
}

/// What a finished `bartleby` process reported.
pub struct Run {
    pub code: Option<i32>,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Self {
        Run {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Asserts a failed run: exit 1, no panic, a single `error:` line containing every `needle`,
/// and neither `output` nor a `.bartleby-*` temp file left beside it.
pub fn assert_clear_error(run: &Run, output: &Path, needles: &[&str]) {
    assert_eq!(run.code, Some(1), "expected exit 1, stderr: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "panic: {}", run.stderr);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line, got: {}",
        run.stderr
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "error line {:?} lacks {n:?}",
            lines[0]
        );
    }
    assert!(!output.exists(), "a failed run left {}", output.display());
    let leftovers: Vec<_> = std::fs::read_dir(output.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".bartleby-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left behind");
}

/// Two safetensors files hold the same tensors: names, shapes and bytes.
pub fn assert_same_safetensors(ours: &[u8], theirs: &[u8]) {
    let (a, b) = (
        safetensors::SafeTensors::deserialize(ours).unwrap(),
        safetensors::SafeTensors::deserialize(theirs).unwrap(),
    );
    let mut names_a = a.names();
    let mut names_b = b.names();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b);
    for name in names_b {
        let (ta, tb) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
        assert_eq!(ta.shape(), tb.shape(), "{name}");
        assert_eq!(ta.data(), tb.data(), "{name}: bytes differ");
    }
}

/// The wgpu device (Vulkan; lavapipe in CI) when the `bartleby` crate is built with its `wgpu`
/// feature, as `tests/run.sh` does; `None` (and a line saying `test` did not run) otherwise.
pub fn wgpu_device(test: &str) -> Option<burn::tensor::Device> {
    if !bartleby::device::WGPU_BUILT {
        eprintln!("{test}: bartleby built without the wgpu feature; not run");
        return None;
    }
    // One per process: wgpu's device service is initialised once (several tests share it).
    static DEVICE: std::sync::OnceLock<burn::tensor::Device> = std::sync::OnceLock::new();
    Some(
        DEVICE
            .get_or_init(|| {
                bartleby::device::init(bartleby::device::DeviceArg::Wgpu)
                    .expect("wgpu device")
                    .device
            })
            .clone(),
    )
}

/// The Python environment of real components some tests start (an MLflow server) or check with
/// (huggingface_hub's client): `target/test-venv` (tests/run.sh installs tests/requirements.txt
/// into it) or `BARTLEBY_TEST_VENV`.
pub fn test_venv() -> PathBuf {
    let dir = std::env::var("BARTLEBY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target/test-venv"));
    assert!(
        dir.join("bin/mlflow").is_file(),
        "{}: not set up (tests/run.sh does it: python3 -m venv target/test-venv && \
         target/test-venv/bin/pip install -r tests/requirements.txt)",
        dir.display()
    );
    dir
}

/// `../shared/data/dialogsum` as a string (the training data of the CLI tests).
pub fn dialogsum_dir() -> String {
    root()
        .join("../shared/data/dialogsum")
        .to_str()
        .unwrap()
        .to_string()
}
