//! BLEU exactly as sacrebleu 2.6.0 computes it with its defaults.
//!
//! - Preprocessing: Python `str.rstrip()` then the `13a` tokenizer ([`tokenize_13a`], a port of
//!   `Tokenizer13a` + `TokenizerRegexp`: the same replacements and regular expressions, applied with
//!   `re.sub`'s leftmost, non-overlapping semantics, then Python `str.split()`), case-sensitive.
//!   "Whitespace" is Python's (`str.isspace`), which also includes U+001C..U+001F.
//! - Statistics: n-grams of orders 1-4; the reference count of an n-gram is its maximum over the
//!   references; the reference length is the closest to the hypothesis length (the shorter on ties).
//! - Score (`BLEU.compute_bleu`): `exp` smoothing (mteval-v13a: the k-th zero-match order gets
//!   precision `100 / (2^k * total)`), brevity penalty `exp(1 - ref_len / sys_len)`, 0-100 scale.
//!   [`sentence_bleu`] uses the effective order (sacrebleu's `sentence_bleu` default), and
//!   [`corpus_bleu`] does not (sacrebleu's `corpus_bleu` default).
//!
//! Where sacrebleu raises or silently truncates, this module does not: no reference at all scores
//! like one empty reference; an empty corpus scores 0; reference streams whose length differs from
//! the number of hypotheses are an error (sacrebleu `zip`s them, dropping the unmatched segments).

use std::collections::HashMap;

use crate::{Error, Result};

/// The highest n-gram order.
pub const MAX_NGRAM_ORDER: usize = 4;

/// A BLEU score and its sufficient statistics, as sacrebleu's `BLEUScore`.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BleuScore {
    /// BLEU, 0-100.
    pub score: f64,
    /// Matching n-grams of each order (clipped by the reference counts).
    pub counts: [u64; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams of each order.
    pub totals: [u64; MAX_NGRAM_ORDER],
    /// Smoothed n-gram precisions, 0-100 (0 for orders past the last one with n-grams).
    pub precisions: [f64; MAX_NGRAM_ORDER],
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis length in tokens.
    pub sys_len: u64,
    /// Reference length in tokens (closest reference per segment).
    pub ref_len: u64,
}

/// Sufficient statistics of one segment or a sum of segments (sacrebleu's stats rows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BleuStats {
    pub sys_len: u64,
    pub ref_len: u64,
    pub correct: [u64; MAX_NGRAM_ORDER],
    pub total: [u64; MAX_NGRAM_ORDER],
}

impl std::ops::AddAssign for BleuStats {
    fn add_assign(&mut self, o: BleuStats) {
        self.sys_len += o.sys_len;
        self.ref_len += o.ref_len;
        for n in 0..MAX_NGRAM_ORDER {
            self.correct[n] += o.correct[n];
            self.total[n] += o.total[n];
        }
    }
}

impl BleuStats {
    /// The statistics of `hypothesis` against `references` (raw, untokenized text).
    pub fn segment(hypothesis: &str, references: &[&str]) -> BleuStats {
        let hyp = preprocess(hypothesis);
        let refs: Vec<String> = references.iter().map(|r| preprocess(r)).collect();
        // Token ids shared by the hypothesis and the references.
        let mut vocab: HashMap<&str, u32> = HashMap::new();
        let hyp_ids = intern(&hyp, &mut vocab);
        let ref_ids: Vec<Vec<u32>> = refs.iter().map(|r| intern(r, &mut vocab)).collect();

        let mut ref_max: HashMap<(u8, [u32; MAX_NGRAM_ORDER]), u64> = HashMap::new();
        let mut ref_lens = Vec::with_capacity(ref_ids.len());
        for r in &ref_ids {
            ref_lens.push(r.len() as u64);
            for (gram, count) in ngram_counts(r) {
                let slot = ref_max.entry(gram).or_insert(0);
                *slot = (*slot).max(count);
            }
        }
        let sys_len = hyp_ids.len() as u64;
        let mut stats = BleuStats {
            sys_len,
            ref_len: closest_ref_len(sys_len, &ref_lens),
            ..Default::default()
        };
        for (gram, count) in ngram_counts(&hyp_ids) {
            let n = gram.0 as usize - 1;
            stats.total[n] += count;
            if let Some(&r) = ref_max.get(&gram) {
                stats.correct[n] += count.min(r);
            }
        }
        stats
    }

    /// sacrebleu's `BLEU.compute_bleu` with `smooth_method='exp'`.
    pub fn score(&self, effective_order: bool) -> BleuScore {
        let (sys_len, ref_len) = (self.sys_len, self.ref_len);
        let mut bp = 1.0;
        if sys_len < ref_len {
            bp = if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            };
        }
        let mut out = BleuScore {
            score: 0.0,
            counts: self.correct,
            totals: self.total,
            precisions: [0.0; MAX_NGRAM_ORDER],
            bp,
            sys_len,
            ref_len,
        };
        if self.correct.iter().all(|&c| c == 0) {
            return out;
        }
        let mut smooth_mteval = 1.0f64;
        let mut eff_order = MAX_NGRAM_ORDER;
        for n in 0..MAX_NGRAM_ORDER {
            if self.total[n] == 0 {
                break;
            }
            if effective_order {
                eff_order = n + 1;
            }
            out.precisions[n] = if self.correct[n] == 0 {
                smooth_mteval *= 2.0;
                100.0 / (smooth_mteval * self.total[n] as f64)
            } else {
                100.0 * self.correct[n] as f64 / self.total[n] as f64
            };
        }
        // Python: sum([my_log(p) for p in precisions[:eff_order]]) — left to right from 0.
        let mut sum = 0.0f64;
        for &p in &out.precisions[..eff_order] {
            sum += if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        }
        out.score = bp * (sum / eff_order as f64).exp();
        out
    }
}

/// Ids of the space-separated tokens of `line` (a 13a-tokenized string).
fn intern<'a>(line: &'a str, vocab: &mut HashMap<&'a str, u32>) -> Vec<u32> {
    line.split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let next = vocab.len() as u32;
            *vocab.entry(t).or_insert(next)
        })
        .collect()
}

/// All n-grams of orders 1..=4 with their counts, keyed by (order, ids padded with 0).
fn ngram_counts(ids: &[u32]) -> HashMap<(u8, [u32; MAX_NGRAM_ORDER]), u64> {
    let mut counts = HashMap::with_capacity(ids.len() * MAX_NGRAM_ORDER);
    for n in 1..=MAX_NGRAM_ORDER {
        for gram in ids.windows(n) {
            let mut key = [0u32; MAX_NGRAM_ORDER];
            key[..n].copy_from_slice(gram);
            *counts.entry((n as u8, key)).or_insert(0) += 1;
        }
    }
    counts
}

/// sacrebleu's `_get_closest_ref_len` (0 when there is no reference).
fn closest_ref_len(hyp_len: u64, ref_lens: &[u64]) -> u64 {
    let mut best: Option<(u64, u64)> = None; // (diff, len)
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if diff > d || (diff == d && len >= l) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, l)| l)
}

/// sacrebleu's `sentence_bleu(hypothesis, references)`: exp smoothing, effective order. With no
/// reference it scores like one empty reference.
pub fn sentence_bleu(hypothesis: &str, references: &[&str]) -> BleuScore {
    BleuStats::segment(hypothesis, references).score(true)
}

/// sacrebleu's `corpus_bleu(hypotheses, reference_streams)`: `reference_streams[k][i]` is the
/// k-th reference of hypothesis i; exp smoothing, no effective order. Errors when there is no
/// stream or a stream's length differs from the number of hypotheses.
pub fn corpus_bleu(hypotheses: &[&str], reference_streams: &[&[&str]]) -> Result<BleuScore> {
    if reference_streams.is_empty() {
        return Err(Error::Input("corpus BLEU: no reference stream".into()));
    }
    for (k, stream) in reference_streams.iter().enumerate() {
        if stream.len() != hypotheses.len() {
            return Err(Error::Input(format!(
                "corpus BLEU: reference stream {k} has {} segments for {} hypotheses",
                stream.len(),
                hypotheses.len()
            )));
        }
    }
    let mut stats = BleuStats::default();
    let mut refs = Vec::with_capacity(reference_streams.len());
    for (i, hyp) in hypotheses.iter().enumerate() {
        refs.clear();
        refs.extend(reference_streams.iter().map(|s| s[i]));
        stats += BleuStats::segment(hyp, &refs);
    }
    Ok(stats.score(false))
}

/// Python's `str.isspace()` (Python 3.11 / Unicode 14), which `str.split()` and `str.rstrip()` use.
pub fn is_python_whitespace(c: char) -> bool {
    matches!(c,
        '\t'..='\r' | '\u{1c}'..='\u{1f}' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}'
        | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// sacrebleu's `_preprocess_segment` (no lowercasing): `tokenize_13a(sent.rstrip())`.
fn preprocess(sentence: &str) -> String {
    tokenize_13a(sentence.trim_end_matches(is_python_whitespace))
}

/// sacrebleu's `Tokenizer13a()(line)`: tokens joined by single spaces.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    // TokenizerRegexp on f" {line} ".
    let mut chars: Vec<char> = Vec::with_capacity(line.len() * 2 + 2);
    chars.push(' ');
    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> " \1 "
    for c in line.chars() {
        if matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/') {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    chars.push(' ');
    let digit = |c: char| c.is_ascii_digit();
    let period_comma = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> "\1 \2 "
    let chars = sub_pairs(
        &chars,
        |a, b| !digit(a) && period_comma(b),
        |a, b, out| out.extend([a, ' ', b, ' ']),
    );
    // ([\.,])([^0-9]) -> " \1 \2"
    let chars = sub_pairs(
        &chars,
        |a, b| period_comma(a) && !digit(b),
        |a, b, out| out.extend([' ', a, ' ', b]),
    );
    // ([0-9])(-) -> "\1 \2 "
    let chars = sub_pairs(
        &chars,
        |a, b| digit(a) && b == '-',
        |a, b, out| out.extend([a, ' ', b, ' ']),
    );
    // ' '.join(line.split())
    let mut out = String::with_capacity(chars.len());
    let mut pending_space = false;
    for c in chars {
        if is_python_whitespace(c) {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// `re.sub` of a two-character pattern `(A)(B)`: leftmost matches, scanning on after each match.
fn sub_pairs(
    s: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 4);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && matches(s[i], s[i + 1]) {
            replace(s[i], s[i + 1], &mut out);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const CASES: &str = include_str!("../../../tests/fixtures/metrics/cases.json");
    const TOL: f64 = 1e-6;

    fn fixture() -> Value {
        serde_json::from_str(CASES).unwrap()
    }

    fn strs(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    }

    /// Compares every field; returns the largest float difference.
    fn compare(what: &str, got: &BleuScore, want: &Value, failures: &mut Vec<String>) -> f64 {
        let f = |v: &Value| v.as_f64().unwrap();
        let u = |v: &Value| v.as_u64().unwrap();
        let mut worst = 0.0f64;
        let mut float = |name: String, a: f64, b: f64| {
            let d = (a - b).abs();
            worst = worst.max(d);
            if d.is_nan() || d > TOL {
                failures.push(format!("{what} {name}: rust {a} python {b}"));
            }
        };
        float("score".into(), got.score, f(&want["score"]));
        float("bp".into(), got.bp, f(&want["bp"]));
        for n in 0..MAX_NGRAM_ORDER {
            float(
                format!("precisions[{n}]"),
                got.precisions[n],
                f(&want["precisions"][n]),
            );
        }
        let ints: Vec<u64> = got
            .counts
            .iter()
            .chain(&got.totals)
            .copied()
            .chain([got.sys_len, got.ref_len])
            .collect();
        let want_ints: Vec<u64> = want["counts"]
            .as_array()
            .unwrap()
            .iter()
            .chain(want["totals"].as_array().unwrap())
            .map(u)
            .chain([u(&want["sys_len"]), u(&want["ref_len"])])
            .collect();
        if ints != want_ints {
            failures.push(format!(
                "{what} counts/totals/sys_len/ref_len: rust {ints:?} python {want_ints:?}"
            ));
        }
        worst
    }

    #[test]
    fn sentence_bleu_matches_sacrebleu() {
        let fx = fixture();
        let cases = fx["cases"].as_array().unwrap();
        assert!(cases.len() >= 40);
        let mut failures = Vec::new();
        let mut worst = 0.0f64;
        for case in cases {
            let got = sentence_bleu(
                case["prediction"].as_str().unwrap(),
                &strs(&case["references"]),
            );
            worst = worst.max(compare(
                case["id"].as_str().unwrap(),
                &got,
                &case["sentence_bleu"],
                &mut failures,
            ));
        }
        println!(
            "sentence BLEU: {} cases, max |rust - python| = {worst:e}",
            cases.len()
        );
        assert!(
            failures.is_empty(),
            "{} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn corpus_bleu_matches_sacrebleu() {
        let fx = fixture();
        let cases = fx["cases"].as_array().unwrap();
        let mut failures = Vec::new();
        let mut worst = 0.0f64;
        let mut names = Vec::new();
        for c in fx["corpus_bleu"].as_array().unwrap() {
            let subset: Vec<usize> = c["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let hyps: Vec<&str> = subset
                .iter()
                .map(|&i| cases[i]["prediction"].as_str().unwrap())
                .collect();
            let streams: Vec<Vec<&str>> = c["stream_refs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s.as_array()
                        .unwrap()
                        .iter()
                        .zip(&subset)
                        .map(|(r, &i)| match r.as_u64() {
                            Some(r) => cases[i]["references"][r as usize].as_str().unwrap(),
                            None => "",
                        })
                        .collect()
                })
                .collect();
            let streams: Vec<&[&str]> = streams.iter().map(Vec::as_slice).collect();
            let got = corpus_bleu(&hyps, &streams).unwrap();
            let name = c["name"].as_str().unwrap();
            worst = worst.max(compare(name, &got, &c["bleu"], &mut failures));
            names.push(format!(
                "{name} ({} segments, {} streams)",
                hyps.len(),
                streams.len()
            ));
        }
        println!("corpus BLEU: {names:?}, max |rust - python| = {worst:e}");
        assert!(names.len() >= 3);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn tokenize_13a_matches_sacrebleu() {
        let fx = fixture();
        let mut n = 0;
        for case in fx["cases"].as_array().unwrap() {
            let Some(want) = case.get("tokens_13a") else {
                continue;
            };
            assert_eq!(
                preprocess(case["prediction"].as_str().unwrap()),
                want.as_str().unwrap(),
                "{}",
                case["id"]
            );
            n += 1;
        }
        assert!(n >= 20, "{n}");
    }

    #[test]
    fn python_whitespace_set() {
        let fx = fixture();
        let want: Vec<u32> = fx["python_whitespace"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got: Vec<u32> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_python_whitespace(c))
            .map(|c| c as u32)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn where_sacrebleu_raises_or_truncates() {
        // sentence_bleu(hyp, []) raises IndexError in sacrebleu; here: as with one empty reference.
        assert_eq!(sentence_bleu("a b", &[]), sentence_bleu("a b", &[""]));
        assert_eq!(sentence_bleu("a b", &[]).score, 0.0);
        // corpus_bleu([], [[]]) raises IndexError; here: 0 with empty statistics.
        let empty = corpus_bleu(&[], &[&[]]).unwrap();
        assert_eq!(
            (empty.score, empty.sys_len, empty.ref_len, empty.bp),
            (0.0, 0, 0, 1.0)
        );
        // sacrebleu zips mismatched streams (dropping segments); here: an error.
        assert!(corpus_bleu(&["a b c d e", "x y"], &[&["a b c d e"]]).is_err());
        assert!(corpus_bleu(&["a b c d e"], &[&["a b c d e", "x y"]]).is_err());
        assert!(corpus_bleu(&["a b c d e"], &[]).is_err());
        // Same float artefact as sacrebleu.
        assert_eq!(
            sentence_bleu("a b c d", &["a b c d"]).score,
            100.00000000000004
        );
    }
}
