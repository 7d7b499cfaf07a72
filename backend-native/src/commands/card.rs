//! `bartleby card`: writes [`crate::model_card`]'s card to README.md.

use crate::model_card::{self, CardSource};
use crate::output;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CardArgs {
    #[command(flatten)]
    pub source: CardSource,
    /// Where to write (default: README.md in the adapter's or the model's directory).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Replace an existing --output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: CardArgs) -> Result<()> {
    let src = &args.source;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| src.adapter.as_ref().unwrap_or(&src.model).join("README.md"));
    if output.exists() && !args.force {
        bail!(
            "{}: already exists (use --force to replace it)",
            output.display()
        );
    }
    let card = model_card::build(src)?;
    output::write_file_atomically(&output, card.as_bytes())?;
    println!("wrote {}", output.display());
    Ok(())
}
