//! Per-example length and failure analysis of generated summaries.
//!
//! [`analyze`] measures one example (word counts, compression ratio, length ratio against the
//! reference) and flags the failure [`Category`]s a reviewer can act on, each with a severity
//! used for ranking; [`summarize_failures`] counts the categories over a set of analyses and lists
//! the worst examples of each.
//!
//! # Words
//!
//! A *word* is a maximal run of Unicode alphanumeric characters (`char::is_alphanumeric`, so
//! letters of any script and digits), where an apostrophe (`'` U+0027 or `’` U+2019) directly
//! between two alphanumeric characters stays inside the word (`don't`, `Tom’s`). Everything else
//! (whitespace, punctuation, hyphens, emoji, combining marks) separates words, so `e-mail` is two
//! words and `18:30` is `18`, `30`. Comparisons use Rust's `str::to_lowercase` with `’` mapped to
//! `'`.
//!
//! # Categories and their rules
//!
//! With `p`, `r`, `d` the word counts of prediction, reference and dialogue and `t` the
//! [`Thresholds`]:
//!
//! | category | flagged when | severity |
//! |---|---|---|
//! | [`Category::Empty`] | `p == 0` | `1.0` |
//! | [`Category::TooShort`] | `p > 0`, `r > 0`, `p < t.too_short_ratio × r` | `r / p` |
//! | [`Category::TooLong`] | `r > 0`, `p > t.too_long_ratio × r` | `p / r` |
//! | [`Category::Repetition`] | some `t.repeat_ngram`-gram occurs `≥ t.repeat_min` times | repeated share |
//! | [`Category::LikelyHallucination`] | `≥ t.min_unsupported` unsupported numbers + names | that count |
//! | [`Category::TruncatedInput`] | `input_tokens > max_input_tokens` | share of input tokens cut |
//!
//! - *Repetition*: n-grams of the lowercased prediction words; the severity is the share of the
//!   prediction's n-gram positions that repeat an earlier occurrence of a flagged n-gram
//!   (`Σ (count − 1) / number of n-grams`, in `(0, 1)`).
//! - *Unsupported numbers*: each maximal run of numeric characters (`char::is_numeric`) in the
//!   prediction that is not also such a run in the dialogue (`5pm` and `5 pm` both give `5`;
//!   digits of different scripts are not unified and number words such as `five` are not numbers).
//! - *Unsupported names*: a prediction word is a *name* when its first character is uppercase
//!   (`char::is_uppercase`), it contains no numeric character, it is not in
//!   [`Thresholds::ignore_capitalized`] (case-insensitive), and it is not at a sentence start. A
//!   word is at a sentence start when it is the first word of the prediction or when the text
//!   between it and the previous word contains `.`, `!`, `?`, `…` or a line break (so `Mr. Smith`
//!   skips `Smith`, and sentence-initial names are never checked). A name is supported when its
//!   lowercase form, or that form without a trailing possessive `'s`, equals a lowercased dialogue
//!   word or a dialogue word without its possessive `'s`.
//! - Unsupported numbers and names are reported once each, in order of first occurrence, as
//!   written at that occurrence.
//! - Empty excludes TooShort; when the reference has no words neither length category applies and
//!   `length_ratio` is `None`.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One evaluated example: the source dialogue, the reference summary and the model's summary.
#[derive(Clone, Debug)]
pub struct Example<'a> {
    pub id: String,
    pub dialogue: &'a str,
    pub reference: &'a str,
    pub prediction: &'a str,
    /// Tokens of the encoded dialogue before truncation.
    pub input_tokens: usize,
    /// The model's input window (tokens kept after truncation).
    pub max_input_tokens: usize,
    /// Tokens the model generated, when known (reported as is).
    pub prediction_tokens: Option<usize>,
}

/// Thresholds of the failure categories (see the module documentation for the exact rules).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// TooShort when prediction words < `too_short_ratio` × reference words. Default `0.5`.
    pub too_short_ratio: f64,
    /// TooLong when prediction words > `too_long_ratio` × reference words. Default `2.0`.
    pub too_long_ratio: f64,
    /// n of the n-grams checked for Repetition; `0` turns the check off. Default `3`.
    pub repeat_ngram: usize,
    /// Repetition when one n-gram occurs at least `repeat_min` times (values below 2 count as 2).
    /// Default `2`.
    pub repeat_min: usize,
    /// LikelyHallucination when at least this many distinct numbers and names of the prediction
    /// are missing from the dialogue; `0` counts as `1`. Default `1`.
    pub min_unsupported: usize,
    /// Capitalized words never treated as names (compared case-insensitively). Default: `I`,
    /// `I'm`, `I'll`, `I've`, `I'd`, `OK`, `Mr`, `Mrs`, `Ms`, `Dr`, `TV`.
    pub ignore_capitalized: Vec<String>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            too_short_ratio: 0.5,
            too_long_ratio: 2.0,
            repeat_ngram: 3,
            repeat_min: 2,
            min_unsupported: 1,
            ignore_capitalized: [
                "I", "I'm", "I'll", "I've", "I'd", "OK", "Mr", "Mrs", "Ms", "Dr", "TV",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// A failure category. Serialized as snake_case strings (`"too_short"`, ...).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The prediction has no words.
    Empty,
    /// Under-summarization: far fewer words than the reference.
    TooShort,
    /// Over-summarization: far more words than the reference.
    TooLong,
    /// A repeated n-gram in the prediction.
    Repetition,
    /// Numbers or capitalized names of the prediction that the dialogue never mentions.
    LikelyHallucination,
    /// The dialogue was longer than the model's input window.
    TruncatedInput,
}

impl Category {
    /// Every category, in declaration order.
    pub const ALL: [Category; 6] = [
        Category::Empty,
        Category::TooShort,
        Category::TooLong,
        Category::Repetition,
        Category::LikelyHallucination,
        Category::TruncatedInput,
    ];
}

/// Word counts (see the module documentation for what a word is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WordCounts {
    pub prediction: usize,
    pub reference: usize,
    pub dialogue: usize,
}

/// An n-gram of the prediction (lowercased words joined by one space) and how often it occurs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RepeatedNgram {
    pub ngram: String,
    pub count: usize,
}

/// The analysis of one example.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExampleAnalysis {
    pub id: String,
    pub words: WordCounts,
    /// Generated tokens, copied from [`Example::prediction_tokens`].
    pub prediction_tokens: Option<usize>,
    pub input_tokens: usize,
    pub max_input_tokens: usize,
    /// Dialogue words / prediction words; `None` when the prediction has no words.
    pub compression_ratio: Option<f64>,
    /// Prediction words / reference words; `None` when the reference has no words.
    pub length_ratio: Option<f64>,
    /// Flagged categories, in [`Category::ALL`] order.
    pub categories: Vec<Category>,
    /// Severity of each flagged category (higher is worse; the scale differs per category).
    pub severity: BTreeMap<Category, f64>,
    /// Repeated n-grams, most frequent first (first occurrence on ties).
    pub repeated_ngrams: Vec<RepeatedNgram>,
    /// Numbers of the prediction that do not occur in the dialogue.
    pub unsupported_numbers: Vec<String>,
    /// Capitalized names of the prediction that do not occur in the dialogue.
    pub unsupported_names: Vec<String>,
}

impl ExampleAnalysis {
    /// Whether `category` was flagged.
    pub fn has(&self, category: Category) -> bool {
        self.severity.contains_key(&category)
    }

    /// The severity of `category`, `None` when not flagged.
    pub fn severity_of(&self, category: Category) -> Option<f64> {
        self.severity.get(&category).copied()
    }
}

/// One of the worst examples of a category.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RankedExample {
    pub id: String,
    pub severity: f64,
}

/// Category counts over a set of analyses and the worst examples of each category.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FailureReport {
    /// Number of analyses.
    pub total: usize,
    /// Analyses with at least one category.
    pub flagged: usize,
    /// Analyses per category (every category present, zero included).
    pub counts: BTreeMap<Category, usize>,
    /// Per category (every category present), at most `worst_k` examples by severity, highest
    /// first, ties by id ascending.
    pub worst: BTreeMap<Category, Vec<RankedExample>>,
}

/// One word with its byte span in the text.
struct Word<'t> {
    text: &'t str,
    start: usize,
    end: usize,
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Words as described in the module documentation.
fn words(text: &str) -> Vec<Word<'_>> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].1.is_alphanumeric() {
            i += 1;
            continue;
        }
        let start = chars[i].0;
        let mut j = i + 1;
        while j < chars.len() {
            let c = chars[j].1;
            if c.is_alphanumeric()
                || (is_apostrophe(c) && j + 1 < chars.len() && chars[j + 1].1.is_alphanumeric())
            {
                j += 1;
            } else {
                break;
            }
        }
        let end = chars.get(j).map_or(text.len(), |&(b, _)| b);
        out.push(Word {
            text: &text[start..end],
            start,
            end,
        });
        i = j;
    }
    out
}

fn normalize(word: &str) -> String {
    word.to_lowercase().replace('\u{2019}', "'")
}

fn strip_possessive(word: &str) -> &str {
    word.strip_suffix("'s")
        .filter(|w| !w.is_empty())
        .unwrap_or(word)
}

/// Maximal runs of numeric characters.
fn numbers(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (b, c) in text.char_indices() {
        match (c.is_numeric(), start) {
            (true, None) => start = Some(b),
            (false, Some(s)) => {
                out.push(&text[s..b]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

fn repeated_ngrams(lower: &[String], n: usize, min: usize) -> (Vec<RepeatedNgram>, f64) {
    if n == 0 || lower.len() < n {
        return (Vec::new(), 0.0);
    }
    let min = min.max(2);
    let total = lower.len() - n + 1;
    // (count, first position) per n-gram.
    let mut seen: HashMap<&[String], (usize, usize)> = HashMap::new();
    for (pos, gram) in lower.windows(n).enumerate() {
        seen.entry(gram).or_insert((0, pos)).0 += 1;
    }
    let mut found: Vec<(usize, usize, String)> = seen
        .into_iter()
        .filter(|(_, (count, _))| *count >= min)
        .map(|(gram, (count, first))| (count, first, gram.join(" ")))
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let extra: usize = found.iter().map(|(count, _, _)| count - 1).sum();
    let share = extra as f64 / total as f64;
    let list = found
        .into_iter()
        .map(|(count, _, ngram)| RepeatedNgram { ngram, count })
        .collect();
    (list, share)
}

/// Analyzes one example against the thresholds (rules in the module documentation).
pub fn analyze(example: &Example, t: &Thresholds) -> ExampleAnalysis {
    let pred_words = words(example.prediction);
    let dialogue_words = words(example.dialogue);
    let counts = WordCounts {
        prediction: pred_words.len(),
        reference: words(example.reference).len(),
        dialogue: dialogue_words.len(),
    };
    let p = counts.prediction as f64;
    let r = counts.reference as f64;
    let compression_ratio = (counts.prediction > 0).then(|| counts.dialogue as f64 / p);
    let length_ratio = (counts.reference > 0).then(|| p / r);

    let mut severity = BTreeMap::new();
    if counts.prediction == 0 {
        severity.insert(Category::Empty, 1.0);
    }
    if counts.reference > 0 {
        if counts.prediction > 0 && p < t.too_short_ratio * r {
            severity.insert(Category::TooShort, r / p);
        }
        if p > t.too_long_ratio * r {
            severity.insert(Category::TooLong, p / r);
        }
    }

    let lower: Vec<String> = pred_words.iter().map(|w| normalize(w.text)).collect();
    let (repeated, share) = repeated_ngrams(&lower, t.repeat_ngram, t.repeat_min);
    if !repeated.is_empty() {
        severity.insert(Category::Repetition, share);
    }

    // Numbers.
    let dialogue_numbers: HashSet<&str> = numbers(example.dialogue).into_iter().collect();
    let mut unsupported_numbers: Vec<String> = Vec::new();
    for n in numbers(example.prediction) {
        if !dialogue_numbers.contains(n) && !unsupported_numbers.iter().any(|u| u == n) {
            unsupported_numbers.push(n.to_string());
        }
    }

    // Names.
    let mut vocabulary: HashSet<String> = HashSet::new();
    for w in &dialogue_words {
        let lw = normalize(w.text);
        vocabulary.insert(strip_possessive(&lw).to_string());
        vocabulary.insert(lw);
    }
    let ignored: HashSet<String> = t.ignore_capitalized.iter().map(|s| normalize(s)).collect();
    let mut unsupported_names: Vec<String> = Vec::new();
    let mut seen_names: HashSet<&str> = HashSet::new();
    for (i, w) in pred_words.iter().enumerate() {
        let sentence_start = i == 0 || {
            let gap = &example.prediction[pred_words[i - 1].end..w.start];
            gap.contains(['.', '!', '?', '…', '\n', '\r'])
        };
        let first_upper = w.text.chars().next().is_some_and(char::is_uppercase);
        if sentence_start || !first_upper || w.text.chars().any(char::is_numeric) {
            continue;
        }
        let lw = &lower[i];
        if ignored.contains(lw) || ignored.contains(strip_possessive(lw)) {
            continue;
        }
        let supported =
            vocabulary.contains(lw.as_str()) || vocabulary.contains(strip_possessive(lw));
        if !supported && seen_names.insert(strip_possessive(lw)) {
            unsupported_names.push(w.text.to_string());
        }
    }
    let unsupported = unsupported_numbers.len() + unsupported_names.len();
    if unsupported > 0 && unsupported >= t.min_unsupported.max(1) {
        severity.insert(Category::LikelyHallucination, unsupported as f64);
    }

    if example.input_tokens > example.max_input_tokens {
        let cut = example.input_tokens - example.max_input_tokens;
        severity.insert(
            Category::TruncatedInput,
            cut as f64 / example.input_tokens as f64,
        );
    }

    ExampleAnalysis {
        id: example.id.clone(),
        words: counts,
        prediction_tokens: example.prediction_tokens,
        input_tokens: example.input_tokens,
        max_input_tokens: example.max_input_tokens,
        compression_ratio,
        length_ratio,
        categories: severity.keys().copied().collect(),
        severity,
        repeated_ngrams: repeated,
        unsupported_numbers,
        unsupported_names,
    }
}

/// Counts the categories and keeps, per category, the `worst_k` examples with the highest
/// severity (ties broken by id ascending, so the report does not depend on input order).
pub fn summarize_failures(analyses: &[ExampleAnalysis], worst_k: usize) -> FailureReport {
    let mut counts: BTreeMap<Category, usize> = Category::ALL.iter().map(|&c| (c, 0)).collect();
    let mut worst: BTreeMap<Category, Vec<RankedExample>> =
        Category::ALL.iter().map(|&c| (c, Vec::new())).collect();
    let mut flagged = 0;
    for a in analyses {
        if !a.severity.is_empty() {
            flagged += 1;
        }
        for (&c, &s) in &a.severity {
            *counts.entry(c).or_insert(0) += 1;
            worst.entry(c).or_default().push(RankedExample {
                id: a.id.clone(),
                severity: s,
            });
        }
    }
    for list in worst.values_mut() {
        list.sort_by(|a, b| b.severity.total_cmp(&a.severity).then(a.id.cmp(&b.id)));
        list.truncate(worst_k);
    }
    FailureReport {
        total: analyses.len(),
        flagged,
        counts,
        worst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SAMSum validation 13864382.
    const FIESOLE_DIALOGUE: &str = "Theresa: have you been at Tom's new place?\nLuis: yes, it's nice\nMarion: He invited us for a dinner\nAdam: where is it?\nMarion: a bit outside the city\nAdam: where exactly?\nMarion: Fiesole\nLuis: very nice!";
    const FIESOLE_SUMMARY: &str = "Tom's new place is in Fiesole. Luis and Marion has been there. ";
    // SAMSum validation 13728448.
    const CABLE_DIALOGUE: &str = "Robert: Hey give me the address of this music shop you mentioned before\nRobert: I have to buy guitar cable\nFred: <file_other>\nFred: Catch it on google maps\nRobert: thx m8\nFred: ur welcome";
    const CABLE_SUMMARY: &str = "Robert wants Fred to send him the address of the music shop as he needs to buy guitar cable.";

    fn example<'a>(
        id: &str,
        dialogue: &'a str,
        reference: &'a str,
        prediction: &'a str,
    ) -> Example<'a> {
        Example {
            id: id.to_string(),
            dialogue,
            reference,
            prediction,
            input_tokens: 60,
            max_input_tokens: 1024,
            prediction_tokens: None,
        }
    }

    fn run(dialogue: &str, reference: &str, prediction: &str) -> ExampleAnalysis {
        analyze(
            &example("x", dialogue, reference, prediction),
            &Thresholds::default(),
        )
    }

    #[test]
    fn word_rule() {
        let w: Vec<&str> = words("Tom’s e-mail: don't 'quoted' 18:30, Zoë 👍 東京!")
            .iter()
            .map(|w| w.text)
            .collect();
        assert_eq!(
            w,
            ["Tom’s", "e", "mail", "don't", "quoted", "18", "30", "Zoë", "東京"]
        );
        assert_eq!(numbers("at 5pm or 10.30, ٣"), ["5", "10", "30", "٣"]);
    }

    #[test]
    fn reference_summaries_are_clean() {
        let a = run(FIESOLE_DIALOGUE, FIESOLE_SUMMARY, FIESOLE_SUMMARY);
        assert!(a.categories.is_empty(), "{a:?}");
        assert_eq!(a.words.prediction, 12);
        assert_eq!(a.words.reference, 12);
        assert_eq!(a.length_ratio, Some(1.0));
        assert_eq!(a.compression_ratio, Some(a.words.dialogue as f64 / 12.0));
        let a = run(CABLE_DIALOGUE, CABLE_SUMMARY, CABLE_SUMMARY);
        assert!(a.categories.is_empty(), "{a:?}");
        assert!(a.unsupported_names.is_empty() && a.unsupported_numbers.is_empty());
    }

    #[test]
    fn empty_prediction() {
        for pred in ["", "   \n", " ... !? "] {
            let a = run(CABLE_DIALOGUE, CABLE_SUMMARY, pred);
            assert_eq!(a.categories, [Category::Empty], "{pred:?}");
            assert_eq!(a.severity_of(Category::Empty), Some(1.0));
            assert_eq!(a.compression_ratio, None);
            assert_eq!(a.length_ratio, Some(0.0));
        }
        // Everything empty: only Empty, no ratios, no panic.
        let a = run("", "", "");
        assert_eq!(a.categories, [Category::Empty]);
        assert_eq!(a.words, WordCounts::default());
        assert_eq!((a.compression_ratio, a.length_ratio), (None, None));
        // Empty reference: no length categories.
        let a = run(CABLE_DIALOGUE, "", CABLE_SUMMARY);
        assert!(a.categories.is_empty());
        assert_eq!(a.length_ratio, None);
    }

    #[test]
    fn too_short_and_too_long() {
        // 19 reference words.
        let a = run(CABLE_DIALOGUE, CABLE_SUMMARY, "Robert needs a cable.");
        assert_eq!(a.categories, [Category::TooShort]);
        assert_eq!(a.severity_of(Category::TooShort), Some(19.0 / 4.0));
        // 0.5 × 19 = 9.5: 9 words are too short, 10 are not.
        let a = run(
            CABLE_DIALOGUE,
            CABLE_SUMMARY,
            "Robert needs the music shop address from Fred.",
        );
        assert_eq!(a.words.prediction, 8);
        assert!(a.has(Category::TooShort));
        let a = run(
            CABLE_DIALOGUE,
            CABLE_SUMMARY,
            "Robert needs the music shop address from Fred now.",
        );
        assert_eq!(a.words.prediction, 9);
        assert!(a.has(Category::TooShort));
        let a = run(
            CABLE_DIALOGUE,
            CABLE_SUMMARY,
            "Robert needs the music shop address from Fred right now.",
        );
        assert_eq!(a.words.prediction, 10);
        assert!(!a.has(Category::TooShort));

        // 12 reference words; 25 > 24 words is too long, 24 is not.
        let long = "Luis and Marion have been at Tom's new place, which is a bit outside the city in Fiesole, and they think that it is nice";
        let a = run(FIESOLE_DIALOGUE, FIESOLE_SUMMARY, long);
        assert_eq!(a.words.prediction, 25);
        assert_eq!(a.categories, [Category::TooLong]);
        assert_eq!(a.severity_of(Category::TooLong), Some(25.0 / 12.0));
        let a = run(
            FIESOLE_DIALOGUE,
            FIESOLE_SUMMARY,
            long.strip_suffix(" nice").unwrap(),
        );
        assert!(!a.has(Category::TooLong));
    }

    #[test]
    fn repetition() {
        let pred = "Robert needs the address of the music shop. Robert needs the address of the music shop. Robert needs the address.";
        let a = run(CABLE_DIALOGUE, CABLE_SUMMARY, pred);
        assert_eq!(a.categories, [Category::Repetition]);
        assert_eq!(
            a.repeated_ngrams[0],
            RepeatedNgram {
                ngram: "robert needs the".into(),
                count: 3
            }
        );
        assert_eq!(a.repeated_ngrams.len(), 8);
        // 20 words -> 18 trigrams; extra occurrences: 2 + 2 + 1 × 6.
        assert_eq!(a.severity_of(Category::Repetition), Some(10.0 / 18.0));

        // Case-insensitive.
        let a = run(
            CABLE_DIALOGUE,
            CABLE_SUMMARY,
            "Buy guitar cable. buy Guitar CABLE.",
        );
        assert!(a.has(Category::Repetition));
        // A repeated bigram is not a repeated trigram.
        let a = run(
            CABLE_DIALOGUE,
            CABLE_SUMMARY,
            "Robert wants a guitar cable and Fred sends him a guitar shop address.",
        );
        assert!(!a.has(Category::Repetition), "{a:?}");
        let t = Thresholds {
            repeat_ngram: 2,
            ..Thresholds::default()
        };
        let ex = example(
            "x",
            CABLE_DIALOGUE,
            CABLE_SUMMARY,
            "Robert wants a guitar cable and Fred sends him a guitar shop address.",
        );
        assert_eq!(
            analyze(&ex, &t).repeated_ngrams,
            [RepeatedNgram {
                ngram: "a guitar".into(),
                count: 2
            }]
        );
        // repeat_min 3: two occurrences are not enough.
        let t = Thresholds {
            repeat_min: 3,
            ..Thresholds::default()
        };
        let ex = example(
            "x",
            CABLE_DIALOGUE,
            CABLE_SUMMARY,
            "Buy guitar cable. buy Guitar CABLE.",
        );
        assert!(!analyze(&ex, &t).has(Category::Repetition));
    }

    #[test]
    fn likely_hallucination() {
        let pred = "Robert wants Fred to send him the address of the music shop in Berlin by 5 pm.";
        let a = run(CABLE_DIALOGUE, CABLE_SUMMARY, pred);
        assert_eq!(a.categories, [Category::LikelyHallucination]);
        assert_eq!(a.unsupported_names, ["Berlin"]);
        assert_eq!(a.unsupported_numbers, ["5"]);
        assert_eq!(a.severity_of(Category::LikelyHallucination), Some(2.0));

        // Names compared case-insensitively ("google" in the dialogue), possessives stripped,
        // "8" supported by "m8", "I" ignored, sentence-initial words skipped ("Yesterday").
        let pred =
            "Yesterday Robert's friend Fred said I should check Google Maps. He wrote 8 times.";
        let a = run(CABLE_DIALOGUE, CABLE_SUMMARY, pred);
        assert!(!a.has(Category::LikelyHallucination), "{a:?}");

        // Each unsupported item once, as first written.
        let pred = "Robert asks Anna and Anna's friend ANNA about shop 12, 12 and 13.";
        let a = run(CABLE_DIALOGUE, CABLE_SUMMARY, pred);
        assert_eq!(a.unsupported_names, ["Anna"]);
        assert_eq!(a.unsupported_numbers, ["12", "13"]);

        // Threshold.
        let t = Thresholds {
            min_unsupported: 4,
            ..Thresholds::default()
        };
        let ex = example("x", CABLE_DIALOGUE, CABLE_SUMMARY, pred);
        assert!(!analyze(&ex, &t).has(Category::LikelyHallucination));
        let t = Thresholds {
            min_unsupported: 3,
            ..Thresholds::default()
        };
        assert!(analyze(&ex, &t).has(Category::LikelyHallucination));
    }

    #[test]
    fn truncated_input() {
        let mut ex = example("x", FIESOLE_DIALOGUE, FIESOLE_SUMMARY, FIESOLE_SUMMARY);
        ex.input_tokens = 1024;
        assert!(!analyze(&ex, &Thresholds::default()).has(Category::TruncatedInput));
        ex.input_tokens = 1280;
        let a = analyze(&ex, &Thresholds::default());
        assert_eq!(a.categories, [Category::TruncatedInput]);
        assert_eq!(a.severity_of(Category::TruncatedInput), Some(0.2));
        ex.max_input_tokens = 0;
        let a = analyze(&ex, &Thresholds::default());
        assert_eq!(a.severity_of(Category::TruncatedInput), Some(1.0));
    }

    #[test]
    fn several_categories_in_order() {
        let mut ex = example(
            "x",
            FIESOLE_DIALOGUE,
            FIESOLE_SUMMARY,
            "Luis went to Rome. Luis went to Rome. Luis went to Rome. Luis went to Rome. Luis went to Rome. Luis went to Rome. Luis went to Rome.",
        );
        ex.input_tokens = 2048;
        let a = analyze(&ex, &Thresholds::default());
        assert_eq!(
            a.categories,
            [
                Category::TooLong,
                Category::Repetition,
                Category::LikelyHallucination,
                Category::TruncatedInput
            ]
        );
        assert_eq!(a.unsupported_names, ["Rome"]);
    }

    #[test]
    fn unicode() {
        let dialogue = "Zoë: Kuba, spotkajmy się jutro w łodzi o 18:30!\nKuba: OK 👍 Zoë’s café?";
        let reference = "Zoë i Kuba spotkają się jutro o 18:30 w Łodzi w kawiarni.";
        let pred = "Jutro Zoë i Kuba spotkają się w Łodzi o 18:30 w Zoë's café.";
        let a = run(dialogue, reference, pred);
        assert!(a.categories.is_empty(), "{a:?}");
        assert_eq!(a.words.prediction, 14);
        assert_eq!(a.words.reference, 13);

        let pred = "Jutro Zoë i Ola spotkają się w Gdańsku o 19:30. Ölfabrik też.";
        let a = run(dialogue, reference, pred);
        assert_eq!(a.categories, [Category::LikelyHallucination]);
        assert_eq!(a.unsupported_names, ["Ola", "Gdańsku"]);
        assert_eq!(a.unsupported_numbers, ["19"]);

        // Scripts without case give no names; CJK runs are single words.
        let a = run("甲：明天见。", "明天见面。", "他们 明天 见面 在 东京。");
        assert!(a.unsupported_names.is_empty());
        assert_eq!(a.words.prediction, 5);
        assert_eq!(a.categories, [Category::TooLong]);
    }

    fn ranked(report: &FailureReport, c: Category) -> Vec<(&str, f64)> {
        report.worst[&c]
            .iter()
            .map(|r| (r.id.as_str(), r.severity))
            .collect()
    }

    #[test]
    fn report_counts_and_deterministic_ranking() {
        let t = Thresholds::default();
        let preds = [
            ("e1", "Robert needs a cable."), // too short 19/4
            ("e2", "Robert needs cable."),   // too short 19/3
            ("e3", ""),                      // empty
            ("e4", "Robert needs it."),      // too short 19/3 (tie with e2)
            ("e0", "Robert buys cable."),    // too short 19/3 (tie)
            ("e5", CABLE_SUMMARY),           // clean
            (
                "e6",
                "Robert wants Fred to send him the address of the music shop in Berlin.",
            ),
        ];
        let analyses: Vec<ExampleAnalysis> = preds
            .iter()
            .map(|(id, p)| analyze(&example(id, CABLE_DIALOGUE, CABLE_SUMMARY, p), &t))
            .collect();
        let report = summarize_failures(&analyses, 3);
        assert_eq!(report.total, 7);
        assert_eq!(report.flagged, 6);
        assert_eq!(report.counts[&Category::TooShort], 4);
        assert_eq!(report.counts[&Category::Empty], 1);
        assert_eq!(report.counts[&Category::LikelyHallucination], 1);
        assert_eq!(report.counts[&Category::TruncatedInput], 0);
        assert_eq!(report.counts.len(), Category::ALL.len());
        assert_eq!(
            ranked(&report, Category::TooShort),
            [("e0", 19.0 / 3.0), ("e2", 19.0 / 3.0), ("e4", 19.0 / 3.0)]
        );
        assert_eq!(ranked(&report, Category::Empty), [("e3", 1.0)]);
        assert!(report.worst[&Category::Repetition].is_empty());

        // Any input order gives the same report.
        let mut reversed = analyses.clone();
        reversed.reverse();
        assert_eq!(summarize_failures(&reversed, 3), report);
        let mut rotated = analyses.clone();
        rotated.rotate_left(3);
        assert_eq!(summarize_failures(&rotated, 3), report);

        // worst_k 0 keeps counts only; nothing in, nothing out.
        let r = summarize_failures(&analyses, 0);
        assert!(r.worst.values().all(Vec::is_empty));
        assert_eq!(r.counts, report.counts);
        let r = summarize_failures(&[], 5);
        assert_eq!((r.total, r.flagged), (0, 0));
        assert!(r.counts.values().all(|&c| c == 0));
    }

    #[test]
    fn serializes_snake_case() {
        let a = run(CABLE_DIALOGUE, CABLE_SUMMARY, "Robert needs a cable.");
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["categories"], serde_json::json!(["too_short"]));
        assert_eq!(v["severity"]["too_short"], serde_json::json!(4.75));
        let r = summarize_failures(&[a], 1);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["counts"]["likely_hallucination"], serde_json::json!(0));
        assert_eq!(v["worst"]["too_short"][0]["id"], serde_json::json!("x"));
        assert_eq!(
            serde_json::to_value(Category::TruncatedInput).unwrap(),
            serde_json::json!("truncated_input")
        );
    }
}
