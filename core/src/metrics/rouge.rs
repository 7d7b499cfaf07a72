//! ROUGE exactly as Google's `rouge-score` 0.1.2 computes it.
//!
//! - Tokenizer (`rouge_score.tokenize.tokenize`): Python `str.lower()`, every run of characters
//!   outside `[a-z0-9]` is a separator (so accented letters split words and other scripts give no
//!   tokens: `"naïve"` is `na`, `ve`), and with stemming, tokens longer than 3 characters go
//!   through NLTK's `PorterStemmer` in its default `NLTK_EXTENSIONS` mode (crate `nltk-porter`).
//! - `rouge1`/`rouge2`: clipped n-gram overlap; precision = hits / max(prediction n-grams, 1),
//!   recall = hits / max(reference n-grams, 1).
//! - `rougeL`: longest common subsequence over all tokens.
//! - `rougeLsum`: summary-level union LCS over sentences split on `"\n"` (empty lines dropped),
//!   with the same LCS backtracking tie-breaking and the same clipped hit counting as rouge-score.
//! - Several references: `RougeScorer.score_multi`, i.e. for each ROUGE type independently the
//!   reference with the highest F-measure (the first one on ties, like `np.argmax`).
//! - [`aggregate`]: `scoring.BootstrapAggregator` (95% interval, 2.5/50/97.5 percentiles of the
//!   bootstrap means, numpy's linear interpolation). Resampling draws from numpy's *legacy*
//!   `RandomState` (MT19937 seeded like `np.random.seed(seed)`, `np.random.choice` bounded by
//!   masked rejection) in the order rouge-score draws (`rouge1`, `rouge2`, `rougeL`, `rougeLsum`,
//!   `n_samples` resamples each), so `aggregate(scores, n, seed)` equals
//!   `np.random.seed(seed); aggregator.aggregate()` for an aggregator fed those scores with
//!   `RougeScorer(['rouge1', 'rouge2', 'rougeL', 'rougeLsum'])`.
//!
//! Where the reference raises, this module does not: no reference at all scores like one empty
//! reference (all zeros; rouge-score's `score_multi([])` raises `ValueError`), and [`aggregate`]
//! returns `None` for no scores or `n_samples == 0`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, OnceLock, PoisonError};

use nltk_porter::{Mode, PorterStemmer};

/// Precision, recall and F-measure of one ROUGE type (0-1 scale).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl Score {
    pub const ZERO: Score = Score {
        precision: 0.0,
        recall: 0.0,
        fmeasure: 0.0,
    };

    fn from_counts(hits: usize, prediction_len: usize, reference_len: usize) -> Score {
        let precision = hits as f64 / prediction_len as f64;
        let recall = hits as f64 / reference_len as f64;
        Score {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }
}

/// `rouge_score.scoring.fmeasure`: the harmonic mean, or 0 when both are 0.
pub fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// The four ROUGE types of one prediction.
#[allow(non_snake_case)]
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RougeScores {
    pub rouge1: Score,
    pub rouge2: Score,
    pub rougeL: Score,
    pub rougeLsum: Score,
}

impl RougeScores {
    /// The type names, in the order of [`RougeScores::as_array`] (and of the bootstrap draws).
    pub const TYPES: [&'static str; 4] = ["rouge1", "rouge2", "rougeL", "rougeLsum"];

    pub fn as_array(&self) -> [Score; 4] {
        [self.rouge1, self.rouge2, self.rougeL, self.rougeLsum]
    }

    fn from_array(a: [Score; 4]) -> Self {
        RougeScores {
            rouge1: a[0],
            rouge2: a[1],
            rougeL: a[2],
            rougeLsum: a[3],
        }
    }
}

/// Distinct words remembered by [`stem`] before its memo is emptied (about 2-3 MB at most).
const STEM_MEMO_CAP: usize = 1 << 16;

/// NLTK's `PorterStemmer().stem(word)`, memoized: stemming is most of the cost of ROUGE with
/// stemming, and summaries reuse few words. The memo is process-wide and bounded.
fn stem(word: &str) -> String {
    static STEMMER: OnceLock<PorterStemmer> = OnceLock::new();
    static MEMO: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let mut memo = MEMO
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = memo.get(word) {
        return s.clone();
    }
    let s = STEMMER
        .get_or_init(|| PorterStemmer::new(Mode::Nltk))
        .stem(word);
    if memo.len() >= STEM_MEMO_CAP {
        memo.clear();
    }
    memo.insert(word.to_owned(), s.clone());
    s
}

/// rouge-score's tokenizer (`DefaultTokenizer(use_stemmer)`).
pub fn tokenize(text: &str, stemmer: bool) -> Vec<String> {
    let mut tokens = Vec::new();
    tokenize_into(text, stemmer, &mut tokens);
    tokens
}

fn tokenize_into(text: &str, stemmer: bool, tokens: &mut Vec<String>) {
    let mut current = String::new();
    let finish = |current: &mut String, tokens: &mut Vec<String>| {
        if current.is_empty() {
            return;
        }
        // Tokens are ASCII here, so bytes = characters (`len(x) > 3` in Python).
        if stemmer && current.len() > 3 {
            let stem = stem(current);
            current.clear();
            if !stem.is_empty() {
                tokens.push(stem);
            }
        } else {
            tokens.push(std::mem::take(current));
        }
    };
    let push = |c: char, current: &mut String, tokens: &mut Vec<String>| {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            current.push(c);
        } else {
            finish(current, tokens);
        }
    };
    for ch in text.chars() {
        if ch.is_ascii() {
            push(ch.to_ascii_lowercase(), &mut current, tokens);
        } else {
            // Python's str.lower() uses the full Unicode mapping: U+0130 becomes "i\u{307}" and
            // U+212A (KELVIN SIGN) "k"; every other non-ASCII character stays non-ASCII.
            for lower in ch.to_lowercase() {
                push(lower, &mut current, tokens);
            }
        }
    }
    finish(&mut current, tokens);
}

/// A tokenized text: token ids, and the token ranges of its non-empty `"\n"` lines (rougeLsum).
struct Doc {
    ids: Vec<u32>,
    sentences: Vec<Range<usize>>,
}

#[derive(Default)]
struct Vocab {
    ids: HashMap<String, u32>,
}

impl Vocab {
    fn doc(&mut self, text: &str, stemmer: bool) -> Doc {
        let mut tokens = Vec::new();
        let mut sentences = Vec::new();
        // A newline always separates tokens, so the tokens of the whole text are the
        // concatenation of the tokens of its lines.
        for line in text.split('\n').filter(|line| !line.is_empty()) {
            let start = tokens.len();
            tokenize_into(line, stemmer, &mut tokens);
            sentences.push(start..tokens.len());
        }
        let ids = tokens
            .into_iter()
            .map(|t| {
                let next = self.ids.len() as u32;
                *self.ids.entry(t).or_insert(next)
            })
            .collect();
        Doc { ids, sentences }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// ROUGE-1/2/L/Lsum of `prediction` against `references` (rouge-score's `score_multi`: per type,
/// the reference with the best F-measure, the first on ties). With no reference every score is 0.
pub fn score(prediction: &str, references: &[&str], stemmer: bool) -> RougeScores {
    let mut vocab = Vocab::default();
    let pred = vocab.doc(prediction, stemmer);
    let refs: Vec<Doc> = references.iter().map(|r| vocab.doc(r, stemmer)).collect();
    let mut best: Option<[Score; 4]> = None;
    for reference in &refs {
        let scores = score_docs(reference, &pred, vocab.len());
        best = Some(match best {
            None => scores,
            Some(mut b) => {
                for (slot, candidate) in b.iter_mut().zip(scores) {
                    if candidate.fmeasure > slot.fmeasure {
                        *slot = candidate;
                    }
                }
                b
            }
        });
    }
    RougeScores::from_array(best.unwrap_or([Score::ZERO; 4]))
}

fn score_docs(reference: &Doc, prediction: &Doc, vocab: usize) -> [Score; 4] {
    [
        rouge_n(&reference.ids, &prediction.ids, 1, vocab),
        rouge_n(&reference.ids, &prediction.ids, 2, vocab),
        rouge_l(&reference.ids, &prediction.ids),
        rouge_lsum(reference, prediction, vocab),
    ]
}

fn rouge_n(reference: &[u32], prediction: &[u32], n: usize, vocab: usize) -> Score {
    let total = |len: usize| (len + 1).saturating_sub(n);
    let hits = if n == 1 {
        let mut counts = vec![0usize; vocab];
        for &t in reference {
            counts[t as usize] += 1;
        }
        let mut hits = 0;
        for &t in prediction {
            if counts[t as usize] > 0 {
                counts[t as usize] -= 1;
                hits += 1;
            }
        }
        hits
    } else {
        let mut counts: HashMap<&[u32], usize> = HashMap::new();
        for gram in reference.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
        let mut hits = 0;
        for gram in prediction.windows(n) {
            if let Some(c) = counts.get_mut(gram) {
                if *c > 0 {
                    *c -= 1;
                    hits += 1;
                }
            }
        }
        hits
    };
    Score::from_counts(
        hits,
        total(prediction.len()).max(1),
        total(reference.len()).max(1),
    )
}

fn lcs_length(a: &[u32], b: &[u32]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for &x in a {
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn rouge_l(reference: &[u32], prediction: &[u32]) -> Score {
    if reference.is_empty() || prediction.is_empty() {
        return Score::ZERO;
    }
    Score::from_counts(
        lcs_length(reference, prediction),
        prediction.len(),
        reference.len(),
    )
}

/// Cells of the LCS table held at once by [`lcs_indices`] (64 MB of `u32`).
const LCS_BLOCK_CELLS: usize = 1 << 24;

/// rouge-score's `lcs_ind`: the reference positions of one LCS, chosen by `_backtrack_norec`
/// (pushed last first, as it finds them). The table is never held whole: rows are split in
/// halves until a block fits [`LCS_BLOCK_CELLS`], the lower half backtracked first from a row
/// recomputed forward, then the upper half from where the path crossed (Hirschberg's idea,
/// following the same path as the full-table backtrack) — memory linear in the lengths.
fn lcs_indices(reference: &[u32], candidate: &[u32], table: &mut Vec<u32>, out: &mut Vec<usize>) {
    lcs_indices_within(reference, candidate, table, out, LCS_BLOCK_CELLS);
}

fn lcs_indices_within(
    reference: &[u32],
    candidate: &[u32],
    table: &mut Vec<u32>,
    out: &mut Vec<usize>,
    block_cells: usize,
) {
    if reference.is_empty() || candidate.is_empty() {
        return;
    }
    let top = vec![0u32; candidate.len() + 1];
    let span = Span {
        reference,
        candidate,
        block_cells,
    };
    span.backtrack(0, reference.len(), &top, candidate.len(), table, out);
}

struct Span<'a> {
    reference: &'a [u32],
    candidate: &'a [u32],
    block_cells: usize,
}

impl Span<'_> {
    /// The next LCS-table row (`next[j]` = T[i+1][j], columns `0..next.len()`) from row `i`.
    fn step(&self, i: usize, prev: &[u32], next: &mut [u32]) {
        next[0] = 0;
        let r = self.reference[i];
        for j in 0..next.len() - 1 {
            next[j + 1] = if r == self.candidate[j] {
                prev[j] + 1
            } else {
                prev[j + 1].max(next[j])
            };
        }
    }

    /// Backtracks the path from (`b`, `jb`) up to row `a`, given row `a` of the table (`top`,
    /// columns `0..=jb`); returns the column where it reaches row `a` (0: the path ended).
    fn backtrack(
        &self,
        a: usize,
        b: usize,
        top: &[u32],
        jb: usize,
        table: &mut Vec<u32>,
        out: &mut Vec<usize>,
    ) -> usize {
        let cols = jb + 1;
        if b - a <= 1 || (b - a + 1).saturating_mul(cols) <= self.block_cells {
            table.clear();
            table.resize((b - a + 1) * cols, 0);
            table[..cols].copy_from_slice(&top[..cols]);
            for i in a..b {
                let (done, rest) = table.split_at_mut((i + 1 - a) * cols);
                self.step(i, &done[(i - a) * cols..], &mut rest[..cols]);
            }
            let at = |i: usize, j: usize| table[(i - a) * cols + j];
            let (mut i, mut j) = (b, jb);
            while i > a && j > 0 {
                if self.reference[i - 1] == self.candidate[j - 1] {
                    out.push(i - 1);
                    i -= 1;
                    j -= 1;
                } else if at(i, j - 1) > at(i - 1, j) {
                    j -= 1;
                } else {
                    i -= 1;
                }
            }
            return j;
        }
        let mid = (a + b) / 2;
        let mut row = top[..cols].to_vec();
        let mut next = vec![0u32; cols];
        for i in a..mid {
            self.step(i, &row, &mut next);
            std::mem::swap(&mut row, &mut next);
        }
        let j_mid = self.backtrack(mid, b, &row, jb, table, out);
        if j_mid == 0 {
            return 0;
        }
        self.backtrack(a, mid, top, j_mid, table, out)
    }
}

/// rouge-score's `_summary_level_lcs`.
fn rouge_lsum(reference: &Doc, prediction: &Doc, vocab: usize) -> Score {
    let m: usize = reference.sentences.iter().map(|s| s.len()).sum();
    let n: usize = prediction.sentences.iter().map(|s| s.len()).sum();
    if m == 0 || n == 0 {
        return Score::ZERO;
    }
    let mut count_ref = vec![0usize; vocab];
    let mut count_pred = vec![0usize; vocab];
    for &t in &reference.ids {
        count_ref[t as usize] += 1;
    }
    for &t in &prediction.ids {
        count_pred[t as usize] += 1;
    }
    let mut hits = 0;
    let mut table = Vec::new();
    let mut indices = Vec::new();
    for r in &reference.sentences {
        let sentence = &reference.ids[r.clone()];
        let mut in_union = vec![false; sentence.len()];
        for c in &prediction.sentences {
            indices.clear();
            lcs_indices(
                sentence,
                &prediction.ids[c.clone()],
                &mut table,
                &mut indices,
            );
            for &i in &indices {
                in_union[i] = true;
            }
        }
        for (&t, &keep) in sentence.iter().zip(&in_union) {
            if !keep {
                continue;
            }
            let t = t as usize;
            if count_pred[t] > 0 && count_ref[t] > 0 {
                hits += 1;
                count_pred[t] -= 1;
                count_ref[t] -= 1;
            }
        }
    }
    Score::from_counts(hits, n, m)
}

// ---------------------------------------------------------------------------------------------
// BootstrapAggregator

/// Confidence interval of one score type: `low`/`mid`/`high` are the 2.5th, 50th and 97.5th
/// percentiles of the bootstrap means of precision, recall and F-measure (each independently).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AggregateScore {
    pub low: Score,
    pub mid: Score,
    pub high: Score,
}

/// [`AggregateScore`] of each ROUGE type.
#[allow(non_snake_case)]
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RougeAggregate {
    pub rouge1: AggregateScore,
    pub rouge2: AggregateScore,
    pub rougeL: AggregateScore,
    pub rougeLsum: AggregateScore,
}

/// rouge-score's `BootstrapAggregator(confidence_interval=0.95, n_samples).aggregate()` after
/// `np.random.seed(seed)` (the default is `n_samples = 1000`). `None` when `per_example` is empty
/// or `n_samples` is 0 (Python returns `{}` / raises `ValueError`).
pub fn aggregate(
    per_example: &[RougeScores],
    n_samples: usize,
    seed: u32,
) -> Option<RougeAggregate> {
    let n = per_example.len();
    if n == 0 || n_samples == 0 {
        return None;
    }
    let mut rng = NumpyLegacyRng::new(seed);
    // rouge-score: percentile_delta = (1 - ci) / 2; q = 100 * [delta, 0.5, 1 - delta].
    let delta = (1.0 - 0.95) / 2.0;
    let q = [100.0 * delta, 100.0 * 0.5, 100.0 * (1.0 - delta)];
    let mut out = [AggregateScore::default(); 4];
    let mut idx = vec![0usize; n];
    for (t, slot) in out.iter_mut().enumerate() {
        let matrix: Vec<[f64; 3]> = per_example
            .iter()
            .map(|s| {
                let s = s.as_array()[t];
                [s.precision, s.recall, s.fmeasure]
            })
            .collect();
        let mut means: [Vec<f64>; 3] = std::array::from_fn(|_| Vec::with_capacity(n_samples));
        for _ in 0..n_samples {
            rng.choice_into(n, &mut idx);
            // np.mean(matrix[idx], axis=0): column sums in row order, then / n.
            let mut sum = [0.0f64; 3];
            for &k in &idx {
                for (s, v) in sum.iter_mut().zip(matrix[k]) {
                    *s += v;
                }
            }
            for (col, s) in means.iter_mut().zip(sum) {
                col.push(s / n as f64);
            }
        }
        let mut bounds = [[0.0f64; 3]; 3]; // [bound][measure]
        for (m, col) in means.iter_mut().enumerate() {
            col.sort_by(f64::total_cmp);
            for (b, &qb) in q.iter().enumerate() {
                bounds[b][m] = percentile_sorted(col, qb);
            }
        }
        let score = |b: [f64; 3]| Score {
            precision: b[0],
            recall: b[1],
            fmeasure: b[2],
        };
        *slot = AggregateScore {
            low: score(bounds[0]),
            mid: score(bounds[1]),
            high: score(bounds[2]),
        };
    }
    Some(RougeAggregate {
        rouge1: out[0],
        rouge2: out[1],
        rougeL: out[2],
        rougeLsum: out[3],
    })
}

/// `np.percentile(values, q)` (default `method="linear"`) for `q` in [0, 100]. NaN for no values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_sorted(&sorted, q)
}

/// numpy's `_quantile` + `_lerp` on ascending `sorted`, with numpy's float operations.
fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if virtual_index < 0.0 {
        return sorted[0];
    }
    let previous = virtual_index.floor();
    let i = previous as usize;
    let (a, b) = (sorted[i], sorted[i + 1]);
    let gamma = virtual_index - previous;
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// numpy's legacy `RandomState` MT19937 stream (`np.random.seed(int)`), enough of it for
/// `np.random.choice(np.arange(n), size=n)`.
struct NumpyLegacyRng {
    state: [u32; 624],
    pos: usize,
}

impl NumpyLegacyRng {
    fn new(seed: u32) -> Self {
        // mt19937_seed (init_genrand).
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        NumpyLegacyRng { state, pos: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.state[i] = self.state[(i + 397) % 624] ^ (y >> 1) ^ mag;
            }
            self.pos = 0;
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `np.random.choice(np.arange(n), size=len(out))`: `randint(0, n)` for each, legacy masked
    /// rejection sampling on 32-bit draws (n - 1 <= u32::MAX; no draw at all when n == 1).
    fn choice_into(&mut self, n: usize, out: &mut [usize]) {
        let rng = (n - 1) as u64;
        assert!(
            rng <= u32::MAX as u64,
            "bootstrap over more than 2^32 examples"
        );
        if rng == 0 {
            out.fill(0);
            return;
        }
        let mut mask = rng;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        for slot in out.iter_mut() {
            let v = loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= rng {
                    break v;
                }
            };
            *slot = v as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const CASES: &str = include_str!("../../../tests/fixtures/metrics/cases.json");
    const STEMS: &str = include_str!("../../../tests/fixtures/metrics/stems.json");
    const TOL: f64 = 1e-6;

    fn fixture() -> Value {
        serde_json::from_str(CASES).unwrap()
    }

    fn f(v: &Value) -> f64 {
        v.as_f64().unwrap()
    }

    fn score_of(v: &Value) -> Score {
        Score {
            precision: f(&v[0]),
            recall: f(&v[1]),
            fmeasure: f(&v[2]),
        }
    }

    fn scores_of(v: &Value) -> RougeScores {
        RougeScores {
            rouge1: score_of(&v["rouge1"]),
            rouge2: score_of(&v["rouge2"]),
            rougeL: score_of(&v["rougeL"]),
            rougeLsum: score_of(&v["rougeLsum"]),
        }
    }

    fn strs(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    }

    /// Compares every measure (to 1e-6, and bit for bit); returns the number of values checked and
    /// the largest difference.
    fn compare(
        what: &str,
        got: &[Score],
        want: &[Score],
        failures: &mut Vec<String>,
    ) -> (usize, f64) {
        let mut worst = 0.0f64;
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            for (name, a, b) in [
                ("precision", g.precision, w.precision),
                ("recall", g.recall, w.recall),
                ("fmeasure", g.fmeasure, w.fmeasure),
            ] {
                let d = (a - b).abs();
                worst = worst.max(d);
                if d.is_nan() || d > TOL {
                    failures.push(format!("{what} [{k}] {name}: rust {a} python {b}"));
                } else if a.to_bits() != b.to_bits() {
                    // Only +, *, / and sorting are involved (no libm), so the IEEE results are
                    // the same on every platform: anything but bit equality is a porting error.
                    failures.push(format!("{what} [{k}] {name}: rust {a:e} python {b:e} (within 1e-6 but not bit-exact)"));
                }
            }
        }
        (got.len() * 3, worst)
    }

    /// The full-table `lcs_ind` + `_backtrack_norec` of rouge-score, as a reference.
    fn lcs_indices_full(reference: &[u32], candidate: &[u32]) -> Vec<usize> {
        let cols = candidate.len() + 1;
        let mut t = vec![0u32; (reference.len() + 1) * cols];
        for (i, &r) in reference.iter().enumerate() {
            for (j, &c) in candidate.iter().enumerate() {
                t[(i + 1) * cols + j + 1] = if r == c {
                    t[i * cols + j] + 1
                } else {
                    t[i * cols + j + 1].max(t[(i + 1) * cols + j])
                };
            }
        }
        let (mut i, mut j, mut out) = (reference.len(), candidate.len(), Vec::new());
        while i > 0 && j > 0 {
            if reference[i - 1] == candidate[j - 1] {
                out.push(i - 1);
                i -= 1;
                j -= 1;
            } else if t[i * cols + j - 1] > t[(i - 1) * cols + j] {
                j -= 1;
            } else {
                i -= 1;
            }
        }
        out
    }

    /// The blocked backtrack follows the full table's path exactly, whatever the block size
    /// (down to two rows), on random texts of small vocabularies (many ties).
    #[test]
    fn blocked_lcs_follows_the_full_table_path() {
        let mut rng = crate::sampling::SplitMix64(7);
        for case in 0..400 {
            let vocab = 2 + (rng.next_u64() % 6) as u32;
            let m = (rng.next_u64() % 60) as usize;
            let n = (rng.next_u64() % 60) as usize;
            let r: Vec<u32> = (0..m)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect();
            let c: Vec<u32> = (0..n)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect();
            let want = lcs_indices_full(&r, &c);
            for block in [1, 7, 64, 500, usize::MAX] {
                let (mut table, mut got) = (Vec::new(), Vec::new());
                lcs_indices_within(&r, &c, &mut table, &mut got, block);
                assert_eq!(got, want, "case {case}, block {block}");
                assert!(table.len() <= ((n + 1) * 2).max(block.min((m + 1) * (n + 1))));
            }
        }
    }

    /// A long one-line pair (20,000 words each, 1.6 GB as a full table) in bounded memory.
    #[test]
    fn long_single_sentence_pair_in_linear_memory() {
        let a: String = (0..20_000).map(|i| format!("w{} ", i % 97)).collect();
        let b: String = (0..20_000).map(|i| format!("w{} ", (i * 7) % 89)).collect();
        let s = score(&a, &[&b], false);
        assert!(s.rougeLsum.fmeasure > 0.0 && s.rougeLsum.fmeasure <= 1.0);
        assert_eq!(s.rougeLsum, s.rougeL, "one sentence each: Lsum equals L");
    }

    #[test]
    fn rouge_scores_match_rouge_score() {
        let fx = fixture();
        let cases = fx["cases"].as_array().unwrap();
        assert!(cases.len() >= 40);
        let mut failures = Vec::new();
        let (mut checked, mut worst) = (0, 0.0f64);
        for case in cases {
            let id = case["id"].as_str().unwrap();
            let prediction = case["prediction"].as_str().unwrap();
            let references = strs(&case["references"]);
            for (key, stem) in [("stem", true), ("nostem", false)] {
                let got = score(prediction, &references, stem).as_array();
                let want = scores_of(&case["rouge"][key]).as_array();
                let (c, w) = compare(&format!("{id} {key}"), &got, &want, &mut failures);
                checked += c;
                worst = worst.max(w);
            }
            // Each reference alone (rouge-score's `score`), with stemming.
            for (r, want) in references
                .iter()
                .zip(case["rouge_per_reference_stem"].as_array().unwrap())
            {
                let got = score(prediction, &[r], true).as_array();
                let (c, w) = compare(
                    &format!("{id} single-ref"),
                    &got,
                    &scores_of(want).as_array(),
                    &mut failures,
                );
                checked += c;
                worst = worst.max(w);
            }
        }
        println!("rouge: {checked} values checked, max |rust - python| = {worst:e}");
        assert!(
            failures.is_empty(),
            "{} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn rouge_tokens_match_rouge_score() {
        let fx = fixture();
        let mut n = 0;
        for case in fx["cases"].as_array().unwrap() {
            let Some(tokens) = case.get("tokens_rouge") else {
                continue;
            };
            let text = case["prediction"].as_str().unwrap();
            assert_eq!(
                tokenize(text, true),
                strs(&tokens["stem"]),
                "{}",
                case["id"]
            );
            assert_eq!(
                tokenize(text, false),
                strs(&tokens["nostem"]),
                "{}",
                case["id"]
            );
            n += 1;
        }
        assert!(n >= 20, "{n}");
    }

    #[test]
    fn porter_stems_match_nltk() {
        let fx: Value = serde_json::from_str(STEMS).unwrap();
        let stems = fx["stems"].as_object().unwrap();
        assert!(stems.len() > 5000);
        let bad: Vec<String> = stems
            .iter()
            .filter(|(w, s)| tokenize(w, true) != [s.as_str().unwrap()])
            .map(|(w, s)| format!("{w}: rust {:?} nltk {s}", tokenize(w, true)))
            .collect();
        assert!(
            bad.is_empty(),
            "{} of {} stems differ:\n{}",
            bad.len(),
            stems.len(),
            bad.join("\n")
        );
    }

    /// Only U+0130 and U+212A lowercase to ASCII letters or digits (as in Python 3.11); the
    /// tokenizer relies on `char::to_lowercase` agreeing with `str.lower()` on these.
    #[test]
    fn non_ascii_lowercasing_to_ascii() {
        let found: Vec<u32> = (0x80..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| c.to_lowercase().any(|l| l.is_ascii_alphanumeric()))
            .map(|c| c as u32)
            .collect();
        assert_eq!(found, [0x130, 0x212A]);
        assert_eq!(
            tokenize("\u{130}stanbul \u{212A}elvin", false),
            ["i", "stanbul", "kelvin"]
        );
    }

    #[test]
    fn no_reference_scores_zero() {
        assert_eq!(score("a b c", &[], true), RougeScores::default());
        assert_eq!(score("a b c", &[], true), score("a b c", &[""], true));
    }

    #[test]
    fn numpy_choice_stream_matches() {
        let fx = fixture();
        for d in fx["numpy_choice"].as_array().unwrap() {
            let seed = d["seed"].as_u64().unwrap() as u32;
            let n = d["n"].as_u64().unwrap() as usize;
            let mut rng = NumpyLegacyRng::new(seed);
            let mut idx = vec![0usize; n];
            for want in d["draws"].as_array().unwrap() {
                rng.choice_into(n, &mut idx);
                let want: Vec<usize> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect();
                assert_eq!(&idx[..want.len()], &want[..], "seed {seed} n {n}");
            }
        }
    }

    #[test]
    fn percentile_matches_numpy() {
        let fx = fixture();
        let mut checked = 0;
        for p in fx["percentile"].as_array().unwrap() {
            let values: Vec<f64> = p["values"].as_array().unwrap().iter().map(f).collect();
            for (q, want) in p["q"]
                .as_array()
                .unwrap()
                .iter()
                .zip(p["result"].as_array().unwrap())
            {
                let got = percentile(&values, f(q));
                assert!(
                    (got - f(want)).abs() <= TOL,
                    "n={} q={q}: {got} vs {want}",
                    values.len()
                );
                // The linear interpolation is the same float arithmetic as numpy's: bit-exact.
                assert_eq!(got.to_bits(), f(want).to_bits(), "n={} q={q}", values.len());
                checked += 1;
            }
        }
        assert!(checked >= 50);
    }

    #[test]
    fn bootstrap_matches_rouge_score_aggregator() {
        let fx = fixture();
        let mut failures = Vec::new();
        let mut worst = 0.0f64;
        for b in fx["bootstrap"].as_array().unwrap() {
            let name = b["name"].as_str().unwrap();
            let per_example: Vec<RougeScores> = b["per_example"]
                .as_array()
                .unwrap()
                .iter()
                .map(scores_of)
                .collect();
            let n_samples = b["n_samples"].as_u64().unwrap() as usize;
            let seed = b["seed"].as_u64().unwrap() as u32;
            let got = aggregate(&per_example, n_samples, seed).unwrap();
            let got = [got.rouge1, got.rouge2, got.rougeL, got.rougeLsum];
            for (t, g) in RougeScores::TYPES.iter().zip(got) {
                let w = &b["result"][t];
                let want = [
                    score_of(&w["low"]),
                    score_of(&w["mid"]),
                    score_of(&w["high"]),
                ];
                let (_, d) = compare(
                    &format!("{name} {t}"),
                    &[g.low, g.mid, g.high],
                    &want,
                    &mut failures,
                );
                worst = worst.max(d);
            }
        }
        println!("bootstrap: max |rust - python| = {worst:e}");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// When every example has the same scores, every bootstrap mean is that score (up to the
    /// rounding of summing n copies and dividing by n), so low = mid = high = the plain mean.
    #[test]
    fn bootstrap_of_equal_scores_is_the_mean() {
        let s = score(
            "the cat sat on the mat today",
            &["a cat sat on a mat"],
            true,
        );
        for n in [1, 5, 33] {
            let agg = aggregate(&vec![s; n], 1000, 11).unwrap();
            for (a, want) in [agg.rouge1, agg.rouge2, agg.rougeL, agg.rougeLsum]
                .iter()
                .zip(s.as_array())
            {
                for bound in [a.low, a.mid, a.high] {
                    assert!((bound.precision - want.precision).abs() < 1e-12);
                    assert!((bound.recall - want.recall).abs() < 1e-12);
                    assert!((bound.fmeasure - want.fmeasure).abs() < 1e-12);
                }
            }
        }
        assert!(aggregate(&[], 1000, 0).is_none());
        assert!(aggregate(&[s], 0, 0).is_none());
    }
}
