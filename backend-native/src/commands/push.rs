//! `bartleby push`: a folder to the Hugging Face Hub in one commit ([`crate::hub_upload`]): a model
//! (with the model card written when the folder has no README.md), an adapter, a dataset, or the
//! static web app as a Space.

use crate::hub_upload::{self, Client, RepoType, Upload};
use crate::model_card::{self, CardSource};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The repository: NAMESPACE/NAME (created when missing).
    #[arg(long)]
    pub repo: String,
    /// The folder to upload (a model, an adapter, a dataset, or the built web app for a Space).
    #[arg(long)]
    pub path: PathBuf,
    #[arg(long, value_enum, default_value_t = RepoType::Model)]
    pub repo_type: RepoType,
    /// Create the repository private (an existing one keeps its visibility).
    #[arg(long)]
    pub private: bool,
    /// The commit message (default: "Upload NAME with bartleby push").
    #[arg(long)]
    pub message: Option<String>,
    /// `NAME_metrics.json` files of `bartleby eval` for the model card (when the folder has no
    /// README.md).
    #[arg(long = "metrics")]
    pub metrics: Vec<PathBuf>,
    /// The model card's license when one is written (see `bartleby card --license`).
    #[arg(long)]
    pub license: Option<String>,
    #[arg(long, default_value = "main")]
    pub revision: String,
}

pub fn run(args: PushArgs) -> Result<()> {
    let dir = &args.path;
    if !dir.is_dir() {
        bail!("{}: --path must be a folder", dir.display());
    }
    for m in &args.metrics {
        let bytes = std::fs::read(m).with_context(|| format!("{}: cannot read", m.display()))?;
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .with_context(|| format!("{}: not a metrics file (invalid JSON)", m.display()))?;
    }
    let token = hub_upload::token()?;
    let client = Client::new(args.repo_type, &args.repo, token)?;
    let mut files = hub_upload::folder_files(dir)?;
    if files.is_empty() {
        bail!("{}: nothing to push (no files)", dir.display());
    }
    // README.md: the folder's own, else one written for it (into the commit, not the folder).
    let readme_dir = tempfile::tempdir()?;
    if !files.iter().any(|f| f.path_in_repo == "README.md") {
        let text = match args.repo_type {
            RepoType::Model => Some(model_card_for(&args, dir)?),
            RepoType::Space => Some(space_readme(&args.repo, dir)?),
            RepoType::Dataset => None,
        };
        if let Some(text) = text {
            let local = readme_dir.path().join("README.md");
            std::fs::write(&local, &text)?;
            files.push(Upload {
                path_in_repo: "README.md".into(),
                size: text.len() as u64,
                local,
            });
            files.sort_by(|a, b| a.path_in_repo.cmp(&b.path_in_repo));
        }
    } else if !args.metrics.is_empty() {
        eprintln!(
            "warning: {} has a README.md: --metrics are not used (write the card with `bartleby card`)",
            dir.display()
        );
    }
    if args.repo_type == RepoType::Space && !dir.join("index.html").is_file() {
        bail!(
            "{}: a static Space needs index.html (push the built web app: trunk build --release, then --path dist)",
            dir.display()
        );
    }
    let created = client.create_repo(args.private)?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "folder".into());
    let message = args
        .message
        .clone()
        .unwrap_or_else(|| format!("Upload {name} with bartleby push"));
    let total: u64 = files.iter().map(|f| f.size).sum();
    eprintln!(
        "{} {} {}: {} files, {:.1} MB",
        if created { "created" } else { "pushing to" },
        args.repo_type_name(),
        args.repo,
        files.len(),
        total as f64 / 1e6
    );
    let commit = client.upload(&files, &args.revision, &message)?;
    println!("{commit}");
    Ok(())
}

impl PushArgs {
    fn repo_type_name(&self) -> &'static str {
        match self.repo_type {
            RepoType::Model => "model",
            RepoType::Dataset => "dataset",
            RepoType::Space => "Space",
        }
    }
}

/// The card of a model folder, or of an adapter whose base is a local folder.
fn model_card_for(args: &PushArgs, dir: &Path) -> Result<String> {
    let mut source = CardSource {
        model: dir.to_path_buf(),
        adapter: None,
        metrics: args.metrics.clone(),
        train_run: None,
        name: None,
        license: args.license.clone(),
        base_model: None,
        repo: Some(args.repo.clone()),
    };
    if dir.join("config.json").is_file() {
        return model_card::build(&source);
    }
    if dir.join("adapter_config.json").is_file() {
        let cfg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("adapter_config.json"))
                .with_context(|| format!("{}: cannot read adapter_config.json", dir.display()))?,
        )
        .with_context(|| format!("{}: adapter_config.json is not JSON", dir.display()))?;
        let base = cfg["base_model_name_or_path"].as_str().unwrap_or("");
        if Path::new(base).join("config.json").is_file() {
            source.model = PathBuf::from(base);
            source.adapter = Some(dir.to_path_buf());
            return model_card::build(&source);
        }
        bail!(
            "{}: no README.md, and the adapter's base ({base:?}) is not a local folder to write its card from: \
             run `bartleby card --model BASE_DIR --adapter {}` first",
            dir.display(),
            dir.display()
        );
    }
    bail!(
        "{}: no README.md, config.json or adapter_config.json: nothing to write a model card from (add a README.md)",
        dir.display()
    )
}

/// The README of a static Space: its metadata (`sdk: static`) and what the app is.
fn space_readme(repo: &str, dir: &Path) -> Result<String> {
    let title = repo.split('/').nth(1).unwrap_or(repo);
    let model = dir.join("model/manifest.json");
    let model_line = match std::fs::read(&model)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    {
        Some(m) => format!(
            "It opens with `{}` ({} bundle, {} parameters) from `model/`.",
            m.pointer("/source/model")
                .and_then(|v| v.as_str())
                .unwrap_or("the model"),
            m["quantization"].as_str().unwrap_or("?"),
            m["parameters"].as_u64().unwrap_or(0)
        ),
        None => {
            eprintln!(
                "warning: {}: no model/manifest.json: the Space opens without a model (export one with `bartleby export --output {}/model`)",
                dir.display(),
                dir.display()
            );
            "It has no bundle under `model/`: open a bundle folder from the page.".to_string()
        }
    };
    Ok(format!(
        "---\ntitle: {title}\nemoji: 📝\ncolorFrom: gray\ncolorTo: blue\nsdk: static\napp_file: index.html\npinned: false\n---\n\n\
         # {title}\n\nDialogue summarization that runs entirely in the visitor's browser (WebGPU, or the CPU through \
         wasm): nothing typed into the page leaves their machine. Built with Bartleby's web app \
         (`trunk build --release`) and pushed with `bartleby push --repo-type space`. {model_line}\n"
    ))
}
