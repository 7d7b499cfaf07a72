//! Long inputs: what to do with a dialogue longer than the model's input window.
//!
//! - [`LongMode::Truncate`] (the default): cut the input at the window, as transformers does —
//!   exact parity, the end of a long meeting never reaches the summary.
//! - [`LongMode::Chunk`]: split the dialogue at turn boundaries (its lines) into windows that
//!   fit, summarize each, join the partial summaries (one per line) and summarize again,
//!   recursively, until the joined text fits; that last summary is the output. A turn longer
//!   than a window alone is cut at sentence ends, and a sentence longer than a window at token
//!   boundaries. An input that fits is summarized exactly as [`LongMode::Truncate`] would (the
//!   same ids). Windows may repeat whole turns of the previous one ([`LongOptions::overlap_tokens`]).
//!
//! The splitting ([`split`]) is plain text work over a token counter, so it is tested without a
//! model; [`crate::Summarizer::summarize_long_async`] runs it with the model's tokenizer and
//! batches the windows of every input together.

use crate::{Error, Result};
use std::ops::Range;

/// How inputs longer than the window are handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongMode {
    #[default]
    Truncate,
    Chunk,
}

impl LongMode {
    pub fn name(self) -> &'static str {
        match self {
            LongMode::Truncate => "truncate",
            LongMode::Chunk => "chunk",
        }
    }
}

impl std::str::FromStr for LongMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "truncate" => Ok(LongMode::Truncate),
            "chunk" => Ok(LongMode::Chunk),
            other => Err(Error::Input(format!(
                "long: expected truncate or chunk, got {other:?}"
            ))),
        }
    }
}

/// How long inputs are summarized.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LongOptions {
    pub mode: LongMode,
    /// Chunk: the last whole turns of a window are repeated at the start of the next one, as
    /// many as fit in this many tokens (0: windows do not overlap). Must be smaller than the
    /// input window.
    #[serde(default)]
    pub overlap_tokens: usize,
    /// Chunk: `max_new_tokens` of the partial summaries (`None`: the same settings as the final
    /// summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_max_new_tokens: Option<usize>,
}

/// The most levels of summaries of summaries before giving up (each level must shorten the
/// text, so real inputs stop long before: 19,000 tokens in 512-token windows take 3).
pub const MAX_LEVELS: usize = 12;

impl LongOptions {
    /// Checks the options against the model's input window.
    pub fn validate(&self, max_input_tokens: usize) -> Result<()> {
        if self.mode == LongMode::Chunk && self.overlap_tokens >= max_input_tokens {
            return Err(Error::Input(format!(
                "chunk overlap {} must be smaller than the input window ({max_input_tokens} tokens)",
                self.overlap_tokens
            )));
        }
        if self.partial_max_new_tokens == Some(0) {
            return Err(Error::Input(
                "partial summaries' max_new_tokens must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// How one output was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LongInfo {
    /// Tokens of the whole input as the model would read it (special tokens and prefix included).
    pub input_tokens: usize,
    /// Truncate: whether the input was cut at the window.
    pub truncated: bool,
    /// First-level windows (1 for an input that fits).
    pub chunks: usize,
    /// Rounds of summarization (1 for an input that fits; 2 = windows, then their joined summaries).
    pub levels: usize,
}

/// The turns of a dialogue: its non-blank lines, as byte ranges of `text` (line ends and
/// surrounding blanks left out).
pub fn turns(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let trimmed = line.trim();
        if !trimmed.is_empty() {
            let lead = line.len() - line.trim_start().len();
            out.push(start + lead..start + lead + trimmed.len());
        }
        start = end;
    }
    out
}

/// The sentences of `text[range]`: cut after `.`, `?` or `!` (and closing quotes or brackets)
/// followed by white space.
pub fn sentences(text: &str, range: Range<usize>) -> Vec<Range<usize>> {
    let s = &text[range.clone()];
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    let mut after_end = false;
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '?' | '!') {
            after_end = true;
        } else if after_end && c.is_whitespace() {
            let piece = s[start..i].trim();
            if !piece.is_empty() {
                let lead = s[start..i].len() - s[start..i].trim_start().len();
                out.push(range.start + start + lead..range.start + start + lead + piece.len());
            }
            start = i;
            after_end = false;
        } else if !matches!(c, '"' | '\'' | ')' | ']' | '”' | '’') {
            after_end = false;
        }
    }
    let piece = s[start..].trim();
    if !piece.is_empty() {
        let lead = s[start..].len() - s[start..].trim_start().len();
        out.push(range.start + start + lead..range.start + start + lead + piece.len());
    }
    out
}

/// What [`split`] needs of a tokenizer.
pub trait TokenCounter {
    /// Tokens the model reads for `text` as a whole input (special tokens and prefix included).
    fn input_tokens(&self, text: &str) -> Result<usize>;
    /// Byte offsets in `text` where its tokens start.
    fn token_starts(&self, text: &str) -> Result<Vec<usize>>;
}

/// Splits `text` into windows (byte ranges of `text`) that each fit `max_input_tokens` as a
/// whole input: whole turns packed greedily in order, a turn too long for a window cut at sentence
/// ends, a sentence too long at token boundaries; with `overlap_tokens`, each window starts with
/// the last whole units of the previous one that fit in that many tokens. Every unit of text is
/// in some window, in order.
pub fn split(
    text: &str,
    counter: &dyn TokenCounter,
    max_input_tokens: usize,
    overlap_tokens: usize,
) -> Result<Vec<Range<usize>>> {
    let fits = |r: &Range<usize>| -> Result<bool> {
        Ok(counter.input_tokens(&text[r.clone()])? <= max_input_tokens)
    };
    let base = counter.input_tokens("")?;
    if base >= max_input_tokens {
        return Err(Error::Input(format!(
            "an input window of {max_input_tokens} tokens leaves no room for text after the \
             special tokens and prefix ({base} tokens)"
        )));
    }
    // Units: turns, or the pieces of a turn too long for a window.
    let mut units: Vec<Range<usize>> = Vec::new();
    for turn in turns(text) {
        if fits(&turn)? {
            units.push(turn);
            continue;
        }
        for sentence in sentences(text, turn) {
            if fits(&sentence)? {
                units.push(sentence);
            } else {
                units.extend(token_pieces(text, sentence, counter, max_input_tokens)?);
            }
        }
    }
    // Each unit's tokens with the separator before it, for packing estimates (checked exactly).
    let mut cost = Vec::with_capacity(units.len());
    for (i, u) in units.iter().enumerate() {
        let from = if i == 0 { u.start } else { units[i - 1].end };
        cost.push(counter.input_tokens(&text[from..u.end])? - base);
    }
    let mut windows: Vec<Range<usize>> = Vec::new();
    let mut spans: Vec<Range<usize>> = Vec::new(); // unit indices of each window
    let mut start = 0;
    while start < units.len() {
        let mut end = pack(&units, &cost, start, base, max_input_tokens);
        while !fits(&(units[start].start..units[end - 1].end))? {
            if end - start == 1 {
                // Cannot happen: every unit fits alone (checked above).
                return Err(Error::Input(
                    "a piece of text does not fit the window".into(),
                ));
            }
            end -= 1;
        }
        if let Some(prev) = spans.last() {
            if end <= prev.end {
                // The overlap left no room for new text: start after the previous window.
                start = prev.end;
                continue;
            }
        }
        windows.push(units[start].start..units[end - 1].end);
        spans.push(start..end);
        if end == units.len() {
            break;
        }
        // The next window: the last whole units of this one within `overlap_tokens`, never the
        // whole window (so every window brings new text).
        let mut next = end;
        let mut carried = 0;
        while next > start + 1 && carried + cost[next - 1] <= overlap_tokens {
            carried += cost[next - 1];
            next -= 1;
        }
        start = next;
    }
    Ok(windows)
}

/// The end (exclusive unit index) of the greedy window from `start` by estimated cost.
fn pack(units: &[Range<usize>], cost: &[usize], start: usize, base: usize, max: usize) -> usize {
    let mut used = base + cost[start].min(max);
    let mut end = start + 1;
    // The first unit of a window has no separator before it; its cost may include one.
    while end < units.len() && used + cost[end] <= max {
        used += cost[end];
        end += 1;
    }
    end
}

/// Cuts `text[range]` at token boundaries into pieces that each fit the window.
fn token_pieces(
    text: &str,
    range: Range<usize>,
    counter: &dyn TokenCounter,
    max_input_tokens: usize,
) -> Result<Vec<Range<usize>>> {
    let s = &text[range.clone()];
    let mut starts: Vec<usize> = counter
        .token_starts(s)?
        .into_iter()
        .filter(|&b| b < s.len() && s.is_char_boundary(b))
        .collect();
    starts.dedup();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let base = counter.input_tokens("")?;
    let budget = max_input_tokens - base;
    let mut out = Vec::new();
    let mut i = 0;
    while i < starts.len() {
        let mut take = budget.min(starts.len() - i);
        loop {
            let end = starts.get(i + take).copied().unwrap_or(s.len());
            let piece = range.start + starts[i]..range.start + end;
            let trimmed = text[piece.clone()].trim_end();
            let piece = piece.start..piece.start + trimmed.len();
            if piece.is_empty() || counter.input_tokens(&text[piece.clone()])? <= max_input_tokens {
                if !piece.is_empty() {
                    out.push(piece);
                }
                break;
            }
            if take == 1 {
                return Err(Error::Input(format!(
                    "an input window of {max_input_tokens} tokens cannot hold even one token of the text"
                )));
            }
            take -= 1;
        }
        i += take;
    }
    Ok(out)
}

/// The text of the next level: the partial summaries, one per line.
pub fn join_partials(partials: &[String]) -> String {
    partials
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per whitespace-separated word, plus 2 special tokens (like `<s> … </s>`).
    struct Words;
    impl TokenCounter for Words {
        fn input_tokens(&self, text: &str) -> Result<usize> {
            Ok(text.split_whitespace().count() + 2)
        }
        fn token_starts(&self, text: &str) -> Result<Vec<usize>> {
            let mut out = Vec::new();
            let mut prev_ws = true;
            for (i, c) in text.char_indices() {
                if !c.is_whitespace() && prev_ws {
                    out.push(i);
                }
                prev_ws = c.is_whitespace();
            }
            Ok(out)
        }
    }

    fn dialogue(turns: &[usize]) -> String {
        turns
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let words: Vec<String> = (0..n).map(|w| format!("w{i}_{w}")).collect();
                format!("S{i}: {}", words.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn turns_are_non_blank_lines() {
        let t = "A: hi\r\n\n  B: yo  \nC: x";
        let r: Vec<&str> = turns(t).into_iter().map(|r| &t[r]).collect();
        assert_eq!(r, ["A: hi", "B: yo", "C: x"]);
    }

    #[test]
    fn sentences_cut_after_end_marks() {
        let t = "Well. Is it? \"Yes!\" he said...  ok 3.5 times";
        let r: Vec<&str> = sentences(t, 0..t.len())
            .into_iter()
            .map(|r| &t[r])
            .collect();
        assert_eq!(
            r,
            ["Well.", "Is it?", "\"Yes!\"", "he said...", "ok 3.5 times"]
        );
    }

    #[test]
    fn windows_keep_turns_whole_and_fit() {
        let text = dialogue(&[5, 9, 3, 12, 7, 1, 8, 4, 6, 10]);
        for max in [16, 20, 31, 50] {
            let windows = split(&text, &Words, max, 0).unwrap();
            let turn_set = turns(&text);
            let mut covered = Vec::new();
            for w in &windows {
                assert!(
                    Words.input_tokens(&text[w.clone()]).unwrap() <= max,
                    "{max}"
                );
                // Starts and ends on turn boundaries.
                assert!(turn_set.iter().any(|t| t.start == w.start));
                assert!(turn_set.iter().any(|t| t.end == w.end));
                covered.extend(
                    turn_set
                        .iter()
                        .filter(|t| t.start >= w.start && t.end <= w.end),
                );
            }
            // Every turn once, in order (no overlap asked).
            assert_eq!(covered, turn_set.iter().collect::<Vec<_>>(), "{max}");
        }
    }

    #[test]
    fn a_turn_longer_than_the_window_is_cut_at_sentences_then_tokens() {
        let long_turn = format!(
            "A: {} {}",
            "one two three. four five six seven? eight.",
            (0..30)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let text = format!("B: short turn\n{long_turn}\nC: end");
        let windows = split(&text, &Words, 10, 0).unwrap();
        let pieces: Vec<&str> = windows.iter().map(|w| &text[w.clone()]).collect();
        for p in &pieces {
            assert!(Words.input_tokens(p).unwrap() <= 10, "{p}");
        }
        // All words, in order, exactly once.
        let words: Vec<&str> = pieces.iter().flat_map(|p| p.split_whitespace()).collect();
        assert_eq!(words, text.split_whitespace().collect::<Vec<_>>());
        // Sentences that fit stay whole; the 30-word sentence is cut at tokens.
        for sentence in ["A: one two three.", "four five six seven?"] {
            assert!(pieces.iter().any(|p| p.contains(sentence)), "{pieces:?}");
        }
        assert!(pieces.iter().any(|p| p.starts_with("t0 ")), "{pieces:?}");
    }

    #[test]
    fn overlap_repeats_whole_turns_and_always_progresses() {
        let text = dialogue(&[3, 3, 3, 3, 3, 3, 3, 3]);
        let no = split(&text, &Words, 14, 0).unwrap();
        let with = split(&text, &Words, 14, 5).unwrap();
        assert!(with.len() > no.len());
        for pair in with.windows(2) {
            // Overlapping, and the next one reaches further.
            assert!(pair[1].start < pair[0].end && pair[1].end > pair[0].end);
        }
        // Overlap as large as the window still ends.
        let big = split(&text, &Words, 14, 13).unwrap();
        assert_eq!(big.last().unwrap().end, text.len());
    }

    #[test]
    fn a_window_with_no_room_is_an_error() {
        let e = split("A: hi", &Words, 2, 0).unwrap_err().to_string();
        assert!(e.contains("leaves no room"), "{e}");
        let o = LongOptions {
            mode: LongMode::Chunk,
            overlap_tokens: 512,
            partial_max_new_tokens: None,
        };
        let e = o.validate(512).unwrap_err().to_string();
        assert!(e.contains("smaller than the input window"), "{e}");
        assert!("cut"
            .parse::<LongMode>()
            .unwrap_err()
            .to_string()
            .contains("truncate or chunk"));
    }
}
