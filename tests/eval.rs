//! `bartleby eval` end to end on a fixture model and DialogSum validation rows: every output file,
//! its columns, the scores against `bartleby score` on the same predictions, the summaries
//! against `bartleby summarize` on the same dialogues, the charts as PNG; and bad input.

use bartleby_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const MODEL: &str = "tiny-gelu";
/// Longer summaries than the model's own settings, so that random weights overlap the
/// references a little (ROUGE above 0: the cross-check with `score` can fail).
const LONGER: [&str; 4] = ["--min-length", "30", "--max-length", "40"];

fn dialogsum() -> PathBuf {
    root().join("../shared/data/dialogsum")
}

fn bartleby(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bartleby_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: std::process::Output, what: &str) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `bartleby eval` with `--model tiny-gelu --name t --out <out>` and `extra`.
fn eval(out: &Path, extra: &[&str]) -> std::process::Output {
    let model = model_dir(MODEL);
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--name",
        "t",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    bartleby(&args, &[])
}

/// The first `n` rows of DialogSum validation as (id, dialogue, summary).
fn first_rows(n: usize) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dialogsum().join("validation.jsonl")).unwrap();
    text.lines()
        .take(n)
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("id"), s("dialogue"), s("summary"))
        })
        .collect()
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn assert_png(path: &Path) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert!(frame.width > 0 && frame.height > 0, "{}", path.display());
    let pixels = &buf[..frame.buffer_size()];
    assert!(
        pixels.iter().any(|&b| b != pixels[0]),
        "{} is blank",
        path.display()
    );
}

/// The pipeline's five columns, then how each input was read (`--long`).
const PREDICTION_COLUMNS: [&str; 9] = [
    "id",
    "source_text",
    "reference_summary",
    "generated_summary",
    "rougeL_score",
    "input_tokens",
    "truncated",
    "chunks",
    "levels",
];

#[test]
fn eval_outputs_match_score_and_summarize() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("metrics");
    let data = dialogsum();
    let run = eval(
        &out,
        &[
            "--data",
            data.to_str().unwrap(),
            "--limit",
            "6",
            "--stemmer",
            LONGER[0],
            LONGER[1],
            LONGER[2],
            LONGER[3],
        ],
    );
    let run = ok(run, "eval");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.starts_with("t: ROUGE-1 "), "{stdout}");
    for f in [
        "t_predictions.csv",
        "t_metrics.json",
        "t_metrics.csv",
        "t_failures.md",
        "t_rouge.png",
        "t_rougeL_hist.png",
        "t_lengths.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let leftovers = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with(".bartleby-")
        })
        .count();
    assert_eq!(leftovers, 0, "temporary files left");

    // Predictions: the columns, the rows in file order, sources and references verbatim.
    let (header, rows) = read_csv(&out.join("t_predictions.csv"));
    assert_eq!(header, PREDICTION_COLUMNS);
    let expected = first_rows(6);
    assert_eq!(rows.len(), 6);
    for (row, (id, dialogue, summary)) in rows.iter().zip(&expected) {
        assert_eq!((&row[0], &row[1], &row[2]), (id, dialogue, summary));
    }

    // The same dialogues through `bartleby summarize` give the same summaries.
    let input = tmp.path().join("in.jsonl");
    let lines: Vec<String> = expected
        .iter()
        .map(|(id, d, _)| serde_json::json!({"id": id, "dialogue": d}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let summaries = tmp.path().join("summaries.jsonl");
    let model = model_dir(MODEL);
    ok(
        bartleby(
            &[
                "summarize",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                summaries.to_str().unwrap(),
                LONGER[0],
                LONGER[1],
                LONGER[2],
                LONGER[3],
            ],
            &[],
        ),
        "summarize",
    );
    let summarized: Vec<Value> = std::fs::read_to_string(&summaries)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (row, s) in rows.iter().zip(&summarized) {
        assert_eq!(s["id"], row[0].as_str());
        assert_eq!(s["summary"], row[3].as_str(), "id {}", row[0]);
    }

    // The same predictions through `bartleby score` give the same numbers.
    let pairs = tmp.path().join("pairs.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .map(|r| serde_json::json!({"id": r[0], "prediction": r[3], "reference": r[2]}).to_string())
        .collect();
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    let scores = tmp.path().join("scores.json");
    ok(
        bartleby(
            &[
                "score",
                "--input",
                pairs.to_str().unwrap(),
                "--output",
                scores.to_str().unwrap(),
                "--stemmer",
            ],
            &[],
        ),
        "score",
    );
    let scores = read_json(&scores);
    let metrics = read_json(&out.join("t_metrics.json"));
    assert_eq!(metrics["corpus"], scores["corpus"]);
    assert_eq!(metrics["scoring"], scores["settings"]);
    assert!(metrics["corpus"]["rouge1"]["mid"].as_f64().unwrap() > 0.0);
    for (row, s) in rows.iter().zip(scores["per_example"].as_array().unwrap()) {
        let csv_score: f64 = row[4].parse().unwrap();
        assert_eq!(csv_score, s["rougeL"]["fmeasure"].as_f64().unwrap());
    }

    // The run description.
    assert_eq!(metrics["name"], "t");
    assert_eq!(metrics["n"], 6);
    assert_eq!(metrics["split"], "validation");
    assert_eq!(metrics["selection"]["rows_in_split"], 500);
    assert_eq!(metrics["selection"]["rule"], "first N rows");
    assert!(metrics["generation"]["num_beams"].as_u64().unwrap() >= 1);
    assert_eq!(metrics["max_input_tokens"], 64);
    assert_eq!(metrics["failures"]["total"], 6);
    assert!(metrics["timing"]["examples_per_second"].as_f64().unwrap() > 0.0);
    assert!(metrics["lengths"]["mean_reference_words"].as_f64().unwrap() > 5.0);

    // metrics.csv holds the same headline numbers.
    let (header, rows) = read_csv(&out.join("t_metrics.csv"));
    assert_eq!(header, ["metric", "value", "low", "high"]);
    let rouge1 = rows.iter().find(|r| r[0] == "rouge1").unwrap();
    let r1 = &metrics["corpus"]["rouge1"];
    assert_eq!(
        rouge1[1].parse::<f64>().unwrap(),
        r1["mid"].as_f64().unwrap()
    );
    assert_eq!(
        rouge1[2].parse::<f64>().unwrap(),
        r1["low"].as_f64().unwrap()
    );
    let flagged = rows.iter().find(|r| r[0] == "failures_flagged").unwrap();
    assert_eq!(flagged[1], metrics["failures"]["flagged"].to_string());

    let md = std::fs::read_to_string(out.join("t_failures.md")).unwrap();
    assert!(md.starts_with("# Failure analysis: t"), "{md}");
    assert!(md.contains("| truncated_input |"), "{md}");
    // The worst examples the Markdown lists are in the JSON too (what the dashboards read).
    let worst = metrics["failures"]["worst"]["truncated_input"]
        .as_array()
        .unwrap();
    assert!(!worst.is_empty(), "{metrics}");
    let id = worst[0]["id"].as_str().unwrap();
    assert!(md.contains(&format!("### `{id}`: severity ")), "{md}");
    for png in ["t_rouge.png", "t_rougeL_hist.png", "t_lengths.png"] {
        assert_png(&out.join(png));
    }
}

/// `eval` on T5: the predictions are what `summarize` writes for the same rows (prefix and
/// summarization settings included), and the metrics file is written.
#[test]
fn t5_eval_predictions_equal_summarize() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir("t5-relu-tied");
    let data = dialogsum();
    ok(
        bartleby(
            &[
                "eval",
                "--model",
                model.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--limit",
                "3",
                "--name",
                "t5",
                "--out",
                tmp.path().to_str().unwrap(),
            ],
            &[],
        ),
        "eval",
    );
    assert!(tmp.path().join("t5_metrics.json").is_file());
    let (header, rows) = read_csv(&tmp.path().join("t5_predictions.csv"));
    let col = header
        .iter()
        .position(|h| h == "generated_summary")
        .unwrap();
    let input = tmp.path().join("in.jsonl");
    let lines: Vec<String> = first_rows(3)
        .iter()
        .map(|(id, d, _)| serde_json::json!({"id": id, "dialogue": d}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = tmp.path().join("out.jsonl");
    ok(
        bartleby(
            &[
                "summarize",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
            &[],
        ),
        "summarize",
    );
    let summaries: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["summary"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let predictions: Vec<String> = rows.iter().map(|r| r[col].clone()).collect();
    assert_eq!(predictions, summaries);
}

/// `--limit N --seed S` picks the same rows on every run (and machine: SplitMix64), in file order;
/// a JSON-array file with extra fields and no ids reads as well.
#[test]
fn seeded_sample_and_json_array() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dialogsum().join("validation.jsonl");
    let ids = |dir: &str| {
        let out = tmp.path().join(dir);
        ok(
            eval(
                &out,
                &[
                    "--data",
                    data.to_str().unwrap(),
                    "--limit",
                    "3",
                    "--seed",
                    "42",
                    "--metrics",
                    "bleu",
                ],
            ),
            "eval",
        );
        let (_, rows) = read_csv(&out.join("t_predictions.csv"));
        assert!(
            rows.iter().all(|r| r[4].is_empty()),
            "no rougeL without rouge"
        );
        assert!(!out.join("t_rouge.png").exists());
        rows.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>()
    };
    let a = ids("a");
    assert_eq!(a, ids("b"));
    // Computed independently with a Python transcription of SplitMix64 + partial Fisher–Yates.
    assert_eq!(a, ["dev_1", "dev_122", "dev_413"]);

    let rows = first_rows(2);
    let array: Vec<Value> = rows
        .iter()
        .map(|(_, d, s)| serde_json::json!({"dialogue": d, "summary": s, "topic": "x"}))
        .collect();
    let file = tmp.path().join("rows.json");
    std::fs::write(&file, serde_json::to_string(&array).unwrap()).unwrap();
    let out = tmp.path().join("json");
    ok(eval(&out, &["--data", file.to_str().unwrap()]), "eval json");
    let (_, got) = read_csv(&out.join("t_predictions.csv"));
    let got: Vec<(&str, &str)> = got.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(got, [("0", rows[0].1.as_str()), ("1", rows[1].1.as_str())]);
}

/// A failed eval: one error line naming `needles`, exit 1, nothing in the output folder.
fn assert_eval_fails(
    tmp: &Path,
    data: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    needles: &[&str],
) {
    let out = tmp.join("metrics");
    std::fs::create_dir_all(&out).unwrap();
    let model = model_dir(MODEL);
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--data",
        data,
    ];
    if !extra.contains(&"--name") {
        args.extend(["--name", "t"]);
    }
    args.extend_from_slice(extra);
    let run = Run::from(bartleby(&args, env));
    assert_clear_error(&run, &out.join("t_metrics.json"), needles);
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "a failed eval left {left:?}");
}

#[test]
fn bad_data() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let missing = t.join("nope.jsonl");
    assert_eval_fails(
        t,
        missing.to_str().unwrap(),
        &[],
        &[],
        &["nope.jsonl", "no such data file"],
    );

    let rows = t.join("rows.jsonl");
    std::fs::write(
        &rows,
        "{\"id\": \"a\", \"dialogue\": \"A: hi\", \"summary\": \"A greets.\"}\n{\"id\": \"b\", \"dialogue\": \"B: yo\"}\n",
    )
    .unwrap();
    assert_eval_fails(
        t,
        rows.to_str().unwrap(),
        &[],
        &[],
        &["rows.jsonl line 2: missing field \"summary\""],
    );

    let csv = t.join("rows.csv");
    std::fs::write(&csv, "id,dialogue\n1,A: hi\n").unwrap();
    assert_eval_fails(
        t,
        csv.to_str().unwrap(),
        &[],
        &[],
        &["rows.csv line 1: missing column \"summary\""],
    );

    let parquet = t.join("rows.parquet");
    std::fs::write(&parquet, b"PAR1").unwrap();
    assert_eval_fails(
        t,
        parquet.to_str().unwrap(),
        &[],
        &[],
        &["rows.parquet", "not a valid Parquet file"],
    );

    let data = dialogsum();
    let data = data.to_str().unwrap();
    assert_eval_fails(
        t,
        data,
        &["--split", "test"],
        &[],
        &["dialogsum", "no split \"test\"", "train, validation"],
    );
}

#[test]
fn bad_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = dialogsum();
    let data = data.to_str().unwrap();
    assert_eval_fails(
        t,
        data,
        &["--limit", "0"],
        &[],
        &["--limit must be at least 1"],
    );
    assert_eval_fails(t, data, &["--seed", "1"], &[], &["--seed", "--limit"]);
    assert_eval_fails(
        t,
        data,
        &["--metrics", "rouge,bertscore"],
        &[],
        &["bertscore is not available yet"],
    );
    assert_eval_fails(t, data, &["--name", "../x"], &[], &["--name \"../x\""]);
    // Fails after the output folder was checked: still nothing written.
    assert_eval_fails(
        t,
        data,
        &["--limit", "2", "--max-input-tokens", "1000"],
        &[],
        &["max_position_embeddings 64"],
    );
}

#[test]
fn unwritable_out() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a folder").unwrap();
    let out = file.join("metrics");
    let data = dialogsum();
    let run = Run::from(eval(
        &out,
        &["--data", data.to_str().unwrap(), "--limit", "1"],
    ));
    assert_clear_error(
        &run,
        &tmp.path().join("t_metrics.json"),
        &[out.to_str().unwrap(), "cannot create output folder"],
    );
}

#[test]
fn hub_dataset_offline_or_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let hf = hf.to_str().unwrap();
    assert_eval_fails(
        tmp.path(),
        "knkarthick/highlightsum",
        &[],
        &[("HF_HOME", hf), ("HF_HUB_OFFLINE", "1")],
        &["knkarthick/highlightsum", "HF_HUB_OFFLINE", "validation"],
    );
    assert_eval_fails(
        tmp.path(),
        "knkarthick/highlightsum",
        &[],
        &[
            ("HF_HOME", hf),
            ("HF_HUB_OFFLINE", "0"),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ],
        &[
            "knkarthick/highlightsum",
            "cannot reach the Hugging Face hub",
        ],
    );
}

/// A minimal stand-in for the Hugging Face hub's dataset endpoints, serving the files of `dir`:
/// the repository info (`GET /api/datasets/{repo}/revision/main`, the file list) and the files
/// (`GET /datasets/{repo}/resolve/main/{file}` with `Range`, answering with etag, x-repo-commit
/// and content-range as the hub does).
fn serve_dataset_hub(repo: &'static str, dir: PathBuf) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut range = (0usize, None::<usize>);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = r.trim().split_once('-').unwrap();
                    range = (a.parse().unwrap(), b.parse().ok());
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = stream.write_all(&dataset_hub_reply(repo, &dir, &path, range));
        }
    });
    addr
}

fn dataset_hub_reply(repo: &str, dir: &Path, path: &str, range: (usize, Option<usize>)) -> Vec<u8> {
    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    if path == format!("/api/datasets/{repo}/revision/main") {
        let mut files: Vec<Value> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| serde_json::json!({"rfilename": e.unwrap().file_name().to_string_lossy()}))
            .collect();
        files.sort_by_key(|f| f["rfilename"].to_string());
        let body = serde_json::json!({"sha": COMMIT, "siblings": files}).to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        return (head + &body).into_bytes();
    }
    let file = path
        .strip_prefix(&format!("/datasets/{repo}/resolve/main/"))
        .map(|f| dir.join(f))
        .filter(|f| f.is_file());
    let Some(file) = file else {
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .to_vec();
    };
    let bytes = std::fs::read(&file).unwrap();
    let end = range.1.unwrap_or(bytes.len() - 1).min(bytes.len() - 1);
    let body = &bytes[range.0..=end];
    let mut reply = format!(
        "HTTP/1.1 206 Partial Content\r\netag: \"{:x}\"\r\nx-repo-commit: {COMMIT}\r\ncontent-range: bytes {}-{end}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        bytes.len() * 31 + file.file_name().unwrap().len(),
        range.0,
        bytes.len(),
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(body);
    reply
}

/// `--data ORG/NAME` downloads the split's file into the HF cache through the hub API and gives
/// the same predictions as the local file; then it works offline from the cache; a corrupt
/// Parquet split file is a clear error naming it.
#[test]
fn hub_dataset_download_then_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    std::fs::create_dir(&repo_dir).unwrap();
    let mut csv = csv::Writer::from_path(repo_dir.join("validation.csv")).unwrap();
    csv.write_record(["id", "dialogue", "summary", "topic"])
        .unwrap();
    for (id, d, s) in first_rows(3) {
        csv.write_record([&id, &d, &s, "t"]).unwrap();
    }
    csv.flush().unwrap();
    std::fs::write(repo_dir.join("train-00000-of-00001.parquet"), b"PAR1").unwrap();
    let endpoint = serve_dataset_hub("bartleby-test/dialogs", repo_dir.clone());
    let hf = tmp.path().join("hf");
    let run = |data: &str, out: &str, offline: &str| {
        let out = tmp.path().join(out);
        let env = [
            ("HF_HOME", hf.to_str().unwrap()),
            ("HF_ENDPOINT", endpoint.as_str()),
            ("HF_HUB_OFFLINE", offline),
        ];
        let model = model_dir(MODEL);
        let args = [
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data,
            "--name",
            "t",
            "--out",
            out.to_str().unwrap(),
        ];
        ok(bartleby(&args, &env), data);
        read_csv(&out.join("t_predictions.csv")).1
    };
    let local = run(
        repo_dir.join("validation.csv").to_str().unwrap(),
        "local",
        "0",
    );
    assert_eq!(local.len(), 3);
    assert_eq!(run("bartleby-test/dialogs", "hub", "0"), local);
    assert!(
        hf.join("hub/datasets--bartleby-test--dialogs").is_dir(),
        "standard HF cache layout"
    );
    assert_eq!(run("bartleby-test/dialogs", "offline", "1"), local);
    assert_eval_fails(
        tmp.path(),
        "bartleby-test/dialogs",
        &["--split", "train"],
        &[
            ("HF_HOME", hf.to_str().unwrap()),
            ("HF_ENDPOINT", endpoint.as_str()),
            ("HF_HUB_OFFLINE", "0"),
        ],
        &["train-00000-of-00001.parquet", "not a valid Parquet file"],
    );
}

/// A Parquet file as HF `datasets` writes it (tools/reference/make_parquet_fixture.py) gives the
/// same rows as the JSONL they came from; extra columns are ignored.
#[test]
fn parquet_rows_equal_jsonl_rows() {
    let parquet = fixtures().join("data/dialogsum-validation-5.parquet");
    let from_parquet =
        bartleby::dataset::load_rows(parquet.to_str().unwrap(), "validation").unwrap();
    let jsonl = dialogsum().join("validation.jsonl");
    let from_jsonl = bartleby::dataset::load_rows(jsonl.to_str().unwrap(), "validation").unwrap();
    assert_eq!(from_parquet.len(), 5);
    assert_eq!(from_parquet[..], from_jsonl[..5]);
}
