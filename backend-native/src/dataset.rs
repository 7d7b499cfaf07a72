//! Dialogue summarization datasets (HighlightSum layout: `id`, `dialogue`, `summary`) from a
//! local file, a local folder of split files, or a Hugging Face hub dataset.
//!
//! - A **file**: `.jsonl`/`.ndjson` (one object a line), `.json` (a JSON array of objects, or
//!   JSONL) or `.csv` (header row). Extra fields/columns are ignored. `id` is optional (default:
//!   the row's 0-based position); `dialogue` and `summary` are required non-empty strings.
//! - A **folder**: the file `<split>.jsonl`, `<split>.json` or `<split>.csv` inside it
//!   (e.g. `../shared/data/dialogsum` with `--split validation`).
//! - A **hub id** (`org/name`): the dataset repository's `.jsonl`/`.json`/`.csv` files of the split
//!   (file stem equal to the split, or starting with `<split>-`/`<split>_`, or under a folder named
//!   like the split), downloaded into the Hugging Face cache (`HF_HOME`, `HF_TOKEN`,
//!   `HF_HUB_OFFLINE=1` as for models).
//!
//! Parquet (`.parquet`, what HF `datasets` writes) is read too, with the `parquet` crate (snappy).
//! Errors are one line naming the file, the line (or row) and the field.

use anyhow::{bail, Context, Result};
pub use bartleby_core::sampling::SplitMix64;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One example: a dialogue and its reference summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The row's `id` (numbers as written), or its 0-based position when it has none.
    pub id: String,
    pub dialogue: String,
    pub summary: String,
}

/// File formats that [`load_rows`] reads.
const READABLE: [&str; 5] = ["jsonl", "ndjson", "json", "csv", "parquet"];

/// Loads the rows of `spec` (a file, a folder of split files or a hub dataset id); `split` picks
/// the file of a folder or hub dataset and is ignored for a single file.
pub fn load_rows(spec: &str, split: &str) -> Result<Vec<Row>> {
    check_split_name(split)?;
    let path = Path::new(spec);
    let rows = if path.is_dir() {
        read_file(&split_file_in_dir(path, split)?)?
    } else if path.exists() {
        read_file(path)?
    } else if looks_like_hub_id(spec) {
        let mut rows = Vec::new();
        for file in hub_split_files(spec, split)? {
            rows.extend(read_file(&file)?);
        }
        rows
    } else {
        bail!("{spec}: no such data file or folder");
    };
    if rows.is_empty() {
        bail!("{spec}: no rows");
    }
    Ok(rows)
}

/// A split is a plain name (`validation`, `train`, `test_2`): it becomes part of a file name.
fn check_split_name(split: &str) -> Result<()> {
    let ok = !split.is_empty()
        && !split.starts_with('.')
        && split
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("--split {split:?}: use letters, digits, '-', '_' or '.' (not first)");
    }
    Ok(())
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Reads one data file, its format from the extension.
pub fn read_file(path: &Path) -> Result<Vec<Row>> {
    let name = path.display().to_string();
    let ext = extension(path);
    match ext.as_deref() {
        Some("parquet") => return parse_parquet(path, &name),
        Some(e) if READABLE.contains(&e) => {}
        _ => bail!("{name}: unknown data format (expected .jsonl, .json, .csv or .parquet)"),
    }
    let bytes = std::fs::read(path).with_context(|| format!("{name}: cannot read data file"))?;
    match ext.as_deref() {
        Some("csv") => parse_csv(&bytes, &name),
        Some("json") if first_non_space(&bytes) == Some(b'[') => parse_json_array(&bytes, &name),
        _ => parse_jsonl(&bytes, &name),
    }
}

/// A Parquet file (what HF `datasets` writes): string `dialogue`/`summary` columns, optional `id`
/// (string or integer); other columns are ignored.
fn parse_parquet(path: &Path, name: &str) -> Result<Vec<Row>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file =
        std::fs::File::open(path).with_context(|| format!("{name}: cannot read data file"))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| anyhow::anyhow!("{name}: not a valid Parquet file: {e}"))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| anyhow::anyhow!("{name}: cannot read rows: {e}"))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| anyhow::anyhow!("{name} row {i}: {e}"))?;
        let mut obj = Map::new();
        for (column, field) in row.get_column_iter() {
            let value = match field {
                Field::Str(s) => Value::from(s.as_str()),
                Field::Int(n) => Value::from(*n),
                Field::Long(n) => Value::from(*n),
                Field::Null => Value::Null,
                _ if ["id", "dialogue", "summary"].contains(&column.as_str()) => {
                    bail!("{name} row {i}: column {column:?} has an unsupported type")
                }
                _ => continue,
            };
            obj.insert(column.clone(), value);
        }
        out.push(row_from_object(
            &obj,
            out.len(),
            &format!("{name} row {i}"),
        )?);
    }
    Ok(out)
}

fn first_non_space(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// `<dir>/<split>.{jsonl,ndjson,json,csv}`; a Parquet-only or missing split is an error listing
/// the splits the folder has.
fn split_file_in_dir(dir: &Path, split: &str) -> Result<PathBuf> {
    for ext in READABLE {
        let p = dir.join(format!("{split}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut available: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| extension(p).is_some_and(|e| READABLE.contains(&e.as_str())))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    available.sort();
    available.dedup();
    bail!(
        "{}: no split {split:?} (no {split}.jsonl, .json, .csv or .parquet; splits here: {})",
        dir.display(),
        if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        }
    )
}

/// The value of a string field; errors name the file, the row and the field.
fn text_field(obj: &Map<String, Value>, field: &str, at: &str) -> Result<String> {
    match obj.get(field) {
        None => bail!("{at}: missing field {field:?}"),
        Some(Value::String(s)) if s.trim().is_empty() => bail!("{at}: field {field:?} is empty"),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => bail!("{at}: field {field:?} must be a string"),
    }
}

fn row_from_object(obj: &Map<String, Value>, position: usize, at: &str) -> Result<Row> {
    let id = match obj.get("id") {
        None | Some(Value::Null) => position.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => bail!("{at}: field \"id\" must be a string or a number"),
    };
    Ok(Row {
        id,
        dialogue: text_field(obj, "dialogue", at)?,
        summary: text_field(obj, "summary", at)?,
    })
}

fn parse_jsonl(bytes: &[u8], name: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for item in crate::input::jsonl_objects(bytes, name) {
        let (n, obj) = item?;
        rows.push(row_from_object(
            &obj,
            rows.len(),
            &format!("{name} line {n}"),
        )?);
    }
    Ok(rows)
}

fn parse_json_array(bytes: &[u8], name: &str) -> Result<Vec<Row>> {
    let items: Vec<Value> =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{name}: invalid JSON: {e}"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{name} record {i}");
            match item {
                Value::Object(obj) => row_from_object(obj, i, &at),
                _ => bail!("{at}: expected a JSON object"),
            }
        })
        .collect()
}

fn parse_csv(bytes: &[u8], name: &str) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| anyhow::anyhow!("{name}: bad CSV header: {e}"))?
        .clone();
    let col = |field: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').trim() == field)
    };
    let (Some(dialogue), Some(summary)) = (col("dialogue"), col("summary")) else {
        let missing = if col("dialogue").is_none() {
            "dialogue"
        } else {
            "summary"
        };
        bail!("{name} line 1: missing column {missing:?}");
    };
    let id = col("id");
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| anyhow::anyhow!("{name}: bad CSV row: {e}"))?;
        let line = record.position().map_or(0, |p| p.line());
        let mut obj = Map::new();
        for (field, c) in [
            ("dialogue", Some(dialogue)),
            ("summary", Some(summary)),
            ("id", id),
        ] {
            if let Some(v) = c.and_then(|c| record.get(c)) {
                obj.insert(field.to_string(), Value::from(v));
            }
        }
        rows.push(row_from_object(
            &obj,
            rows.len(),
            &format!("{name} line {line}"),
        )?);
    }
    Ok(rows)
}

/// Deterministic row selection for `--limit N [--seed S]`.
///
/// - No limit: every row.
/// - Limit without seed: the first `N` rows.
/// - Limit with seed: a uniform random sample of `N` distinct rows, returned in file order. The
///   sample is the first `N` positions of a partial Fisher–Yates shuffle of `0..len` (for
///   `i` in `0..N`: swap position `i` with `i + uniform(len - i)`), where `uniform(b)` draws from
///   [`SplitMix64`] seeded with `S`, rejecting draws `>= 2^64 - (2^64 mod b)` and returning
///   `draw mod b`. Pure integer arithmetic: the same rows on every machine and Rust version.
///
/// A limit larger than the number of rows selects every row.
pub fn select(rows: Vec<Row>, limit: Option<usize>, seed: Option<u64>) -> Vec<Row> {
    let n = limit.unwrap_or(rows.len()).min(rows.len());
    match seed {
        None => rows.into_iter().take(n).collect(),
        Some(seed) => {
            let mut picked = sample_indices(rows.len(), n, seed);
            picked.sort_unstable();
            let mut rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
            picked.iter().filter_map(|&i| rows[i].take()).collect()
        }
    }
}

/// `n` distinct indices of `0..len` (partial Fisher–Yates, see [`select`]), in draw order.
pub fn sample_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64(seed);
    let mut idx: Vec<usize> = (0..len).collect();
    for i in 0..n.min(len) {
        let j = i + rng.below((len - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(n.min(len));
    idx
}

fn looks_like_hub_id(s: &str) -> bool {
    !s.starts_with('.')
        && !s.starts_with('/')
        && s.matches('/').count() == 1
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// Whether the repository file `rfilename` holds split `split` (see the module documentation).
fn is_split_file(rfilename: &str, split: &str) -> bool {
    let path = Path::new(rfilename);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let in_split_dir = path
        .parent()
        .is_some_and(|p| p.components().any(|c| c.as_os_str() == split));
    stem == split
        || stem.starts_with(&format!("{split}-"))
        || stem.starts_with(&format!("{split}_"))
        || in_split_dir
}

fn hub_offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref(),
        Ok("1" | "true" | "True" | "TRUE" | "ON" | "on" | "YES" | "yes")
    )
}

/// One line for a failed hub request.
fn hub_error(id: &str, what: &str, err: hf_hub::api::sync::ApiError) -> anyhow::Error {
    use hf_hub::api::sync::ApiError;
    match err {
        ApiError::RequestError(e) => match *e {
            ureq::Error::Status(404, _) => anyhow::anyhow!("{id}: no such dataset on the hub"),
            ureq::Error::Status(401 | 403, _) => anyhow::anyhow!(
                "{id}: the hub refused access to {what} (gated or private: set HF_TOKEN)"
            ),
            ureq::Error::Status(code, _) => {
                anyhow::anyhow!("{id}: hub answered HTTP {code} for {what}")
            }
            ureq::Error::Transport(t) => anyhow::anyhow!(
                "{id}: cannot reach the Hugging Face hub ({t}); set HF_HUB_OFFLINE=1 to use only the local cache"
            ),
        },
        e => anyhow::anyhow!("{id}: downloading {what} failed: {e}"),
    }
}

/// The local paths of the split's files of hub dataset `id`, downloaded when needed.
fn hub_split_files(id: &str, split: &str) -> Result<Vec<PathBuf>> {
    let cache = hf_hub::Cache::from_env().dataset(id.to_string());
    if hub_offline() {
        return READABLE
            .iter()
            .find_map(|ext| cache.get(&format!("{split}.{ext}")))
            .map(|p| vec![p])
            .ok_or_else(|| {
                anyhow::anyhow!("{id}: HF_HUB_OFFLINE is set and split {split:?} is not in the local cache (looked for {split}.jsonl, .json, .csv)")
            });
    }
    let token = std::env::var("HF_TOKEN")
        .ok()
        .or_else(|| hf_hub::Cache::from_env().token());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_token(token)
        .with_progress(true)
        .build()
        .context("cannot set up the Hugging Face hub client")?
        .dataset(id.to_string());
    let info = api.info().map_err(|e| hub_error(id, "the file list", e))?;
    let mut matching: Vec<&str> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .filter(|f| is_split_file(f, split))
        .collect();
    matching.sort_unstable();
    let readable: Vec<&str> = matching
        .iter()
        .copied()
        .filter(|f| extension(Path::new(f)).is_some_and(|e| READABLE.contains(&e.as_str())))
        .collect();
    if readable.is_empty() {
        bail!("{id}: no .jsonl, .json, .csv or .parquet file for split {split:?} in the dataset repository");
    }
    readable
        .into_iter()
        .map(|f| match cache.get(f) {
            Some(p) => Ok(p),
            None => api.get(f).map_err(|e| hub_error(id, f, e)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Row> {
        (0..n)
            .map(|i| Row {
                id: i.to_string(),
                dialogue: "d".into(),
                summary: "s".into(),
            })
            .collect()
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs of Vigna's splitmix64.c seeded with 1234567.
        let mut r = SplitMix64(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn selection_rules() {
        let ids = |r: Vec<Row>| r.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(select(rows(5), Some(2), None)), ["0", "1"]);
        assert_eq!(ids(select(rows(3), Some(10), None)).len(), 3);
        assert_eq!(ids(select(rows(3), None, Some(1))), ["0", "1", "2"]);
        let a = ids(select(rows(100), Some(10), Some(7)));
        assert_eq!(a, ids(select(rows(100), Some(10), Some(7))));
        assert_ne!(a, ids(select(rows(100), Some(10), Some(8))));
        let mut sorted = a.clone();
        sorted.sort_by_key(|s| s.parse::<usize>().unwrap());
        sorted.dedup();
        assert_eq!(sorted, a, "distinct, in file order");
    }

    #[test]
    fn sample_is_uniform_enough() {
        // Each of 10 positions is picked ~3 of 10 times over many seeds.
        let mut hits = [0usize; 10];
        for seed in 0..20_000 {
            for i in sample_indices(10, 3, seed) {
                hits[i] += 1;
            }
        }
        for h in hits {
            assert!((5_700..6_300).contains(&h), "{hits:?}");
        }
    }

    #[test]
    fn jsonl_rows_and_errors() {
        let r = parse_jsonl(
            b"{\"id\": 7, \"dialogue\": \"a\", \"summary\": \"b\", \"x\": 1}\n{\"dialogue\": \"c\", \"summary\": \"d\"}\n",
            "f.jsonl",
        )
        .unwrap();
        assert_eq!(r[0].id, "7");
        assert_eq!(r[1].id, "1");
        let err = |b: &[u8]| parse_jsonl(b, "f.jsonl").unwrap_err().to_string();
        assert_eq!(
            err(b"{\"dialogue\": \"a\", \"summary\": \"b\"}\n{\"dialogue\": \"a\"}"),
            "f.jsonl line 2: missing field \"summary\""
        );
        assert_eq!(
            err(b"{\"dialogue\": 3, \"summary\": \"b\"}"),
            "f.jsonl line 1: field \"dialogue\" must be a string"
        );
        assert_eq!(
            err(b"{\"dialogue\": \" \", \"summary\": \"b\"}"),
            "f.jsonl line 1: field \"dialogue\" is empty"
        );
    }

    #[test]
    fn json_array_and_csv() {
        let r = parse_json_array(
            b"[{\"id\":\"a\",\"dialogue\":\"x\",\"summary\":\"y\"}]",
            "f.json",
        )
        .unwrap();
        assert_eq!(r[0].summary, "y");
        let r = parse_csv(
            b"id,dialogue,summary,topic\n1,\"A: hi\nB: yo\",s,t\n",
            "f.csv",
        )
        .unwrap();
        assert_eq!(r[0].dialogue, "A: hi\nB: yo");
        assert_eq!(
            parse_csv(b"id,dialogue\n1,x\n", "f.csv")
                .unwrap_err()
                .to_string(),
            "f.csv line 1: missing column \"summary\""
        );
        assert_eq!(
            parse_csv(b"id,dialogue,summary\n1,x,\n", "f.csv")
                .unwrap_err()
                .to_string(),
            "f.csv line 2: field \"summary\" is empty"
        );
    }

    #[test]
    fn split_names_are_plain() {
        assert!(check_split_name("validation").is_ok());
        for bad in ["", "../train", "a/b", ".hidden"] {
            assert!(load_rows("d", bad)
                .unwrap_err()
                .to_string()
                .starts_with("--split"));
        }
    }

    #[test]
    fn split_file_names() {
        assert!(is_split_file("validation.csv", "validation"));
        assert!(is_split_file(
            "data/validation-00000-of-00001.parquet",
            "validation"
        ));
        assert!(is_split_file("cfg/validation/0000.parquet", "validation"));
        assert!(!is_split_file("train.csv", "validation"));
        assert!(!is_split_file("validation_extra/../train.csv", "test"));
    }
}
