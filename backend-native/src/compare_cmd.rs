//! `bartleby compare`: runs of `bartleby eval` side by side (e.g. baseline vs LoRA vs merged),
//! with deltas against the first run and whether each delta exceeds the bootstrap intervals.

use crate::eval_cmd::{check_name, prepare_out_dir, write_atomically, ROUGE_LABELS};
use crate::plots::{self, Ci, Series};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The significance rule, as written into the outputs.
pub const RULE: &str = "A ROUGE delta is marked significant (*) when the two runs' 95% bootstrap \
intervals do not overlap: this run's low > the baseline's high, or this run's high < the \
baseline's low. The intervals are computed separately for each run (not paired), so the rule is \
conservative: overlapping intervals do not prove that there is no difference. BLEU has no \
interval; its delta is never marked.";

/// The metrics compared: `corpus` keys of `NAME_metrics.json`.
const ROUGE_KEYS: [&str; 4] = ["rouge1", "rouge2", "rougeL", "rougeLsum"];

#[derive(Args, Debug)]
#[command(after_long_help = RULE)]
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
#[derive(Debug, Clone, Serialize)]
pub struct RunScores {
    pub name: String,
    pub file: String,
    pub model: String,
    pub data: String,
    pub split: String,
    pub n: u64,
    /// ROUGE F-measure intervals (0-1), in [`ROUGE_KEYS`] order; `None` when not computed.
    #[serde(skip)]
    pub rouge: [Option<Ci>; 4],
    pub bleu: Option<f64>,
}

/// A difference against the baseline.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Delta {
    pub delta: f64,
    /// Whether the intervals do not overlap ([`RULE`]); `None` for a metric without interval.
    pub significant: Option<bool>,
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str, at: &str, file: &str) -> Result<&'a Value> {
    obj.get(key)
        .ok_or_else(|| anyhow::anyhow!("{file}: missing field \"{at}{key}\""))
}

fn string_field(obj: &Map<String, Value>, key: &str, file: &str) -> Result<String> {
    match field(obj, key, "", file)? {
        Value::String(s) => Ok(s.clone()),
        _ => bail!("{file}: field \"{key}\" must be a string"),
    }
}

fn number(v: &Value, path: &str, file: &str) -> Result<f64> {
    v.as_f64()
        .ok_or_else(|| anyhow::anyhow!("{file}: field \"{path}\" must be a number"))
}

fn interval(v: &Value, path: &str, file: &str) -> Result<Ci> {
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("{file}: field \"{path}\" must be an object"))?;
    let get = |k: &str| {
        number(
            field(obj, k, &format!("{path}."), file)?,
            &format!("{path}.{k}"),
            file,
        )
    };
    Ok(Ci {
        low: get("low")?,
        mid: get("mid")?,
        high: get("high")?,
    })
}

/// Reads the fields of a `NAME_metrics.json` that `compare` uses; errors name file and field.
pub fn read_run(path: &Path) -> Result<RunScores> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("{file}: cannot read"))?;
    let doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{file}: invalid JSON: {e}"))?;
    let Value::Object(obj) = doc else {
        bail!("{file}: expected a JSON object (a NAME_metrics.json of bartleby eval)");
    };
    let corpus = field(&obj, "corpus", "", &file)?
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("{file}: field \"corpus\" must be an object"))?;
    let mut rouge = [None; 4];
    for (slot, key) in rouge.iter_mut().zip(ROUGE_KEYS) {
        if let Some(v) = corpus.get(key) {
            *slot = Some(interval(v, &format!("corpus.{key}"), &file)?);
        }
    }
    let bleu = corpus
        .get("bleu")
        .map(|v| number(v, "corpus.bleu", &file))
        .transpose()?;
    if rouge.iter().all(Option::is_none) && bleu.is_none() {
        bail!("{file}: field \"corpus\" has no ROUGE or BLEU score");
    }
    let n = field(&obj, "n", "", &file)?
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("{file}: field \"n\" must be a whole number"))?;
    Ok(RunScores {
        name: string_field(&obj, "name", &file)?,
        model: string_field(&obj, "model", &file)?,
        data: string_field(&obj, "data", &file)?,
        split: string_field(&obj, "split", &file)?,
        file,
        n,
        rouge,
        bleu,
    })
}

/// `run - base` for ROUGE type `k`, significant when the intervals do not overlap.
pub fn rouge_delta(base: &RunScores, run: &RunScores, k: usize) -> Option<Delta> {
    let (b, r) = (base.rouge[k]?, run.rouge[k]?);
    Some(Delta {
        delta: r.mid - b.mid,
        significant: Some(r.low > b.high || r.high < b.low),
    })
}

pub fn bleu_delta(base: &RunScores, run: &RunScores) -> Option<Delta> {
    Some(Delta {
        delta: run.bleu? - base.bleu?,
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
        for k in 0..4 {
            let value = run.rouge[k].map(|c| {
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
        cells.push(cell(run.bleu.map(|b| format!("{b:.2}")), delta));
        md += &format!("| {} |\n", cells.join(" | "));
    }
    md += &format!(
        "\nROUGE: F1 × 100, mid [low, high] of the 95% bootstrap interval. Deltas (in \
         parentheses) against `{}`. {RULE}\n",
        base.name
    );
    for w in warnings(runs) {
        md += &format!("\nWarning: {w}\n");
    }
    md
}

fn ci_json(c: Ci) -> Value {
    serde_json::json!({"low": c.low, "mid": c.mid, "high": c.high})
}

/// The comparison as JSON: scores as in the metrics files (ROUGE 0-1), deltas in the same units.
pub fn json(runs: &[RunScores]) -> Value {
    let base = &runs[0];
    let rows: Vec<Value> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let mut scores = Map::new();
            let mut deltas = Map::new();
            for (k, key) in ROUGE_KEYS.iter().enumerate() {
                if let Some(c) = run.rouge[k] {
                    scores.insert(key.to_string(), ci_json(c));
                }
                if let Some(d) = rouge_delta(base, run, k).filter(|_| i > 0) {
                    deltas.insert(
                        key.to_string(),
                        serde_json::to_value(d).expect("serializable"),
                    );
                }
            }
            if let Some(b) = run.bleu {
                scores.insert("bleu".into(), b.into());
            }
            if let Some(d) = bleu_delta(base, run).filter(|_| i > 0) {
                deltas.insert(
                    "bleu".into(),
                    serde_json::to_value(d).expect("serializable"),
                );
            }
            let mut v = serde_json::to_value(run).expect("serializable");
            v["scores"] = Value::Object(scores);
            v["deltas_vs_baseline"] = Value::Object(deltas);
            v
        })
        .collect();
    serde_json::json!({
        "baseline": base.name,
        "rule": RULE,
        "runs": rows,
        "warnings": warnings(runs),
    })
}

fn chart(runs: &[RunScores]) -> Result<Vec<u8>> {
    let pct = |c: Option<Ci>| {
        c.map_or(
            Ci {
                low: 0.0,
                mid: 0.0,
                high: 0.0,
            },
            |c| Ci {
                low: 100.0 * c.low,
                mid: 100.0 * c.mid,
                high: 100.0 * c.high,
            },
        )
    };
    let series: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: &r.name,
            values: r.rouge.iter().map(|&c| pct(c)).collect(),
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
    prepare_out_dir(&args.out)?;
    let md = markdown(&runs);
    let name = &args.name;
    let files = vec![
        (
            format!("{name}.json"),
            (serde_json::to_string_pretty(&json(&runs))? + "\n").into_bytes(),
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
        RunScores {
            name: name.into(),
            file: format!("{name}.json"),
            model: "m".into(),
            data: "d".into(),
            split: "validation".into(),
            n: 10,
            rouge: mids.map(|m| {
                Some(Ci {
                    low: m - half,
                    mid: m,
                    high: m + half,
                })
            }),
            bleu: Some(bleu),
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
