//! The `bartleby` command line: a thin shell over `bartleby-core`. This file only dispatches;
//! each subcommand is a module of [`crate::commands`].

use crate::commands::{
    benchmark, card, compare, data, eval, export, merge, plan, push, score, serve, summarize, train,
};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "bartleby",
    version,
    about = "Fine-tune, evaluate, rank and run BART and T5 summarizers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize dialogues (JSONL, CSV or plain text) with a BART or T5 checkpoint.
    Summarize(summarize::SummarizeArgs),
    /// Score predictions against references: ROUGE (rouge_score 0.1.2), BLEU (sacrebleu 2.6.0),
    /// BERTScore (bert_score 0.3.13).
    Score(score::ScoreArgs),
    /// Merge a LoRA adapter into its base model: a standalone transformers checkpoint, checked
    /// to give the same logits and generations as base + adapter.
    Merge(merge::MergeArgs),
    /// Inspect dialogue summarization data (split sizes, lengths, the first example).
    Data(data::DataArgs),
    /// Fine-tune with LoRA (or fully): PEFT-format adapter, validation, resumable checkpoints.
    Train(train::TrainArgs),
    /// Evaluate a model on a dataset split: predictions, ROUGE/BLEU with bootstrap intervals,
    /// failure analysis and charts.
    Eval(eval::EvalArgs),
    /// Compare `eval` runs side by side: deltas against the first and their significance.
    Compare(compare::CompareArgs),
    /// Rank candidate models as the pipeline does: each summarizes the same seeded sample, is
    /// scored and timed; a composite of ROUGE-L, throughput and efficiency ranks them.
    Benchmark(benchmark::BenchmarkArgs),
    /// Plan the fine-tuning of a benchmark's winners: method, settings, lengths, estimated
    /// memory and step time, and a `train --config` file per model.
    Plan(plan::PlanArgs),
    /// Export a web bundle (f32/f16/q8/q4 weights, tokenizer, manifest.json with sha256) for the
    /// browser app; `summarize --model BUNDLE_DIR` runs it natively.
    Export(export::ExportArgs),
    /// Write a model card (README.md with the Hub's YAML metadata and model-index) from a model,
    /// its adapter, its training run and its evaluations.
    Card(card::CardArgs),
    /// Serve the model over HTTP: the Inference API summarization task, /generate and
    /// /generate_stream (SSE), batching concurrent requests; health, info, Prometheus metrics.
    Serve(serve::ServeArgs),
    /// Upload a folder (model, adapter, dataset, or the web app as a static Space) to the
    /// Hugging Face Hub in one commit, creating the repository and the model card when missing.
    Push(push::PushArgs),
}

/// clap's errors as one line (help and version print as clap prints them); exit code 2.
fn clap_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    // A negative number after a flag that takes a count: clap sees an unknown flag "-1".
    if err.kind() == ErrorKind::UnknownArgument {
        if let Some(clap::error::ContextValue::String(arg)) =
            err.get(clap::error::ContextKind::InvalidArg)
        {
            let args: Vec<String> = std::env::args().collect();
            let at = args.iter().position(|a| a == arg);
            let is_number = arg.len() > 1 && arg[1..].parse::<f64>().is_ok();
            if let (true, Some(i)) = (is_number, at.filter(|&i| i > 0)) {
                let flag = &args[i - 1];
                if flag.starts_with("--") {
                    eprintln!(
                        "error: invalid value '{arg}' for '{flag}': expected a number of 0 or more"
                    );
                    return ExitCode::from(2);
                }
            }
        }
    }
    // The message up to the first blank line (before clap's tips and usage), joined.
    let text = err.render().to_string();
    let line: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    eprintln!("{}", line.join(" "));
    ExitCode::from(2)
}

/// Parses arguments, runs the command, prints errors as one line; exit code 1 on failure.
pub fn main() -> ExitCode {
    let cli = Cli::try_parse();
    let serving = matches!(
        &cli,
        Ok(Cli {
            command: Command::Serve(_)
        })
    );
    // The server logs a line per request (and with time stamps) unless BARTLEBY_LOG says otherwise.
    let default_filter = if serving {
        "warn,bartleby::server=info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BARTLEBY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if serving {
        subscriber.init();
    } else {
        subscriber.without_time().init();
        // The server handles SIGTERM / SIGINT itself (graceful shutdown).
        crate::cleanup::install();
    }
    let cli = match cli {
        Ok(cli) => cli,
        Err(err) => return clap_error(err),
    };
    let result = match cli.command {
        Command::Summarize(args) => summarize::run(args),
        Command::Score(args) => score::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Data(args) => data::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Benchmark(args) => benchmark::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Export(args) => export::run(args),
        Command::Card(args) => card::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Push(args) => push::run(args),
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
