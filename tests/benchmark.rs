//! End-to-end: `bartleby benchmark` ranks fixture models (BART and T5) on real dialogues as the
//! pipeline does, resumes from its cache, reports a model that fails, and refuses bad input
//! with nothing written.

use bartleby_core::metrics::report::{
    from_json, rows_from_json, EvalReport, RankingRow, RANKING_COLUMNS,
};
use bartleby_tests::*;
use std::path::Path;

fn dialogsum() -> String {
    root()
        .join("../shared/data/dialogsum")
        .to_str()
        .unwrap()
        .to_string()
}

fn benchmark(models: &[&str], out: &Path, extra: &[&str]) -> std::process::Output {
    let data = dialogsum();
    let mut args = vec!["benchmark"];
    for m in models {
        args.extend(["--model", m]);
    }
    args.extend([
        "--data",
        &data,
        "--limit",
        "4",
        "--seed",
        "1",
        "--num-beams",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    bartleby(&args)
}

fn ranking(out: &Path) -> Vec<RankingRow> {
    let path = out.join("final_ranking.json");
    rows_from_json(
        &std::fs::read(&path).unwrap(),
        "final_ranking.json",
        "ranking",
    )
    .unwrap()
}

#[test]
fn benchmark_ranks_bart_and_t5_then_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let (bart, t5) = (model_dir("tiny-gelu"), model_dir("t5-relu-tied"));
    let models = [bart.to_str().unwrap(), t5.to_str().unwrap()];
    let run = benchmark(&models, &out, &["--stability-samples", "50"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows = ranking(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter().map(|r| r.rank).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
    // Two candidates: the z-scores are ±1/√2 each, so the composites are opposite.
    let c: Vec<f64> = rows.iter().map(|r| r.composite_score.unwrap()).collect();
    assert!((c[0] + c[1]).abs() < 1e-12 && c[0] > 0.0, "{c:?}");
    for r in &rows {
        assert_eq!(r.n, 4);
        assert!(r.error.is_none());
        let (p, lo, hi) = (
            r.p_first.unwrap(),
            r.rank_low.unwrap(),
            r.rank_high.unwrap(),
        );
        assert!((0.0..=1.0).contains(&p) && lo <= hi && hi <= 2);
        let time = r.time.unwrap();
        assert_eq!(r.throughput.unwrap(), 4.0 / time);
        assert_eq!(r.efficiency.unwrap(), r.rouge_l.unwrap() / time);
        assert!(r.parameters.unwrap() > 0);
        // The row's ROUGE-L is the candidate's eval metrics file's (mid F × 100).
        let dir = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir() && p.file_name().unwrap().to_str().unwrap().ends_with(&r.model))
            .unwrap();
        let metrics = dir.join(format!("{}_metrics.json", r.model));
        let report: EvalReport =
            from_json(&std::fs::read(&metrics).unwrap(), "metrics", "eval").unwrap();
        assert_eq!(
            r.rouge_l.unwrap(),
            100.0 * report.corpus.rougeL.unwrap().mid
        );
        assert!(dir.join("result.json").is_file());
    }
    let archs: Vec<&str> = rows
        .iter()
        .map(|r| r.architecture.as_deref().unwrap())
        .collect();
    assert!(
        archs.contains(&"bart") && archs.contains(&"t5"),
        "{archs:?}"
    );
    let csv = std::fs::read_to_string(out.join("final_ranking.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), RANKING_COLUMNS.join(","));
    assert_eq!(csv.lines().count(), 3);
    let html = std::fs::read_to_string(out.join("final_ranking.html")).unwrap();
    assert!(html.contains("<table>") && html.contains("<svg") && !html.contains("<script"));

    // Run again: both candidates come from the cache, and the ranking is the same.
    let again = benchmark(&models, &out, &["--stability-samples", "50"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stderr)
            .matches("cached in")
            .count(),
        2
    );
    assert_eq!(ranking(&out), rows);
}

#[test]
fn a_candidate_that_fails_gets_its_row_and_the_others_still_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let (a, b) = (model_dir("tiny-gelu"), model_dir("tiny-silu"));
    let missing = tmp.path().join("no-such-model");
    let models = [
        a.to_str().unwrap(),
        missing.to_str().unwrap(),
        b.to_str().unwrap(),
    ];
    let run = benchmark(&models, &out, &["--stability-samples", "0"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows = ranking(&out);
    assert_eq!(rows.len(), 3);
    assert!(rows[..2]
        .iter()
        .all(|r| r.rank.is_some() && r.error.is_none()));
    let failed = &rows[2];
    assert_eq!(failed.model, "no-such-model");
    assert!(failed.rank.is_none() && failed.rouge_l.is_none());
    assert!(failed.error.as_deref().unwrap().contains("no-such-model"));
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_dir("tiny-gelu");
    let m2 = model_dir("tiny-silu");
    let (m, m2) = (m.to_str().unwrap(), m2.to_str().unwrap());
    let cases: [(&[&str], &[&str], &str); 4] = [
        (&[m], &[], "at least two candidates"),
        (&[m, m], &[], "given twice"),
        (&[m, m2], &["--weights", "0.6,0.4"], "--weights"),
        (&[m, m2], &["--split", "nope"], "nope"),
    ];
    for (i, (models, extra, needle)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let run = benchmark(models, &out, extra);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{needle}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error:") && last.contains(needle),
            "{needle}: {stderr}"
        );
        assert!(!out.join("final_ranking.json").exists(), "{needle}");
    }
}

/// `bartleby plan` on a ranking: per winner a method, lengths from the data, estimates, and a
/// `train --config` file that `train` runs as it is.
#[test]
fn plan_writes_configs_that_train_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let row = |rank: Option<usize>, model: &str, error: Option<&str>| {
        serde_json::json!({
            "rank": rank, "model": model, "model_id": model_dir(model).to_str().unwrap(),
            "architecture": null, "rouge1": null, "rouge2": null, "rougeL": 1.0, "rougeLsum": null,
            "bleu": null, "time": 1.0, "load_time": null, "throughput": null, "efficiency": null,
            "composite_score": null, "peak_memory_mb": null, "parameters": null, "device": "cpu",
            "n": 4, "p_first": null, "rank_low": null, "rank_high": null, "error": error,
        })
    };
    let ranking = serde_json::json!([
        row(Some(1), "t5-relu-tied", None),
        row(Some(2), "tiny-gelu", None),
        row(None, "tiny-silu", Some("failed")),
    ]);
    let path = tmp.path().join("final_ranking.json");
    std::fs::write(&path, ranking.to_string()).unwrap();
    let out = tmp.path().join("plan");
    let run = bartleby(&[
        "plan",
        "--ranking",
        path.to_str().unwrap(),
        "--data",
        &dialogsum(),
        "--sample",
        "50",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let recs = read_json(&out.join("recommendations.json"));
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["architecture"], "t5");
    assert_eq!(recs[0]["target_modules"], serde_json::json!(["q", "v"]));
    assert_eq!(
        recs[1]["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    for r in recs {
        assert_eq!(r["precision"], "f16");
        assert!(r["max_source_tokens"].as_u64().unwrap() <= 384);
        assert!(r["estimated_peak_memory_gb"].as_f64().unwrap() > 0.0);
        assert_eq!(
            r["micro_batch"].as_u64().unwrap() * r["grad_accum"].as_u64().unwrap(),
            16
        );
    }
    assert!(std::fs::read_to_string(out.join("finetune_plan.md"))
        .unwrap()
        .contains("bartleby train --config"));
    // The config trains (one step here).
    let config = out.join(recs[1]["config_file"].as_str().unwrap());
    let runs = tmp.path().join("runs");
    let train = bartleby(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
        "--name",
        "planned",
        "--max-steps",
        "1",
        "--train-size",
        "4",
        "--val-size",
        "2",
        "--micro-batch",
        "2",
        "--grad-accum",
        "1",
    ]);
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    assert!(runs.join("planned/adapter/adapter_config.json").is_file());
    // A device size that does not parse is a one-line error.
    let bad = bartleby(&[
        "plan",
        "--ranking",
        path.to_str().unwrap(),
        "--data",
        &dialogsum(),
        "--device-memory",
        "lots",
        "--out",
        tmp.path().join("plan2").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--device-memory"));
    assert!(!tmp.path().join("plan2").exists());
}
