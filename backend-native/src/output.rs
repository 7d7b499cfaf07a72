//! Writing results atomically: a temp file beside the target, renamed into place on success,
//! so a failed run never leaves a half-written output. Also the checks on output folders and
//! run names that commands make before any work.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where results go: stdout, a regular file (written atomically: a temp file beside it, renamed
/// into place — through symlinks, beside their target, keeping an existing file's permissions),
/// or a device, FIFO or socket (written in place as a stream: never replaced by a file).
pub enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Stream {
        file: std::io::BufWriter<std::fs::File>,
        path: PathBuf,
    },
    File {
        tmp: tempfile::NamedTempFile,
        /// Where the file goes (symlinks resolved).
        path: PathBuf,
        /// The replaced file's permissions (none: a new file, 0644).
        permissions: Option<std::fs::Permissions>,
    },
}

/// `path` with its symlinks followed to what they name (which need not exist yet).
pub fn resolve_symlinks(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)
                    .with_context(|| format!("{}: cannot read the symlink", path.display()))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!("{}: too many levels of symlinks", path.display())
}

impl Sink {
    pub fn open(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Self::Stdout(std::io::BufWriter::new(std::io::stdout()))),
            Some(p) if p.as_os_str() == "-" => {
                Ok(Self::Stdout(std::io::BufWriter::new(std::io::stdout())))
            }
            Some(p) => {
                let target = resolve_symlinks(p)?;
                let mut permissions = None;
                match std::fs::metadata(&target) {
                    Ok(m) if m.is_dir() => bail!("{}: is a directory", p.display()),
                    Ok(m) if !m.is_file() => {
                        // /dev/null, a FIFO, a terminal: write to it, never replace it.
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&target)
                            .with_context(|| format!("{}: cannot open for writing", p.display()))?;
                        return Ok(Self::Stream {
                            file: std::io::BufWriter::new(file),
                            path: p.to_path_buf(),
                        });
                    }
                    Ok(m) => permissions = Some(m.permissions()),
                    Err(_) => {}
                }
                let dir = match target.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                let tmp = tempfile::Builder::new()
                    .prefix(".bartleby-")
                    .tempfile_in(dir)
                    .with_context(|| format!("{}: cannot create output file", p.display()))?;
                crate::cleanup::register(tmp.path());
                Ok(Self::File {
                    tmp,
                    path: target,
                    permissions,
                })
            }
        }
    }

    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let res = match self {
            Self::Stdout(w) => writeln!(w, "{line}"),
            Self::Stream { file, .. } => writeln!(file, "{line}"),
            Self::File { tmp, .. } => writeln!(tmp, "{line}"),
        };
        res.with_context(|| format!("{}: write failed", self.name()))
    }

    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let res = match self {
            Self::Stdout(w) => w.write_all(bytes),
            Self::Stream { file, .. } => file.write_all(bytes),
            Self::File { tmp, .. } => tmp.write_all(bytes),
        };
        res.with_context(|| format!("{}: write failed", self.name()))
    }

    fn name(&self) -> String {
        match self {
            Self::Stdout(_) => "stdout".into(),
            Self::Stream { path, .. } | Self::File { path, .. } => path.display().to_string(),
        }
    }

    /// Flushes and, for a file, renames it into place.
    pub fn finish(self) -> Result<()> {
        match self {
            Self::Stdout(mut w) => w.flush().context("stdout: write failed"),
            Self::Stream { mut file, path } => file
                .flush()
                .with_context(|| format!("{}: write failed", path.display())),
            Self::File {
                mut tmp,
                path,
                permissions,
            } => {
                // NamedTempFile is created 0600: a replaced file keeps its permissions, a new
                // one gets the usual 0644.
                let permissions = permissions.unwrap_or_else(|| {
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::Permissions::from_mode(0o644)
                    }
                    #[cfg(not(unix))]
                    {
                        tmp.as_file().metadata().map(|m| m.permissions()).unwrap()
                    }
                });
                let _ = tmp.as_file().set_permissions(permissions);
                tmp.flush()
                    .with_context(|| format!("{}: write failed", path.display()))?;
                tmp.as_file()
                    .sync_all()
                    .with_context(|| format!("{}: write failed", path.display()))?;
                let tmp_path = tmp.path().to_path_buf();
                let res = tmp.persist(&path).map(|_| ());
                crate::cleanup::unregister(&tmp_path);
                res.with_context(|| format!("{}: cannot move output into place", path.display()))
            }
        }
    }
}

/// Refuses an `output` that is the `input` file itself (summaries written over their source).
pub fn check_not_input(output: Option<&Path>, input: &Path, input_flag: &str) -> Result<()> {
    let Some(output) = output.filter(|o| o.as_os_str() != "-") else {
        return Ok(());
    };
    if input.as_os_str() == "-" {
        return Ok(());
    }
    if same_file(output, input) {
        bail!(
            "{}: is the {input_flag} file; write the output elsewhere",
            output.display()
        );
    }
    Ok(())
}

/// Whether two paths name one existing file (device and inode; symlinks followed).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino() && x.is_file()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok(),
        _ => false,
    }
}

/// Checks an output directory before any work: it must not exist unless `force`, and `force`
/// replaces only a directory (never a file).
pub fn check_out_dir(output: &Path, force: bool) -> Result<()> {
    let name = output.display();
    match std::fs::symlink_metadata(output) {
        Err(_) => Ok(()),
        Ok(m) if !force => {
            let what = if m.is_dir() {
                "already exists"
            } else {
                "exists (a file)"
            };
            bail!("{name}: {what} (use --force to replace a directory)")
        }
        Ok(m) if !m.is_dir() => {
            bail!("{name}: is not a directory; --force replaces only a directory it wrote")
        }
        Ok(_) => Ok(()),
    }
}

/// Creates the directory `output` atomically: `fill` writes into a temp directory beside it,
/// which is renamed into place only when `fill` succeeds. An existing `output` is an error
/// unless `force`, in which case it is replaced (after the new one is complete).
pub fn write_dir(output: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = output.display();
    check_out_dir(output, force)?;
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
    crate::cleanup::register(tmp.path());
    if let Err(e) = fill(tmp.path()) {
        crate::cleanup::unregister(tmp.path());
        return Err(e);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755));
    }
    let tmp = tmp.keep();
    recover_dir(output)?;
    let old = output.exists().then(|| old_path(output));
    if let Some(old) = &old {
        std::fs::rename(output, old).with_context(|| format!("{name}: cannot replace"))?;
    }
    if let Err(e) = std::fs::rename(&tmp, output) {
        let _ = std::fs::remove_dir_all(&tmp);
        crate::cleanup::unregister(&tmp);
        return Err(e).with_context(|| format!("{name}: cannot move output into place"));
    }
    crate::cleanup::unregister(&tmp);
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("{}: cannot remove the replaced output", old.display()))?;
    }
    Ok(())
}

/// Where [`write_dir`] moves the directory it replaces until the new one is in place.
fn old_path(output: &Path) -> PathBuf {
    let parent = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    parent.join(format!(
        ".bartleby-old-{}",
        output.file_name().unwrap_or_default().to_string_lossy()
    ))
}

/// Repairs what a process killed inside [`write_dir`]'s replacement left: the replaced directory
/// moved aside while the new one was not yet in place is moved back; one left beside a complete
/// new directory is removed.
pub fn recover_dir(output: &Path) -> Result<()> {
    let old = old_path(output);
    if !old.exists() {
        return Ok(());
    }
    if output.exists() {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("{}: cannot remove a stale copy", old.display()))
    } else {
        tracing::warn!(
            "{}: restoring it from an interrupted replacement",
            output.display()
        );
        std::fs::rename(&old, output).with_context(|| {
            format!(
                "{}: cannot restore it from {}",
                output.display(),
                old.display()
            )
        })
    }
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

/// An output folder made by [`prepare_out_dir`]: the folders it created are removed again when
/// it is dropped while they are still empty (a run that failed before writing leaves nothing).
#[must_use = "hold it until the outputs are written"]
pub struct OutDir {
    created: Vec<PathBuf>,
}

impl Drop for OutDir {
    fn drop(&mut self) {
        // Deepest first; remove_dir fails (and so keeps) any folder that got files.
        for d in &self.created {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
        }
    }
}

/// Creates the output folder and checks that files can be created in it, before any work.
pub fn prepare_out_dir(dir: &Path) -> Result<OutDir> {
    let name = dir.display();
    let mut created = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        created.push(p.to_path_buf());
        d = p.parent();
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{name}: cannot create output folder"))?;
    let out = OutDir { created };
    if !dir.is_dir() {
        bail!("{name}: output folder is not a folder");
    }
    tempfile::Builder::new()
        .prefix(".bartleby-")
        .tempfile_in(dir)
        .with_context(|| format!("{name}: output folder is not writable"))?;
    Ok(out)
}

/// Writes every `(file name, contents)` into `dir` through [`Sink`]: all contents go to
/// temporary files first and are renamed into place only once all were written, so a failure
/// leaves no partial output. Returns the paths written.
pub fn write_atomically(dir: &Path, files: Vec<(String, Vec<u8>)>) -> Result<Vec<PathBuf>> {
    let mut staged = Vec::with_capacity(files.len());
    for (file, bytes) in &files {
        let path = dir.join(file);
        let mut sink = Sink::open(Some(&path))?;
        sink.write_bytes(bytes)?;
        staged.push((path, sink));
    }
    staged
        .into_iter()
        .map(|(path, sink)| sink.finish().map(|()| path))
        .collect()
}
