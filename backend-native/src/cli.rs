//! The `bartleby` command line: a thin shell over `bartleby-core`.

use crate::{compare_cmd, eval_cmd, score_cmd, summarize_cmd};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "bartleby",
    version,
    about = "Fine-tune, evaluate and run BART summarizers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize dialogues (JSONL, CSV or plain text) with a BART checkpoint.
    Summarize(summarize_cmd::SummarizeArgs),
    /// Score predictions against references: ROUGE (rouge_score 0.1.2) and BLEU (sacrebleu 2.6.0).
    Score(score_cmd::ScoreArgs),
    /// Evaluate a model on a dataset split: predictions, ROUGE/BLEU with bootstrap intervals,
    /// failure analysis and charts.
    Eval(eval_cmd::EvalArgs),
    /// Compare `eval` runs side by side: deltas against the first and their significance.
    Compare(compare_cmd::CompareArgs),
}

/// Parses arguments, runs the command, prints errors as one line; exit code 1 on failure.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BARTLEBY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .without_time()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Summarize(args) => summarize_cmd::run(args),
        Command::Score(args) => score_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Compare(args) => compare_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the chain of contexts, outermost first.
            let msg: Vec<String> = err.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
