//! Summary evaluation metrics that reproduce the Python references exactly.
//!
//! - [`rouge`]: Google's `rouge-score` 0.1.2 (`rouge1`, `rouge2`, `rougeL`, `rougeLsum`, with or
//!   without NLTK 3.10.4's Porter stemmer), its `score_multi` and its `BootstrapAggregator`
//!   (including numpy's legacy `np.random.seed` stream, so a seeded aggregation is the same).
//! - [`bertscore`]: `bert_score` 0.3.13 (BERT/RoBERTa encoders of [`crate::models::bert`]), to 1e-5.
//! - [`bleu`]: sacrebleu 2.6.0 `corpus_bleu` and `sentence_bleu` with their defaults (13a tokenizer,
//!   n-grams up to 4, `exp` smoothing, closest reference length, case-sensitive, 0-100 scale).
//!
//! - [`report`]: the reports the CLI writes (score, eval, compare, benchmark) as serde types,
//!   read back by `bartleby compare` and the web dashboards.
//! - [`selection`]: the pipeline's composite score for ranking candidate models, and how stable
//!   a ranking is under resampling of the examples.
//!
//! Parity fixtures: `tests/fixtures/metrics/` written by `tools/reference/make_metric_fixtures.py`;
//! the tests in these modules check every recorded score to 1e-6 (absolute).

pub mod analysis;
pub mod bertscore;
pub mod bleu;
pub mod report;
pub mod rouge;
pub mod selection;

#[cfg(test)]
mod bench {
    //! `cargo test --release -p bartleby-core metrics::bench -- --ignored --nocapture`
    //! Times ROUGE (stemmer, 4 types) + sentence BLEU on the 10,000 pairs that
    //! `make_metric_fixtures.py --bench` times in Python. Reads the shared data
    //! (`BARTLEBY_DATA`, default `../shared/data` from the repository root).
    use super::{bleu, rouge};
    use std::time::Instant;

    fn summaries() -> Vec<String> {
        let root = std::env::var("BARTLEBY_DATA").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data").to_string()
        });
        let mut out = Vec::new();
        for set in ["samsum", "dialogsum", "ami"] {
            let path = format!("{root}/{set}/validation.jsonl");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                out.push(row["summary"].as_str().unwrap().to_string());
            }
        }
        out
    }

    #[test]
    #[ignore = "timing; needs the shared data"]
    fn bench_10k_pairs() {
        let s = summaries();
        let total = s.len();
        let pairs: Vec<(&str, &str)> = (0..10_000)
            .map(|i| {
                (
                    s[(i + 1 + i / total) % total].as_str(),
                    s[i % total].as_str(),
                )
            })
            .collect();
        let t0 = Instant::now();
        let mut rouge_sum = 0.0;
        for (pred, reference) in &pairs {
            rouge_sum += rouge::score(pred, &[reference], true).rougeLsum.fmeasure;
        }
        let t1 = Instant::now();
        let mut bleu_sum = 0.0;
        for (pred, reference) in &pairs {
            bleu_sum += bleu::sentence_bleu(pred, &[reference]).score;
        }
        let t2 = Instant::now();
        let n = pairs.len() as f64;
        println!(
            "pairs: {}  mean rougeLsum F {:.6}  mean sentence BLEU {:.6}",
            pairs.len(),
            rouge_sum / n,
            bleu_sum / n
        );
        println!("rouge (stemmer, 4 types): {:.3} s", (t1 - t0).as_secs_f64());
        println!("sentence_bleu: {:.3} s", (t2 - t1).as_secs_f64());
        println!("total: {:.3} s", (t2 - t0).as_secs_f64());
    }
}
