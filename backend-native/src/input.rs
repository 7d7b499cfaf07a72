//! Reading inputs: documents to summarize — JSONL (`dialogue` or `text`, optional `id`), CSV with
//! those columns, or plain text (the whole input is one document) — and the prediction/reference
//! pairs that `score` reads (JSONL).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// One document to summarize.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The input's `id`, or its 0-based position when it has none.
    pub id: Value,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Csv,
    Text,
}

/// Reads `path` (`-` = stdin). The format comes from the extension (.jsonl/.json, .csv,
/// anything else = text); for stdin, input starting with `{` is JSONL.
/// `bytes` without a leading UTF-8 byte order mark (as Windows editors write; JSON readers such
/// as pandas' and datasets' accept it).
pub fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The format of stdin, from its content: JSONL when every non-blank line is a JSON object, CSV
/// when the first line is a header naming a `dialogue` or `text` column, else plain text.
fn sniff(bytes: &[u8]) -> Format {
    let bytes = without_bom(bytes);
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).peekable();
    if lines.peek().is_some()
        && lines.all(|l| matches!(serde_json::from_str(l), Ok(Value::Object(_))))
    {
        return Format::Jsonl;
    }
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    match reader.headers() {
        Ok(h) if h.len() > 1 && h.iter().any(|c| c == "dialogue" || c == "text") => Format::Csv,
        _ => Format::Text,
    }
}

pub fn read_documents(path: &Path) -> Result<Vec<Document>> {
    let name = path.display().to_string();
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("stdin: read failed")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("{name}: cannot read input"))?
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match ext.as_deref() {
        Some("jsonl") | Some("json") | Some("ndjson") => Format::Jsonl,
        Some("csv") => Format::Csv,
        _ if path.as_os_str() == "-" => sniff(&bytes),
        _ => Format::Text,
    };
    let name = if path.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        name
    };
    let docs = match format {
        Format::Jsonl => parse_jsonl(&bytes, &name)?,
        Format::Csv => parse_csv(&bytes, &name)?,
        Format::Text => {
            let text = std::str::from_utf8(&bytes).map_err(|e| {
                anyhow::anyhow!("{name}: not valid UTF-8 (byte {})", e.valid_up_to())
            })?;
            if text.trim().is_empty() {
                bail!("{name}: input is empty");
            }
            vec![Document {
                id: Value::from(0),
                text: text.to_string(),
            }]
        }
    };
    if docs.is_empty() {
        bail!("{name}: no documents in input");
    }
    Ok(docs)
}

/// Dialogues for [`check_inputs`] when the user gives none.
const BUILT_IN_CHECK: [&str; 4] = [
    "#Person1#: Did you book the table for tonight?\n#Person2#: Yes, at eight, by the window.",
    "Anna: are we still on for Saturday?\nTom: sure, 10am at the station\nAnna: great, see you",
    "Manager: the release slips a week because the tests are red.\nDev: I will fix them by Monday.",
    "#Person1#: How much is the blue coat?\n#Person2#: It's 80 dollars, 20% off this week.",
];

/// The inputs of `merge`'s lossless check and `export`'s quality check: the first `n` documents
/// of `input`, or of built-in dialogues when there is none.
pub fn check_inputs(input: Option<&Path>, n: usize) -> Result<Vec<Document>> {
    let mut docs = match input {
        Some(path) => read_documents(path)?,
        None => BUILT_IN_CHECK
            .iter()
            .enumerate()
            .map(|(i, t)| Document {
                id: i.into(),
                text: t.to_string(),
            })
            .collect(),
    };
    docs.truncate(n);
    Ok(docs)
}

/// The non-blank lines of a JSONL file as `(line number, object)`; errors name the file and line
/// (not UTF-8, invalid JSON, not an object).
pub fn jsonl_objects<'a>(
    bytes: &'a [u8],
    name: &'a str,
) -> impl Iterator<Item = Result<(usize, serde_json::Map<String, Value>)>> + 'a {
    without_bom(bytes)
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(move |(i, line)| {
            let n = i + 1;
            let line = match std::str::from_utf8(line) {
                Ok(line) if line.trim().is_empty() => return None,
                Ok(line) => line,
                Err(e) => {
                    return Some(Err(anyhow::anyhow!(
                        "{name} line {n}: not valid UTF-8 (byte {})",
                        e.valid_up_to()
                    )))
                }
            };
            Some(match serde_json::from_str(line) {
                Ok(Value::Object(obj)) => Ok((n, obj)),
                Ok(_) => Err(anyhow::anyhow!("{name} line {n}: expected a JSON object")),
                Err(e) => Err(anyhow::anyhow!("{name} line {n}: invalid JSON: {e}")),
            })
        })
}

fn parse_jsonl(bytes: &[u8], name: &str) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for row in jsonl_objects(bytes, name) {
        let (n, obj) = row?;
        let (field, text) = match (obj.get("dialogue"), obj.get("text")) {
            (Some(t), _) => ("dialogue", t),
            (None, Some(t)) => ("text", t),
            (None, None) => bail!("{name} line {n}: missing field \"dialogue\" (or \"text\")"),
        };
        let text = text.as_str().ok_or_else(|| {
            anyhow::anyhow!("{name} line {n}: field \"{field}\" must be a string")
        })?;
        let id = obj
            .get("id")
            .cloned()
            .unwrap_or_else(|| Value::from(docs.len()));
        docs.push(checked(
            Document {
                id,
                text: text.to_string(),
            },
            name,
            n,
            field,
        )?);
    }
    Ok(docs)
}

fn parse_csv(bytes: &[u8], name: &str) -> Result<Vec<Document>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(without_bom(bytes));
    let headers = reader
        .headers()
        .map_err(|e| anyhow::anyhow!("{name}: bad CSV header: {e}"))?
        .clone();
    let col = |n: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').trim() == n)
    };
    let (field, text_col) = match (col("dialogue"), col("text")) {
        (Some(c), _) => ("dialogue", c),
        (None, Some(c)) => ("text", c),
        _ => bail!("{name}: CSV has no \"dialogue\" (or \"text\") column"),
    };
    let id_col = col("id");
    let mut docs = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| anyhow::anyhow!("{name}: bad CSV row: {e}"))?;
        let n = record.position().map_or(0, |p| p.line() as usize);
        let text = record.get(text_col).unwrap_or_default().to_string();
        let id = match id_col.and_then(|c| record.get(c)) {
            Some(id) => Value::from(id),
            None => Value::from(docs.len()),
        };
        docs.push(checked(Document { id, text }, name, n, field)?);
    }
    Ok(docs)
}

fn checked(doc: Document, name: &str, n: usize, field: &str) -> Result<Document> {
    if doc.text.trim().is_empty() {
        bail!("{name} line {n}: field \"{field}\" is empty");
    }
    Ok(doc)
}

/// One scored pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The input's `id`, or its 0-based position when it has none.
    pub id: Value,
    pub prediction: String,
    pub references: Vec<String>,
}

/// Reads the pairs of `path` (`-` = stdin).
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let (name, bytes) = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| anyhow::anyhow!("stdin: read failed: {e}"))?;
        ("stdin".to_string(), buf)
    } else {
        let name = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{name}: cannot read input: {e}"))?;
        (name, bytes)
    };
    let pairs = parse_pairs(&bytes, &name)?;
    if pairs.is_empty() {
        bail!("{name}: no pairs in input");
    }
    Ok(pairs)
}

/// Parses JSONL pairs; errors name the file, the line and the field.
pub fn parse_pairs(bytes: &[u8], name: &str) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for row in jsonl_objects(bytes, name) {
        let (n, obj) = row?;
        let prediction = match obj.get("prediction") {
            None => bail!("{name} line {n}: missing field \"prediction\""),
            Some(Value::String(s)) => s.clone(),
            Some(_) => bail!("{name} line {n}: field \"prediction\" must be a string"),
        };
        let references = match (obj.get("references"), obj.get("reference")) {
            (Some(_), Some(_)) => {
                bail!("{name} line {n}: give either \"references\" or \"reference\", not both")
            }
            (None, None) => {
                bail!("{name} line {n}: missing field \"references\" (or \"reference\")")
            }
            (None, Some(Value::String(s))) => vec![s.clone()],
            (None, Some(_)) => bail!("{name} line {n}: field \"reference\" must be a string"),
            (Some(Value::Array(refs)), None) => {
                if refs.is_empty() {
                    bail!("{name} line {n}: field \"references\" is an empty list");
                }
                refs.iter()
                    .enumerate()
                    .map(|(k, r)| match r {
                        Value::String(s) => Ok(s.clone()),
                        _ => bail!("{name} line {n}: field \"references\"[{k}] must be a string"),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            (Some(_), None) => {
                bail!("{name} line {n}: field \"references\" must be a list of strings")
            }
        };
        let id = obj
            .get("id")
            .cloned()
            .unwrap_or_else(|| Value::from(pairs.len()));
        pairs.push(Pair {
            id,
            prediction,
            references,
        });
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_accepts_dialogue_or_text_and_defaults_ids() {
        let docs = parse_jsonl(
            b"{\"id\":\"a\",\"dialogue\":\"x\"}\n\n{\"text\":\"y\"}\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            docs[0],
            Document {
                id: Value::from("a"),
                text: "x".into()
            }
        );
        assert_eq!(
            docs[1],
            Document {
                id: Value::from(1),
                text: "y".into()
            }
        );
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let err =
            parse_jsonl(b"{\"dialogue\":\"x\"}\n{\"summary\":\"y\"}\n", "in.jsonl").unwrap_err();
        assert_eq!(
            err.to_string(),
            "in.jsonl line 2: missing field \"dialogue\" (or \"text\")"
        );
        let err = parse_jsonl(b"{\"dialogue\":\"\xff\"}\n", "in.jsonl").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("in.jsonl line 1: not valid UTF-8"),
            "{err}"
        );
        let err = parse_jsonl(b"{\"dialogue\":\"  \"}\n", "in.jsonl").unwrap_err();
        assert_eq!(
            err.to_string(),
            "in.jsonl line 1: field \"dialogue\" is empty"
        );
    }

    #[test]
    fn csv_reads_columns() {
        let docs = parse_csv(b"id,dialogue,summary\n7,\"A: hi\nB: yo\",s\n", "f.csv").unwrap();
        assert_eq!(
            docs,
            vec![Document {
                id: Value::from("7"),
                text: "A: hi\nB: yo".into()
            }]
        );
        assert!(parse_csv(b"id,summary\n1,x\n", "f.csv").is_err());
    }

    #[test]
    fn pairs_accept_references_or_reference() {
        let pairs = parse_pairs(
            b"{\"id\":\"a\",\"prediction\":\"x\",\"references\":[\"y\",\"z\"]}\n\n{\"prediction\":\"\",\"reference\":\"w\"}\n",
            "f",
        )
        .unwrap();
        assert_eq!(pairs[0].references, vec!["y", "z"]);
        assert_eq!(pairs[1].id, Value::from(1));
        assert_eq!(pairs[1].references, vec!["w"]);
    }

    #[test]
    fn pair_errors_name_line_and_field() {
        let err = |b: &[u8]| parse_pairs(b, "p.jsonl").unwrap_err().to_string();
        assert_eq!(
            err(b"{\"references\":[\"y\"]}"),
            "p.jsonl line 1: missing field \"prediction\""
        );
        assert_eq!(
            err(b"{\"prediction\":\"x\",\"references\":[]}"),
            "p.jsonl line 1: field \"references\" is an empty list"
        );
        assert_eq!(
            err(b"{\"prediction\":\"x\",\"references\":[\"a\",3]}"),
            "p.jsonl line 1: field \"references\"[1] must be a string"
        );
        assert_eq!(
            err(b"{\"prediction\":\"x\",\"reference\":[\"a\"]}"),
            "p.jsonl line 1: field \"reference\" must be a string"
        );
    }
}
