//! Mutation fuzzing of every parser that reads a user's file (issue 26), on stable Rust: valid
//! seeds (the fixture model's files, a bundle manifest, a PEFT adapter config, data rows, pairs)
//! are mutated — bytes flipped, inserted, deleted, duplicated, cut; numbers replaced by extreme
//! values; JSON values swapped — and fed to the parser. A panic, or an allocation the 4 GiB
//! address-space limit set for this process refuses (an abort), fails the test; errors are the
//! expected outcome. The whole model assembly (config + weights + tokenizer → a model) is a
//! target too, so a config that would allocate without bound is caught.
//!
//! Bounded for CI: `BARTLEBY_FUZZ_SECONDS` (default 30) split over the targets; the seed of a run
//! is printed, and `BARTLEBY_FUZZ_SEED` replays it. `bash tests/extra/fuzz` runs it for longer.

use bartleby_core::checkpoint::bundle::Manifest;
use bartleby_core::checkpoint::{adapter::LoraConfig, Checkpoint, LoadOptions};
use bartleby_core::generate::GenerationConfig;
use bartleby_core::models::ModelConfig;
use bartleby_core::pipeline::{ModelBytes, NamedBytes, TokenizerBytes};
use bartleby_core::sampling::SplitMix64;
use bartleby_core::{BartTokenizer, Summarizer};
use bartleby_tests::{fixtures, model_dir, root};
use std::time::{Duration, Instant};

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "-2147483649",
    "4294967296",
    "18446744073709551616",
    "99999999999",
    "1e308",
    "-1e308",
    "1e-320",
    "NaN",
    "null",
    "true",
    "\"\"",
    "[]",
    "{}",
    "0.5",
    "65536",
];

/// One to four random mutations of `seed`.
fn mutate(seed: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + below(rng, 4) {
        let len = b.len();
        match below(rng, 8) {
            0 if len > 0 => {
                let i = below(rng, len);
                b[i] ^= 1 << below(rng, 8);
            }
            1 => {
                let i = below(rng, len + 1);
                b.insert(i, rng.next_u64() as u8);
            }
            2 if len > 0 => {
                let i = below(rng, len);
                let n = 1 + below(rng, 16.min(len - i));
                b.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = below(rng, len);
                let n = 1 + below(rng, 64.min(len - i));
                let piece = b[i..i + n].to_vec();
                let at = below(rng, len);
                b.splice(at..at, piece);
            }
            4 if len > 0 => b.truncate(below(rng, len)),
            // A number (a run of digits) replaced by an extreme value.
            5 | 6 => {
                let digits: Vec<usize> = (0..len).filter(|&i| b[i].is_ascii_digit()).collect();
                if let Some(&i) = digits.get(below(rng, digits.len())) {
                    let mut s = i;
                    while s > 0
                        && (b[s - 1].is_ascii_digit() || b[s - 1] == b'-' || b[s - 1] == b'.')
                    {
                        s -= 1;
                    }
                    let mut e = i;
                    while e < len && (b[e].is_ascii_digit() || b[e] == b'.' || b[e] == b'e') {
                        e += 1;
                    }
                    let v = EXTREMES[below(rng, EXTREMES.len())].as_bytes();
                    b.splice(s..e, v.iter().copied());
                }
            }
            _ if len > 0 => {
                let i = below(rng, len);
                b[i] = rng.next_u64() as u8;
            }
            _ => {}
        }
    }
    b
}

/// Runs `target` on mutations of `seed` for `budget`; a panic fails with the input saved.
fn fuzz(
    name: &str,
    seed: &[u8],
    budget: Duration,
    rng: &mut SplitMix64,
    target: impl Fn(&[u8]),
) -> usize {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < budget {
        let input = mutate(seed, rng);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        if ok.is_err() {
            let dir = root().join("target/fuzz-findings");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{n}.bin"));
            std::fs::write(&path, &input).unwrap();
            panic!("{name}: panic on input {n}, saved to {}", path.display());
        }
        n += 1;
    }
    n
}

/// The safetensors file of `weights` with its header replaced by a mutation of it (the data
/// kept), so that mutations land in the part a parser reads.
fn with_header(weights: &[u8], header: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&weights[8 + n..]);
    out
}

#[test]
fn parsers_survive_mutated_inputs() {
    #[cfg(unix)]
    unsafe {
        let limit = libc::rlimit {
            rlim_cur: 4 << 30,
            rlim_max: 4 << 30,
        };
        libc::setrlimit(libc::RLIMIT_AS, &limit);
    }
    let seconds: u64 = std::env::var("BARTLEBY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("BARTLEBY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("fuzz seed {seed} (BARTLEBY_FUZZ_SEED={seed} replays it), {seconds} s");
    let mut rng = SplitMix64(seed);
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    let dir = model_dir("tiny-gelu");
    let config = read(dir.join("config.json"));
    let generation = read(dir.join("generation_config.json"));
    let tokenizer = read(dir.join("tokenizer.json"));
    let tokenizer_config = read(dir.join("tokenizer_config.json"));
    let weights = read(dir.join("model.safetensors"));
    let header = {
        let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
        weights[8..8 + n].to_vec()
    };
    let adapter = read(fixtures().join("lora/gelu-qv/adapter_config.json"));
    let t5_config = read(model_dir("t5-relu-tied").join("config.json"));
    let manifest = br#"{"format":"bartleby-web-bundle","version":1,"quantization":"q8","block_size":32,"files":[{"path":"config.json","bytes":1000,"sha256":"00"}],"parameters":44920}"#.to_vec();
    let rows =
        std::fs::read_to_string(root().join("../shared/data/dialogsum/validation.jsonl")).unwrap();
    let rows: Vec<u8> = rows
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    let pairs = b"{\"id\": 1, \"prediction\": \"a b\", \"reference\": \"a c\"}\n{\"prediction\": \"x\", \"references\": [\"y\", \"z\"]}\n".to_vec();
    let csv = b"id,dialogue,summary\n1,\"A: hi\nB: yo\",\"they greet\"\n".to_vec();

    let budget = Duration::from_secs(seconds) / 11;
    let mut counts = Vec::new();
    counts.push((
        "config.json",
        fuzz("config", &config, budget, &mut rng, |b| {
            let _ = ModelConfig::from_json(b, "config.json");
        }),
    ));
    counts.push((
        "config.json (T5)",
        fuzz("t5-config", &t5_config, budget, &mut rng, |b| {
            let _ = ModelConfig::from_json(b, "config.json");
        }),
    ));
    counts.push((
        "generation_config.json",
        fuzz("generation", &generation, budget, &mut rng, |b| {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) {
                let cfg: serde_json::Value = serde_json::from_slice(&config).unwrap();
                if let Ok(g) = GenerationConfig::from_transformers_json(Some(&v), &cfg) {
                    let _ = g.validate();
                }
            }
        }),
    ));
    counts.push((
        "safetensors header",
        fuzz("safetensors", &header, budget, &mut rng, |h| {
            let _ = Checkpoint::from_shards(&[("model.safetensors", &with_header(&weights, h))]);
        }),
    ));
    counts.push((
        "tokenizer.json",
        fuzz("tokenizer", &tokenizer, budget, &mut rng, |b| {
            if let Ok(t) = BartTokenizer::from_tokenizer_json(b, Some(&tokenizer_config)) {
                let _ = t.encode("A: hi there\nB: hello", Some(16));
            }
        }),
    ));
    counts.push((
        "manifest.json",
        fuzz("manifest", &manifest, budget, &mut rng, |b| {
            let _ = Manifest::from_json(b);
        }),
    ));
    counts.push((
        "adapter_config.json",
        fuzz("adapter", &adapter, budget, &mut rng, |b| {
            let _ = LoraConfig::from_json(b);
        }),
    ));
    counts.push((
        "pairs JSONL",
        fuzz("pairs", &pairs, budget, &mut rng, |b| {
            let _ = bartleby::input::parse_pairs(b, "pairs.jsonl");
        }),
    ));
    let tmp = tempfile::tempdir().unwrap();
    counts.push((
        "data JSONL + CSV (files)",
        fuzz(
            "data",
            &[rows.clone(), csv.clone()].concat(),
            budget,
            &mut rng,
            |b| {
                let split = b.len() / 2;
                std::fs::write(tmp.path().join("validation.jsonl"), &b[..split]).unwrap();
                let _ = bartleby::dataset::load_rows(tmp.path().to_str().unwrap(), "validation");
                std::fs::write(tmp.path().join("in.csv"), &b[split..]).unwrap();
                let _ = bartleby::input::read_documents(&tmp.path().join("in.csv"));
            },
        ),
    ));
    // Whole assemblies: a mutated config with the real weights, and real config with a mutated
    // weights header — what `summarize --model` loads.
    let assemble = |config: &[u8], weights: &[u8]| {
        let named = |name, bytes| NamedBytes { name, bytes };
        let files = ModelBytes {
            config: named("config.json", config),
            generation_config: Some(named("generation_config.json", &generation)),
            weights: vec![named("model.safetensors", weights)],
            tokenizer: TokenizerBytes::Json(named("tokenizer.json", &tokenizer)),
            tokenizer_config: Some(&tokenizer_config),
            chat_template: None,
        };
        let device = burn::tensor::Device::flex();
        if let Ok((s, _)) =
            Summarizer::assemble(&files, &device, LoadOptions::default(), &mut |_| {})
        {
            let gen = s.generation.clone();
            let _ = s.summarize(&["A: hi\nB: yo"], &gen, 16, &mut |_, _| {});
        }
    };
    counts.push((
        "model (config mutated)",
        fuzz("model-config", &config, budget, &mut rng, |b| {
            assemble(b, &weights)
        }),
    ));
    counts.push((
        "model (weights header mutated)",
        fuzz("model-weights", &header, budget, &mut rng, |h| {
            assemble(&config, &with_header(&weights, h))
        }),
    ));
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    for (name, n) in &counts {
        println!("  {name}: {n} inputs");
    }
    println!("fuzz: {total} inputs in {seconds} s, no panic, no abort");
    assert!(counts.iter().all(|(_, n)| *n > 0));
}
