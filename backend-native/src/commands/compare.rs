//! `bartleby compare`: runs of `bartleby eval` side by side (e.g. baseline vs LoRA vs merged),
//! with deltas against the first run and whether each delta exceeds the bootstrap intervals.
//! Reads [`EvalReport`]s and writes a [`CompareReport`] (bartleby-core `metrics::report`).

use crate::output::{check_name, prepare_out_dir, write_atomically};
use crate::plots::{self, Series};
use anyhow::{bail, Context, Result};
use bartleby_core::metrics::report::{
    self, CompareReport, CompareRun, CorpusScores, Delta, EvalReport, Interval, COMPARE_RULE,
    ROUGE_KEYS, ROUGE_LABELS,
};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_long_help = COMPARE_RULE)]
pub struct CompareArgs {
    /// Two or more NAME_metrics.json files written by `bartleby eval`; the first is the baseline.
    pub files: Vec<PathBuf>,
    /// Output folder for NAME.json, NAME.md and NAME.png (created if missing).
    #[arg(long, default_value = "metrics")]
    pub out: PathBuf,
    /// Prefix of the output files.
    #[arg(long, default_value = "compare")]
    pub name: String,
}

/// The numbers of one `eval` run.
#[derive(Debug, Clone)]
pub struct RunScores {
    pub name: String,
    pub file: String,
    pub model: String,
    pub data: String,
    pub split: String,
    pub n: u64,
    /// ROUGE F-measure intervals (0-1) and BLEU; no BERTScore.
    pub scores: CorpusScores,
}

/// Reads the fields of a `NAME_metrics.json` that `compare` uses; errors name file and field.
pub fn read_run(path: &Path) -> Result<RunScores> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("{file}: cannot read"))?;
    let doc: EvalReport = report::from_json(&bytes, &file, "a NAME_metrics.json of bartleby eval")
        .map_err(anyhow::Error::msg)?;
    let scores = CorpusScores {
        bertscore: None,
        ..doc.corpus
    };
    if scores.rouge().iter().all(Option::is_none) && scores.bleu.is_none() {
        bail!("{file}: field \"corpus\" has no ROUGE or BLEU score");
    }
    Ok(RunScores {
        name: doc.name,
        model: doc.model,
        data: doc.data,
        split: doc.split,
        file,
        n: doc.n,
        scores,
    })
}

/// `run - base` for ROUGE type `k`, significant when the intervals do not overlap.
pub fn rouge_delta(base: &RunScores, run: &RunScores, k: usize) -> Option<Delta> {
    let (b, r) = (base.scores.rouge()[k]?, run.scores.rouge()[k]?);
    Some(Delta {
        delta: r.mid - b.mid,
        significant: Some(r.low > b.high || r.high < b.low),
    })
}

pub fn bleu_delta(base: &RunScores, run: &RunScores) -> Option<Delta> {
    Some(Delta {
        delta: run.scores.bleu? - base.scores.bleu?,
        significant: None,
    })
}

/// Notes on runs that were not evaluated on the same examples as the baseline.
fn warnings(runs: &[RunScores]) -> Vec<String> {
    let base = &runs[0];
    runs[1..]
        .iter()
        .filter(|r| (&r.data, &r.split, r.n) != (&base.data, &base.split, base.n))
        .map(|r| {
            format!(
                "{} was evaluated on {} ({}, n = {}), the baseline {} on {} ({}, n = {}): the scores are not comparable example by example",
                r.name, r.data, r.split, r.n, base.name, base.data, base.split, base.n
            )
        })
        .collect()
}

fn cell(value: Option<String>, delta: Option<Delta>) -> String {
    let Some(value) = value else {
        return "n/a".to_string();
    };
    match delta {
        None => value,
        Some(d) => {
            let mark = if d.significant == Some(true) { "*" } else { "" };
            format!("{value} ({:+.2}{mark})", d.delta)
        }
    }
}

/// The side-by-side table in Markdown (ROUGE as F1 × 100).
pub fn markdown(runs: &[RunScores]) -> String {
    let base = &runs[0];
    let mut md = String::from(
        "| run | n | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | BLEU |\n|---|---:|---|---|---|---|---:|\n",
    );
    for (i, run) in runs.iter().enumerate() {
        let mut cells = vec![run.name.replace('|', "\\|"), run.n.to_string()];
        for (k, rouge) in run.scores.rouge().into_iter().enumerate() {
            let value = rouge.map(|c| {
                format!(
                    "{:.2} [{:.2}, {:.2}]",
                    100.0 * c.mid,
                    100.0 * c.low,
                    100.0 * c.high
                )
            });
            let delta = (i > 0)
                .then(|| rouge_delta(base, run, k))
                .flatten()
                .map(|d| Delta {
                    delta: 100.0 * d.delta,
                    ..d
                });
            cells.push(cell(value, delta));
        }
        let delta = (i > 0).then(|| bleu_delta(base, run)).flatten();
        cells.push(cell(run.scores.bleu.map(|b| format!("{b:.2}")), delta));
        md += &format!("| {} |\n", cells.join(" | "));
    }
    md += &format!(
        "\nROUGE: F1 × 100, mid [low, high] of the 95% bootstrap interval. Deltas (in \
         parentheses) against `{}`. {COMPARE_RULE}\n",
        base.name
    );
    for w in warnings(runs) {
        md += &format!("\nWarning: {w}\n");
    }
    md
}

/// The comparison document: scores as in the metrics files (ROUGE 0-1), deltas in the same
/// units.
pub fn comparison(runs: &[RunScores]) -> CompareReport {
    let base = &runs[0];
    let rows = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let mut deltas = BTreeMap::new();
            if i > 0 {
                for (k, key) in ROUGE_KEYS.iter().enumerate() {
                    if let Some(d) = rouge_delta(base, run, k) {
                        deltas.insert(key.to_string(), d);
                    }
                }
                if let Some(d) = bleu_delta(base, run) {
                    deltas.insert("bleu".into(), d);
                }
            }
            CompareRun {
                name: run.name.clone(),
                scores: run.scores.clone(),
                deltas_vs_baseline: deltas,
                n: Some(run.n),
                file: Some(run.file.clone()),
                model: Some(run.model.clone()),
                data: Some(run.data.clone()),
                split: Some(run.split.clone()),
                bleu: run.scores.bleu,
            }
        })
        .collect();
    CompareReport {
        baseline: base.name.clone(),
        rule: Some(COMPARE_RULE.into()),
        runs: rows,
        warnings: warnings(runs),
    }
}

fn chart(runs: &[RunScores]) -> Result<Vec<u8>> {
    let series: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: &r.name,
            values: r
                .scores
                .rouge()
                .iter()
                .map(|c| c.map_or(Interval::point(0.0), |c| c.scaled(100.0)))
                .collect(),
        })
        .collect();
    let title = format!("ROUGE F1 with 95% bootstrap intervals vs {}", runs[0].name);
    plots::interval_bars(&title, "F1 (%)", &ROUGE_LABELS, &series)
}

pub fn run(args: CompareArgs) -> Result<()> {
    check_name(&args.name)?;
    if args.files.len() < 2 {
        bail!("compare needs at least two NAME_metrics.json files (the first is the baseline)");
    }
    let runs = args
        .files
        .iter()
        .map(|f| read_run(f))
        .collect::<Result<Vec<_>>>()?;
    let _out = prepare_out_dir(&args.out)?;
    let md = markdown(&runs);
    let name = &args.name;
    let files = vec![
        (
            format!("{name}.json"),
            comparison(&runs).to_json().into_bytes(),
        ),
        (format!("{name}.md"), md.clone().into_bytes()),
        (format!("{name}.png"), chart(&runs)?),
    ];
    let written = write_atomically(&args.out, files)?;
    print!("{md}");
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(name: &str, mids: [f64; 4], half: f64, bleu: f64) -> RunScores {
        let mut scores = CorpusScores {
            bleu: Some(bleu),
            ..CorpusScores::default()
        };
        scores.set_rouge(mids.map(|m| {
            Some(Interval {
                low: m - half,
                mid: m,
                high: m + half,
            })
        }));
        RunScores {
            name: name.into(),
            file: format!("{name}.json"),
            model: "m".into(),
            data: "d".into(),
            split: "validation".into(),
            n: 10,
            scores,
        }
    }

    #[test]
    fn non_overlap_rule() {
        let base = run_with("a", [0.30, 0.10, 0.25, 0.25], 0.02, 5.0);
        let b = run_with("b", [0.35, 0.13, 0.25, 0.20], 0.02, 7.5);
        // 0.33 > 0.32: significant; 0.11 < 0.12: overlapping; equal; 0.22 < 0.23 below.
        let sig: Vec<Option<bool>> = (0..4)
            .map(|k| rouge_delta(&base, &b, k).unwrap().significant)
            .collect();
        assert_eq!(sig, [Some(true), Some(false), Some(false), Some(true)]);
        assert!((rouge_delta(&base, &b, 0).unwrap().delta - 0.05).abs() < 1e-12);
        assert_eq!(
            bleu_delta(&base, &b),
            Some(Delta {
                delta: 2.5,
                significant: None
            })
        );
        let md = markdown(&[base, b]);
        assert!(
            md.contains("| b | 10 | 35.00 [33.00, 37.00] (+5.00*) |"),
            "{md}"
        );
        assert!(md.contains("| 7.50 (+2.50) |"), "{md}");
    }
}
