//! The Dashboards view's parsers on real CLI output: public/results/ was written by
//! `bartleby eval`, `compare` and `train` (app-web/make-example-results.sh). Every listed file is
//! recognised, and ROUGE/BLEU recomputed the way the page does equal what `bartleby eval` wrote.

use bartleby_web::dashboard::{check_against, detect, recompute_with, Loaded, RecomputeOptions};
use std::path::Path;

fn results() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../public/results")
}

#[test]
fn real_cli_outputs_parse_and_recompute_identically() {
    let index: Vec<String> =
        serde_json::from_slice(&std::fs::read(results().join("index.json")).unwrap()).unwrap();
    assert!(index.len() >= 6, "{index:?}");
    let mut metrics = Vec::new();
    let mut predictions = Vec::new();
    let (mut failures, mut train, mut compare, mut ranking) = (0, 0, 0, 0);
    for name in &index {
        let bytes = std::fs::read(results().join(name)).unwrap();
        match detect(name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}")) {
            Loaded::Metrics(m) => {
                // The failure report comes with the metrics JSON (`failures`).
                if let Some(f) = &m.failure_report {
                    assert!(!f.categories.is_empty() || f.flagged == Some(0), "{name}");
                    failures += 1
                }
                metrics.push(m)
            }
            Loaded::Predictions(p) => predictions.push(p),
            Loaded::Train(t) => {
                assert!(!t.steps.is_empty() && !t.validations.is_empty(), "{name}");
                train += 1
            }
            Loaded::Comparison(c) => {
                assert_eq!(c.runs.len(), 2, "{name}");
                compare += 1
            }
            Loaded::Ranking(r) => {
                // `bartleby benchmark` of three fixture models (make-example-results.sh).
                assert_eq!(r.rows.len(), 3, "{name}");
                assert!(r.rows.iter().all(|row| row.rank.is_some()), "{name}");
                ranking += 1
            }
        }
    }
    assert_eq!(
        (
            metrics.len(),
            predictions.len(),
            failures,
            train,
            compare,
            ranking
        ),
        (2, 2, 2, 1, 1, 1)
    );
    for p in &predictions {
        let m = metrics
            .iter()
            .find(|m| m.scores.name == p.name)
            .expect("metrics of the run");
        assert_eq!(Some(p.rows.len() as u64), m.scores.n, "{}", p.name);
        let here = recompute_with(&p.rows, &RecomputeOptions::from_metrics(m)).unwrap();
        let checks = check_against(&m.scores, &here);
        assert!(!checks.is_empty());
        for c in &checks {
            assert_eq!(
                c.matches,
                Some(true),
                "{}: {} file {:?} page {:?}",
                p.name,
                c.label,
                c.file,
                c.here
            );
        }
    }
}
