//! Model selection as the summarization pipeline ranks its candidates: a composite score of
//! quality and speed over z-scores, and (beyond the pipeline) how stable the ranking is when
//! the evaluated examples are resampled.
//!
//! `composite = w₁·z(rougeL) + w₂·z(throughput) + w₃·z(efficiency)` with `throughput = n / time`,
//! `efficiency = rougeL / time`, z the z-score over the candidates with the *sample* standard
//! deviation (pandas' `std`, `ddof = 1`), and default weights 0.6, 0.15, 0.25.

use crate::sampling::SplitMix64;
use crate::{Error, Result};

/// The pipeline's weights: ROUGE-L, throughput, efficiency.
pub const DEFAULT_WEIGHTS: [f64; 3] = [0.6, 0.15, 0.25];

/// One candidate's measurements: mean ROUGE-L (0–100, as the pipeline reports it) and the wall
/// seconds it took to summarize `n` examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub rouge_l: f64,
    pub seconds: f64,
}

/// `n / seconds`: summaries per second.
pub fn throughput(n: usize, seconds: f64) -> f64 {
    n as f64 / seconds
}

/// `rougeL / seconds`.
pub fn efficiency(rouge_l: f64, seconds: f64) -> f64 {
    rouge_l / seconds
}

/// z-scores with the sample standard deviation; all zero when every value is equal.
pub fn z_scores(values: &[f64]) -> Vec<f64> {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sd = var.sqrt();
    values
        .iter()
        .map(|v| if sd > 0.0 { (v - mean) / sd } else { 0.0 })
        .collect()
}

/// The composite score of every candidate (same order). At least two candidates are needed
/// (z-scores of one value are undefined); every time must be positive and finite.
pub fn composite_scores(candidates: &[Measured], n: usize, weights: [f64; 3]) -> Result<Vec<f64>> {
    if candidates.len() < 2 {
        return Err(Error::Input(format!(
            "a ranking needs at least two models (z-scores of {} are undefined)",
            candidates.len()
        )));
    }
    if let Some(c) = candidates
        .iter()
        .find(|c| !(c.seconds.is_finite() && c.seconds > 0.0) || !c.rouge_l.is_finite())
    {
        return Err(Error::Input(format!(
            "a candidate has time {} s and ROUGE-L {}: both must be finite, time positive",
            c.seconds, c.rouge_l
        )));
    }
    let rouge: Vec<f64> = candidates.iter().map(|c| c.rouge_l).collect();
    let thr: Vec<f64> = candidates
        .iter()
        .map(|c| throughput(n, c.seconds))
        .collect();
    let eff: Vec<f64> = candidates
        .iter()
        .map(|c| efficiency(c.rouge_l, c.seconds))
        .collect();
    let (zr, zt, ze) = (z_scores(&rouge), z_scores(&thr), z_scores(&eff));
    Ok((0..candidates.len())
        .map(|i| weights[0] * zr[i] + weights[1] * zt[i] + weights[2] * ze[i])
        .collect())
}

/// Parses `--weights a,b,c` (three finite numbers).
pub fn parse_weights(text: &str) -> Result<[f64; 3]> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let err = || {
        Error::Input(format!(
            "--weights {text:?}: expected three numbers a,b,c (ROUGE-L, throughput, efficiency)"
        ))
    };
    if parts.len() != 3 {
        return Err(err());
    }
    let mut w = [0.0; 3];
    for (slot, p) in w.iter_mut().zip(&parts) {
        *slot = p
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(err)?;
    }
    Ok(w)
}

/// Ranks (1 = best) of `scores`, higher first; ties keep input order.
pub fn ranks(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut rank = vec![0; scores.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r + 1;
    }
    rank
}

/// How each candidate ranks when the examples are resampled.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stability {
    /// Share of resamples in which the candidate ranks first.
    pub p_first: f64,
    /// 2.5th and 97.5th percentile of its rank over the resamples.
    pub rank_low: usize,
    pub rank_high: usize,
    pub samples: usize,
}

/// Bootstrap of the ranking: `samples` times, draw `n` example indices with replacement (the
/// same draw for every candidate: they summarized the same rows), take each candidate's mean
/// per-example ROUGE-L over the draw (times stay as measured: they cover the whole set) and
/// rank the composites. `per_example[c][i]` is candidate `c`'s ROUGE-L (0–100) on example `i`.
/// Seeded SplitMix64: the same on every machine.
pub fn stability(
    per_example: &[Vec<f64>],
    seconds: &[f64],
    weights: [f64; 3],
    samples: usize,
    seed: u64,
) -> Result<Vec<Stability>> {
    let m = per_example.len();
    let n = per_example.first().map_or(0, Vec::len);
    if per_example.iter().any(|p| p.len() != n) || seconds.len() != m || n == 0 {
        return Err(Error::Input(
            "stability: every candidate needs a score for each of the same examples".into(),
        ));
    }
    let mut rng = SplitMix64(seed);
    let mut firsts = vec![0usize; m];
    let mut all_ranks = vec![Vec::with_capacity(samples); m];
    let mut draw = vec![0usize; n];
    for _ in 0..samples {
        for d in draw.iter_mut() {
            *d = (rng.next_u64() % n as u64) as usize;
        }
        let measured: Vec<Measured> = (0..m)
            .map(|c| Measured {
                rouge_l: draw.iter().map(|&i| per_example[c][i]).sum::<f64>() / n as f64,
                seconds: seconds[c],
            })
            .collect();
        let scores = composite_scores(&measured, n, weights)?;
        for (c, r) in ranks(&scores).into_iter().enumerate() {
            if r == 1 {
                firsts[c] += 1;
            }
            all_ranks[c].push(r);
        }
    }
    Ok((0..m)
        .map(|c| {
            let mut r = all_ranks[c].clone();
            r.sort_unstable();
            let at = |q: f64| r[((q * (r.len() - 1) as f64).round()) as usize];
            Stability {
                p_first: firsts[c] as f64 / samples.max(1) as f64,
                rank_low: if r.is_empty() { 0 } else { at(0.025) },
                rank_high: if r.is_empty() { 0 } else { at(0.975) },
                samples,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline's published table (n = 200): rougeL / time → composite.
    #[test]
    fn composite_reproduces_the_published_table() {
        let table = [
            ("BART", 21.063, 101.6, 1.231),
            ("Llama-1B", 21.205, 393.9, 0.463),
            ("Llama-3B", 17.306, 748.2, -0.162),
            ("Phi-3", 14.307, 987.6, -0.572),
            ("T5", 9.637, 263.0, -0.960),
        ];
        let measured: Vec<Measured> = table
            .iter()
            .map(|&(_, rouge_l, seconds, _)| Measured { rouge_l, seconds })
            .collect();
        let scores = composite_scores(&measured, 200, DEFAULT_WEIGHTS).unwrap();
        for ((name, .., want), got) in table.iter().zip(&scores) {
            assert_eq!(
                (got * 1000.0).round() / 1000.0,
                *want,
                "{name}: composite {got}"
            );
        }
        assert_eq!(ranks(&scores), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn one_candidate_or_bad_weights_are_errors() {
        let one = [Measured {
            rouge_l: 20.0,
            seconds: 1.0,
        }];
        assert!(composite_scores(&one, 10, DEFAULT_WEIGHTS)
            .unwrap_err()
            .to_string()
            .contains("at least two models"));
        assert_eq!(parse_weights("0.6, 0.15,0.25").unwrap(), DEFAULT_WEIGHTS);
        for bad in ["0.6,0.4", "a,b,c", "1,2,nan", ""] {
            assert!(parse_weights(bad).is_err(), "{bad}");
        }
    }

    /// A clearly better candidate ranks first in (nearly) every resample; two identical ones
    /// share first place about evenly; the draws repeat with the seed.
    #[test]
    fn stability_of_clear_and_tied_rankings() {
        let good: Vec<f64> = (0..50).map(|i| 40.0 + (i % 7) as f64).collect();
        let bad: Vec<f64> = (0..50).map(|i| 10.0 + (i % 5) as f64).collect();
        let s = stability(
            &[good.clone(), bad.clone()],
            &[1.0, 1.0],
            DEFAULT_WEIGHTS,
            200,
            7,
        )
        .unwrap();
        assert_eq!(s[0].p_first, 1.0);
        assert_eq!((s[0].rank_low, s[0].rank_high), (1, 1));
        assert_eq!((s[1].rank_low, s[1].rank_high), (2, 2));
        let noisy: Vec<f64> = (0..50).map(|i| ((i * 37) % 50) as f64).collect();
        let shifted: Vec<f64> = (0..50).map(|i| ((i * 37 + 11) % 50) as f64).collect();
        let t = stability(
            &[noisy.clone(), shifted.clone()],
            &[1.0, 1.0],
            DEFAULT_WEIGHTS,
            400,
            1,
        )
        .unwrap();
        assert!(t[0].p_first > 0.2 && t[0].p_first < 0.8, "{t:?}");
        assert_eq!((t[0].rank_low, t[0].rank_high), (1, 2));
        let again = stability(&[noisy, shifted], &[1.0, 1.0], DEFAULT_WEIGHTS, 400, 1).unwrap();
        assert_eq!(t, again);
    }
}
