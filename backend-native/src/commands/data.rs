//! `bartleby data inspect`: what the seed notebook's "Dataset Overview" shows — split sizes,
//! fields, length statistics in characters and tokens, how many inputs exceed the model window,
//! and the first example.

use crate::dataset::{self, Row};
use crate::model_files;
use anyhow::{bail, Result};
use bartleby_core::BartTokenizer;
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Split sizes, length statistics (characters, tokens) and the first example.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Data: a file, a folder of split files or a hub dataset id; repeat to mix sources.
    #[arg(long, required = true)]
    pub data: Vec<String>,
    /// Splits to inspect (a missing split of a folder or hub dataset is reported, not fatal).
    #[arg(long, value_delimiter = ',', default_value = "train,validation")]
    pub splits: Vec<String>,
    /// Model (or tokenizer) directory or hub id: adds token statistics.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Input window for the "longer than the window" count.
    #[arg(long, default_value_t = 768)]
    pub max_source_tokens: usize,
    #[arg(long, default_value_t = 192)]
    pub max_target_tokens: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Inspect(a) => inspect(a),
    }
}

/// Percentile by linear interpolation (numpy's default), of sorted values.
fn percentile(sorted: &[usize], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * (pos - lo as f64)
}

fn stats(mut values: Vec<usize>) -> serde_json::Value {
    values.sort_unstable();
    let n = values.len().max(1) as f64;
    json!({
        "mean": values.iter().sum::<usize>() as f64 / n,
        "min": values.first().copied().unwrap_or(0),
        "p50": percentile(&values, 50.0),
        "p90": percentile(&values, 90.0),
        "p95": percentile(&values, 95.0),
        "p99": percentile(&values, 99.0),
        "max": values.last().copied().unwrap_or(0),
    })
}

fn split_report(
    rows: &[Row],
    tokenizer: Option<&BartTokenizer>,
    args: &InspectArgs,
) -> Result<serde_json::Value> {
    let chars = |f: fn(&Row) -> &str| rows.iter().map(|r| f(r).chars().count()).collect();
    let mut report = json!({
        "rows": rows.len(),
        "fields": ["id", "dialogue", "summary"],
        "chars": {
            "dialogue": stats(chars(|r| &r.dialogue)),
            "summary": stats(chars(|r| &r.summary)),
        },
        "first_example": { "id": rows[0].id, "dialogue": excerpt(&rows[0].dialogue, 2000), "summary": excerpt(&rows[0].summary, 1000) },
    });
    if let Some(tok) = tokenizer {
        let count = |text: &str| tok.encode(text, None).map(|ids| ids.len());
        let dialogue: Vec<usize> = rows
            .iter()
            .map(|r| count(&r.dialogue))
            .collect::<Result<_, _>>()?;
        let summary: Vec<usize> = rows
            .iter()
            .map(|r| count(&r.summary))
            .collect::<Result<_, _>>()?;
        let over = |v: &[usize], max: usize| v.iter().filter(|&&n| n > max).count();
        report["tokens"] = json!({
            "dialogue": stats(dialogue.clone()),
            "summary": stats(summary.clone()),
            "dialogue_over_window": over(&dialogue, args.max_source_tokens),
            "summary_over_window": over(&summary, args.max_target_tokens),
            "max_source_tokens": args.max_source_tokens,
            "max_target_tokens": args.max_target_tokens,
        });
    }
    Ok(report)
}

fn inspect(args: InspectArgs) -> Result<()> {
    let tokenizer = match &args.tokenizer {
        Some(spec) => {
            let files = model_files::resolve(spec)?;
            Some(model_files::load_tokenizer(&files)?)
        }
        None => None,
    };
    let mut report = serde_json::Map::new();
    for split in &args.splits {
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for spec in &args.data {
            match dataset::load_rows(spec, split) {
                Ok(r) => rows.extend(r),
                Err(e) if args.data.len() > 1 || args.splits.len() > 1 => {
                    missing.push(format!("{e:#}"))
                }
                Err(e) => return Err(e),
            }
        }
        let entry = if rows.is_empty() {
            json!({ "rows": 0, "errors": missing })
        } else {
            let mut r = split_report(&rows, tokenizer.as_ref(), &args)?;
            if !missing.is_empty() {
                r["errors"] = json!(missing);
            }
            r
        };
        report.insert(split.clone(), entry);
    }
    let report = serde_json::Value::Object(report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    // Nothing could be read at all: a failed run, whatever was printed.
    if report
        .as_object()
        .into_iter()
        .flatten()
        .all(|(_, r)| r["rows"] == 0)
    {
        let first = report
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, r)| r["errors"].as_array().cloned().unwrap_or_default())
            .find_map(|e| e.as_str().map(str::to_string))
            .unwrap_or_else(|| "no rows".into());
        bail!("no split could be read ({first})");
    }
    Ok(())
}

/// At most `max` characters of `text` (cut at a character boundary), with how much was left out.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!(
            "{} … [{} more characters]",
            &text[..cut],
            text[cut..].chars().count()
        ),
    }
}

fn print_text(report: &serde_json::Value) {
    let line = |name: &str, s: &serde_json::Value| {
        println!(
            "    {name:<9} mean {:>8.1}  min {:>6}  p50 {:>7.1}  p90 {:>7.1}  p95 {:>7.1}  p99 {:>7.1}  max {:>7}",
            s["mean"].as_f64().unwrap_or(0.0),
            s["min"],
            s["p50"].as_f64().unwrap_or(0.0),
            s["p90"].as_f64().unwrap_or(0.0),
            s["p95"].as_f64().unwrap_or(0.0),
            s["p99"].as_f64().unwrap_or(0.0),
            s["max"]
        )
    };
    for (split, r) in report.as_object().into_iter().flatten() {
        println!("{split}: {} rows", r["rows"]);
        for e in r["errors"].as_array().into_iter().flatten() {
            println!("  (skipped: {})", e.as_str().unwrap_or_default());
        }
        if r["rows"] == 0 {
            continue;
        }
        println!("  fields: id, dialogue, summary");
        println!("  characters:");
        line("dialogue", &r["chars"]["dialogue"]);
        line("summary", &r["chars"]["summary"]);
        if let Some(t) = r.get("tokens") {
            println!("  tokens:");
            line("dialogue", &t["dialogue"]);
            line("summary", &t["summary"]);
            println!(
                "  longer than the window: {} dialogues > {} tokens, {} summaries > {} tokens",
                t["dialogue_over_window"],
                t["max_source_tokens"],
                t["summary_over_window"],
                t["max_target_tokens"]
            );
        }
        let ex = &r["first_example"];
        println!("  first example (id {}):", ex["id"]);
        println!(
            "    dialogue: {}",
            excerpt(ex["dialogue"].as_str().unwrap_or_default(), 2000)
                .replace('\n', "\n              ")
        );
        println!(
            "    summary:  {}",
            excerpt(ex["summary"].as_str().unwrap_or_default(), 1000)
        );
    }
}
