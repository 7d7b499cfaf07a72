//! Writing results atomically: a temp file beside the target, renamed into place on success,
//! so a failed run never leaves a half-written output. Also the checks on output folders and
//! run names that commands make before any work.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where results go: a file (atomic) or stdout.
pub enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File {
        tmp: tempfile::NamedTempFile,
        path: std::path::PathBuf,
    },
}

impl Sink {
    pub fn open(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Self::Stdout(std::io::BufWriter::new(std::io::stdout()))),
            Some(p) if p.as_os_str() == "-" => {
                Ok(Self::Stdout(std::io::BufWriter::new(std::io::stdout())))
            }
            Some(p) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                let tmp = tempfile::Builder::new()
                    .prefix(".bartleby-")
                    .tempfile_in(dir)
                    .with_context(|| format!("{}: cannot create output file", p.display()))?;
                Ok(Self::File {
                    tmp,
                    path: p.to_path_buf(),
                })
            }
        }
    }

    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let res = match self {
            Self::Stdout(w) => writeln!(w, "{line}"),
            Self::File { tmp, .. } => writeln!(tmp, "{line}"),
        };
        res.with_context(|| format!("{}: write failed", self.name()))
    }

    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let res = match self {
            Self::Stdout(w) => w.write_all(bytes),
            Self::File { tmp, .. } => tmp.write_all(bytes),
        };
        res.with_context(|| format!("{}: write failed", self.name()))
    }

    fn name(&self) -> String {
        match self {
            Self::Stdout(_) => "stdout".into(),
            Self::File { path, .. } => path.display().to_string(),
        }
    }

    /// Flushes and, for a file, renames it into place.
    pub fn finish(self) -> Result<()> {
        match self {
            Self::Stdout(mut w) => w.flush().context("stdout: write failed"),
            Self::File { mut tmp, path } => {
                // NamedTempFile is created 0600; a finished output gets the usual 0644.
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = tmp
                        .as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o644));
                }
                tmp.flush()
                    .with_context(|| format!("{}: write failed", path.display()))?;
                tmp.as_file()
                    .sync_all()
                    .with_context(|| format!("{}: write failed", path.display()))?;
                tmp.persist(&path).with_context(|| {
                    format!("{}: cannot move output into place", path.display())
                })?;
                Ok(())
            }
        }
    }
}

/// Creates the directory `output` atomically: `fill` writes into a temp directory beside it,
/// which is renamed into place only when `fill` succeeds. An existing `output` is an error
/// unless `force`, in which case it is replaced (after the new one is complete).
pub fn write_dir(output: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = output.display();
    if output.exists() && !force {
        anyhow::bail!("{name}: already exists (use --force to replace it)");
    }
    let parent = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("{}: cannot create directory", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".bartleby-")
        .tempdir_in(parent)
        .with_context(|| format!("{name}: cannot create output directory"))?;
    fill(tmp.path())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755));
    }
    let tmp = tmp.keep();
    let old = output.exists().then(|| {
        parent.join(format!(
            ".bartleby-old-{}",
            output.file_name().unwrap_or_default().to_string_lossy()
        ))
    });
    if let Some(old) = &old {
        std::fs::rename(output, old).with_context(|| format!("{name}: cannot replace"))?;
    }
    if let Err(e) = std::fs::rename(&tmp, output) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("{name}: cannot move output into place"));
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("{}: cannot remove the replaced output", old.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to `dir/file` (inside a directory that [`write_dir`] renames into place).
pub fn write_file(dir: &Path, file: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, bytes).with_context(|| format!("{file}: write failed"))
}

/// Writes `bytes` to `path` atomically (a temp file beside it, renamed into place).
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut sink = Sink::open(Some(path))?;
    sink.write_bytes(bytes)?;
    sink.finish()
}

/// Checks a run name used as a file-name prefix.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("--name {name:?}: use letters, digits, '-', '_' or '.' (not first), it prefixes file names");
    }
    Ok(())
}

/// Creates the output folder and checks that files can be created in it, before any work.
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    let name = dir.display();
    std::fs::create_dir_all(dir).with_context(|| format!("{name}: cannot create output folder"))?;
    if !dir.is_dir() {
        bail!("{name}: output folder is not a folder");
    }
    tempfile::Builder::new()
        .prefix(".bartleby-")
        .tempfile_in(dir)
        .with_context(|| format!("{name}: output folder is not writable"))?;
    Ok(())
}

/// Writes every `(file name, contents)` into `dir` through [`Sink`]: all contents go to
/// temporary files first and are renamed into place only once all were written, so a failure
/// leaves no partial output. Returns the paths written.
pub fn write_atomically(dir: &Path, files: Vec<(String, Vec<u8>)>) -> Result<Vec<PathBuf>> {
    let mut staged = Vec::with_capacity(files.len());
    for (file, bytes) in &files {
        let path = dir.join(file);
        let mut sink = Sink::open(Some(&path))?;
        let Sink::File { tmp, .. } = &mut sink else {
            unreachable!("a file path opens a file sink");
        };
        tmp.write_all(bytes)
            .with_context(|| format!("{}: write failed", path.display()))?;
        staged.push((path, sink));
    }
    staged
        .into_iter()
        .map(|(path, sink)| sink.finish().map(|()| path))
        .collect()
}
