//! `bartleby benchmark`: the pipeline's model selection. Every candidate summarizes the same
//! seeded sample of a split, is scored as `eval` scores and timed, and a composite score ranks
//! them ([`bartleby_core::metrics::selection`]); the ranking's stability under resampling of the
//! examples is reported beside it.
//!
//! Each candidate's evaluation is [`crate::evaluation`] (what `eval` runs), written to
//! `OUT/<NN>-<name>/` with its result cached there: a killed benchmark run again skips the
//! candidates already done (with the same settings). A candidate that fails to load or run gets
//! a row with its error; the others still run.

use crate::dataset::Row;
use crate::device::{self, Target};
use crate::evaluation::{self, Spec};
use crate::output::{prepare_out_dir, write_atomically};
use crate::progress;
use crate::scoring::{parse_metrics, Metric, MetricArgs};
use crate::summarizer::RunArgs;
use anyhow::{bail, Context, Result};
use bartleby_core::metrics::report::{bar_chart_svg, RankingRow, RANKING_COLUMNS};
use bartleby_core::metrics::selection::{self, Measured};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The input window of the pipeline's benchmark (tokens), unless `--max-input-tokens` says
/// otherwise or a model reads fewer.
const PIPELINE_INPUT_TOKENS: usize = 768;

#[derive(Args, Debug)]
#[command(after_long_help = BENCHMARK_HELP)]
pub struct BenchmarkArgs {
    /// A candidate: a model directory or a Hugging Face hub id. Repeat for each (two or more).
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// Data: a .jsonl/.json/.csv file, a folder of split files, or a hub dataset id (as `eval`).
    #[arg(long)]
    pub data: String,
    /// Split to evaluate when --data is a folder or a hub dataset.
    #[arg(long, default_value = "validation")]
    pub split: String,
    /// Rows in the sample every candidate summarizes.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Seed of the sample (as `eval --limit N --seed S`: the same rows on every machine) and
    /// of the stability bootstrap.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output folder: the ranking files and one folder per candidate.
    #[arg(long, default_value = "benchmark")]
    pub out: PathBuf,
    /// Composite weights of z(ROUGE-L), z(throughput), z(efficiency).
    #[arg(long, default_value = "0.6,0.15,0.25")]
    pub weights: String,
    /// Bootstrap resamples of the examples for the ranking's stability (0: none).
    #[arg(long, default_value_t = 1000)]
    pub stability_samples: usize,
    #[command(flatten)]
    pub metric: MetricArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

const BENCHMARK_HELP: &str = "\
Outputs (in --out; the ranking files are written atomically once every candidate ran):
  final_ranking.json   an array of rows, best first: model, model_id, architecture, rouge1,
                       rouge2, rougeL, rougeLsum (mid F x 100), bleu, time (s to summarize the n
                       rows, loading excluded), load_time, throughput (n / time), efficiency
                       (rougeL / time), composite_score, rank, peak_memory_mb, parameters,
                       device, n, p_first / rank_low / rank_high (bootstrap stability), error
  final_ranking.csv    the same columns
  final_ranking.html   one self-contained page: the table and bar charts (opens offline)
  NN-NAME/             per candidate: what `eval` writes (predictions, metrics, failures,
                       charts) and result.json (reused when the benchmark is run again)

composite_score = w1 z(rougeL) + w2 z(throughput) + w3 z(efficiency), z = z-score over the
candidates with the sample standard deviation (--weights, default 0.6,0.15,0.25: the pipeline's).
Inputs are cut at 768 tokens (the pipeline's setting) unless --max-input-tokens is given or a
model reads fewer. Candidates run one after another in this process on --device; peak_memory_mb
is the process's running peak.
";

/// A candidate's cached result: its ranking row (without rank or composite), its per-example
/// ROUGE-L and the settings it was measured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    settings: String,
    row: RankingRow,
    per_example_rouge_l: Vec<f64>,
}

pub fn run(args: BenchmarkArgs) -> Result<()> {
    let weights = selection::parse_weights(&args.weights)?;
    check_models(&args.models)?;
    let metrics = parse_metrics(&args.metric.metrics)?;
    if !metrics.contains(&Metric::Rouge) {
        bail!("--metrics: the ranking needs rouge (its composite is built on ROUGE-L)");
    }
    if metrics.contains(&Metric::BertScore) {
        bail!("--metrics: bertscore is not available in benchmark yet (as in eval)");
    }
    let bars = indicatif::MultiProgress::new();
    let spec = Spec {
        data: &args.data,
        split: &args.split,
        limit: Some(args.limit as usize),
        seed: Some(args.seed),
        metrics: &metrics,
        metric: &args.metric,
        run: &args.run,
        input_cap: Some(PIPELINE_INPUT_TOKENS),
        bars: Some(&bars),
        command: "benchmark",
    };
    let (rows, rows_in_split) = evaluation::load_data(&spec)?;
    let _out = prepare_out_dir(&args.out)?;
    let target = device::init_inference(args.run.device, args.run.f32_matmul)?;
    let settings = format!(
        "{:?}",
        (
            &args.data,
            &args.split,
            args.limit,
            args.seed,
            &args.metric,
            &args.run
        )
    );

    let total = args.models.len();
    let models_bar = bars.add(progress::bar_with_message(
        total as u64,
        0,
        "benchmarking",
        "models",
    ));
    let mut results = Vec::with_capacity(total);
    for (i, model) in args.models.iter().enumerate() {
        let dir = args.out.join(candidate_dir(i, model));
        models_bar.set_message(model.clone());
        // Lines above the bars (and plain lines when stderr is not a terminal).
        bars.suspend(|| eprintln!("[{}/{total}] {model}", i + 1));
        let cached = read_cached(&dir, &settings);
        let result = match cached {
            Some(c) => {
                bars.suspend(|| {
                    eprintln!(
                        "  cached in {} (same settings): not run again",
                        dir.display()
                    )
                });
                c
            }
            None => {
                let c = measure(model, &dir, &spec, &target, &rows, rows_in_split, &settings);
                if c.row.error.is_none() {
                    let json = serde_json::to_vec_pretty(&c)?;
                    write_atomically(&dir, vec![("result.json".into(), json)])?;
                } else {
                    let error = c.row.error.as_deref().unwrap_or_default();
                    bars.suspend(|| eprintln!("  failed: {error}"));
                }
                c
            }
        };
        results.push(result);
        models_bar.inc(1);
    }
    models_bar.finish_and_clear();

    let ranking = rank(results, weights, args.stability_samples, args.seed)?;
    warn_mixed_devices(&ranking);
    let files = vec![
        (
            "final_ranking.json".to_string(),
            (serde_json::to_string_pretty(&ranking)? + "\n").into_bytes(),
        ),
        ("final_ranking.csv".to_string(), ranking_csv(&ranking)?),
        (
            "final_ranking.html".to_string(),
            ranking_html(&ranking, &args).into_bytes(),
        ),
    ];
    let written = write_atomically(&args.out, files)?;
    print_ranking(&ranking);
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Two or more candidates, none twice.
fn check_models(models: &[String]) -> Result<()> {
    if models.len() < 2 {
        bail!(
            "--model: give at least two candidates (a ranking's z-scores are undefined for one; \
             use `bartleby eval` for a single model)"
        );
    }
    for (i, m) in models.iter().enumerate() {
        if models[..i].contains(m) {
            bail!("--model {m} is given twice");
        }
    }
    Ok(())
}

/// `NN-name`: the candidate's position and the last component of its id, made file-safe.
fn candidate_dir(i: usize, model: &str) -> String {
    let last = model
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(model);
    let safe: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{:02}-{safe}", i + 1)
}

fn short_name(model: &str) -> String {
    model
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_string()
}

fn read_cached(dir: &Path, settings: &str) -> Option<Cached> {
    let bytes = std::fs::read(dir.join("result.json")).ok()?;
    let cached: Cached = serde_json::from_slice(&bytes).ok()?;
    (cached.settings == settings && cached.row.error.is_none()).then_some(cached)
}

/// Evaluates one candidate into `dir`; a failure becomes a row with the error.
fn measure(
    model: &str,
    dir: &Path,
    spec: &Spec<'_>,
    target: &Target,
    rows: &[Row],
    rows_in_split: usize,
    settings: &str,
) -> Cached {
    let mut row = RankingRow {
        rank: None,
        model: short_name(model),
        model_id: model.to_string(),
        architecture: None,
        rouge1: None,
        rouge2: None,
        rouge_l: None,
        rouge_lsum: None,
        bleu: None,
        time: None,
        load_time: None,
        throughput: None,
        efficiency: None,
        composite_score: None,
        peak_memory_mb: None,
        parameters: None,
        device: spec.device_name(),
        n: rows.len(),
        p_first: None,
        rank_low: None,
        rank_high: None,
        error: None,
    };
    let name = short_name(model);
    let outcome = std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create", dir.display()))
        .and_then(|_| evaluation::evaluate(model, &name, dir, spec, target, rows, rows_in_split));
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            row.error = Some(chain.join(": "));
            return Cached {
                settings: settings.to_string(),
                row,
                per_example_rouge_l: Vec::new(),
            };
        }
    };
    let corpus = &outcome.report.corpus;
    let [r1, r2, rl, rlsum] = corpus.rouge().map(|i| i.map(|i| 100.0 * i.mid));
    let timing = outcome
        .report
        .timing
        .clone()
        .expect("evaluate times every run");
    row.architecture = Some(outcome.architecture);
    row.rouge1 = r1;
    row.rouge2 = r2;
    row.rouge_l = rl;
    row.rouge_lsum = rlsum;
    row.bleu = corpus.bleu;
    row.time = Some(timing.generation_seconds);
    row.load_time = Some(timing.load_seconds);
    row.throughput = Some(selection::throughput(rows.len(), timing.generation_seconds));
    row.efficiency = rl.map(|rl| selection::efficiency(rl, timing.generation_seconds));
    row.peak_memory_mb = crate::memory::peak_rss_bytes().map(|b| b as f64 / (1 << 20) as f64);
    row.parameters = Some(outcome.parameters);
    let per_example_rouge_l = outcome
        .scores
        .per_example
        .iter()
        .map(|e| e.rougeL.map_or(0.0, |s| 100.0 * s.fmeasure))
        .collect();
    Cached {
        settings: settings.to_string(),
        row,
        per_example_rouge_l,
    }
}

/// Composite scores, ranks and stability of the candidates that ran; failed ones last.
fn rank(
    results: Vec<Cached>,
    weights: [f64; 3],
    samples: usize,
    seed: u64,
) -> Result<Vec<RankingRow>> {
    let (ran, failed): (Vec<Cached>, Vec<Cached>) =
        results.into_iter().partition(|c| c.row.error.is_none());
    if ran.len() < 2 {
        bail!(
            "only {} of {} candidates ran (see the errors above): a ranking needs two",
            ran.len(),
            ran.len() + failed.len()
        );
    }
    let measured: Vec<Measured> = ran
        .iter()
        .map(|c| Measured {
            rouge_l: c.row.rouge_l.unwrap_or(0.0),
            seconds: c.row.time.unwrap_or(0.0),
        })
        .collect();
    let n = ran[0].row.n;
    let scores = selection::composite_scores(&measured, n, weights)?;
    let ranks = selection::ranks(&scores);
    let stability = if samples > 0 {
        let per_example: Vec<Vec<f64>> =
            ran.iter().map(|c| c.per_example_rouge_l.clone()).collect();
        let seconds: Vec<f64> = measured.iter().map(|m| m.seconds).collect();
        Some(selection::stability(
            &per_example,
            &seconds,
            weights,
            samples,
            seed,
        )?)
    } else {
        None
    };
    let mut rows: Vec<RankingRow> = ran
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut row = c.row;
            row.composite_score = Some(scores[i]);
            row.rank = Some(ranks[i]);
            if let Some(s) = &stability {
                row.p_first = Some(s[i].p_first);
                row.rank_low = Some(s[i].rank_low);
                row.rank_high = Some(s[i].rank_high);
            }
            row
        })
        .collect();
    rows.sort_by_key(|r| r.rank);
    rows.extend(failed.into_iter().map(|c| c.row));
    Ok(rows)
}

fn warn_mixed_devices(rows: &[RankingRow]) {
    let first = &rows[0].device;
    if rows.iter().any(|r| &r.device != first) {
        eprintln!("warning: the candidates ran on different devices: their times do not compare");
    }
}

/// `final_ranking.csv`: [`RANKING_COLUMNS`], one row per candidate.
fn ranking_csv(rows: &[RankingRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(RANKING_COLUMNS)?;
    for row in rows {
        let v = serde_json::to_value(row)?;
        let cells: Vec<String> = RANKING_COLUMNS
            .iter()
            .map(|c| match &v[*c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        w.write_record(&cells)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One chart of the page: [`bar_chart_svg`] under its title.
fn bar_chart_figure(title: &str, bars: &[(String, f64)]) -> String {
    format!(
        "<figure><figcaption>{}</figcaption>{}</figure>",
        html_escape(title),
        bar_chart_svg(bars)
    )
}

/// `final_ranking.html`: the table and bar charts, self-contained (no scripts, no requests).
fn ranking_html(rows: &[RankingRow], args: &BenchmarkArgs) -> String {
    let ran: Vec<&RankingRow> = rows.iter().filter(|r| r.error.is_none()).collect();
    let bars = |f: &dyn Fn(&RankingRow) -> Option<f64>| -> Vec<(String, f64)> {
        ran.iter()
            .filter_map(|r| f(r).map(|v| (r.model.clone(), v)))
            .collect()
    };
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Model ranking</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(2),\
         th:nth-child(2){{text-align:left}}figure{{margin:1.5em 0}}</style></head><body>\
         <h1>Model ranking</h1><p>{} rows of <code>{}</code> ({}), seed {}; composite = \
         weights {} on z(ROUGE-L), z(throughput), z(efficiency).</p><table><tr>",
        args.limit,
        html_escape(&args.data),
        html_escape(&args.split),
        args.seed,
        html_escape(&args.weights)
    );
    let columns = [
        "rank",
        "model",
        "rougeL",
        "rouge1",
        "rouge2",
        "bleu",
        "time",
        "throughput",
        "efficiency",
        "composite_score",
        "p_first",
        "rank_low",
        "rank_high",
        "parameters",
        "peak_memory_mb",
        "error",
    ];
    for c in columns {
        html += &format!("<th>{c}</th>");
    }
    html += "</tr>";
    for row in rows {
        let v = serde_json::to_value(row).unwrap_or_default();
        html += "<tr>";
        for c in columns {
            let cell = match &v[c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::Number(n) if n.is_f64() => {
                    format!("{:.3}", n.as_f64().unwrap_or(0.0))
                }
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            html += &format!("<td>{}</td>", html_escape(&cell));
        }
        html += "</tr>";
    }
    html += "</table>";
    html += &bar_chart_figure("Composite score", &bars(&|r| r.composite_score));
    html += &bar_chart_figure("ROUGE-L (mid F x 100)", &bars(&|r| r.rouge_l));
    html += &bar_chart_figure("Throughput (summaries / s)", &bars(&|r| r.throughput));
    html += &bar_chart_figure("P(rank 1) under resampling", &bars(&|r| r.p_first));
    html + "</body></html>\n"
}

fn print_ranking(rows: &[RankingRow]) {
    println!("rank  composite  rougeL   time (s)  p(first)  model");
    for r in rows {
        match &r.error {
            Some(e) => println!(
                "   -          -       -          -         -  {}: {e}",
                r.model
            ),
            None => println!(
                "{:>4}  {:>9.3}  {:>6.2}  {:>9.2}  {:>8}  {}",
                r.rank.unwrap_or(0),
                r.composite_score.unwrap_or(0.0),
                r.rouge_l.unwrap_or(0.0),
                r.time.unwrap_or(0.0),
                r.p_first.map(|p| format!("{p:.2}")).unwrap_or_default(),
                r.model
            ),
        }
    }
}
