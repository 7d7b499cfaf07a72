//! Expected values come from tests/fixtures/generate/fake_model.json, written by
//! tools/reference/gen_fake_model_fixture.py with torch 2.15.0 / transformers 4.57.6.
use super::*;
use serde_json::Value;
use std::sync::OnceLock;

fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/generate/fake_model.json"
        )))
        .expect("fixture json")
    })
}

/// Mirror of `fake_logits` in tools/reference/gen_fake_model_fixture.py.
fn fake_logits(seed: u32, seq: &[u32], bias_token: usize, bias: f32, out: &mut [f32]) {
    let n = seq.len();
    let last = seq[n - 1];
    let prev = if n >= 2 { seq[n - 2] } else { 65535 };
    for (v, o) in out.iter_mut().enumerate() {
        let mut h: u32 = 2166136261;
        for w in [seed, prev, last, v as u32] {
            h ^= w;
            h = h.wrapping_mul(16777619);
        }
        h ^= h >> 15;
        h = h.wrapping_mul(0x2C1B3C6D);
        h ^= h >> 12;
        *o = (h % 1024) as f32 / 64.0;
    }
    if bias_token < out.len() {
        out[bias_token] += bias * n.min(24) as f32;
    }
}

struct FakeModel {
    seeds: Vec<u32>,
    seqs: Vec<Vec<u32>>,
    vocab: usize,
    bias_token: usize,
    bias: f32,
    reorders: usize,
}

impl FakeModel {
    fn new(seeds: &[u32], expand: usize, vocab: usize, bias_token: usize, bias: f32) -> Self {
        let seeds: Vec<u32> = seeds
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, expand))
            .collect();
        FakeModel {
            seqs: vec![Vec::new(); seeds.len()],
            seeds,
            vocab,
            bias_token,
            bias,
            reorders: 0,
        }
    }
}

impl StepModel for FakeModel {
    async fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        assert_eq!(tokens.len(), self.seqs.len());
        let mut out = vec![0f32; tokens.len() * self.vocab];
        for (r, &t) in tokens.iter().enumerate() {
            self.seqs[r].push(t);
            fake_logits(
                self.seeds[r],
                &self.seqs[r],
                self.bias_token,
                self.bias,
                &mut out[r * self.vocab..(r + 1) * self.vocab],
            );
        }
        Ok(out)
    }
    fn reorder(&mut self, src: &[usize]) -> Result<(), Error> {
        assert_eq!(src.len(), self.seqs.len());
        assert!(
            src.iter().enumerate().any(|(i, &s)| i != s),
            "identity reorder"
        );
        let old = self.seqs.clone();
        for (i, &s) in src.iter().enumerate() {
            assert_eq!(self.seeds[i], self.seeds[s], "reorder across batch items");
            self.seqs[i] = old[s].clone();
        }
        self.reorders += 1;
        Ok(())
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn generate_matches_transformers_on_fake_model() {
    let f = fixture();
    let bias_token = f["bias_token"].as_u64().unwrap() as usize;
    let cases = f["generate"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let vocab = case["vocab"].as_u64().unwrap() as usize;
        let seeds = u32s(&case["seeds"]);
        let cfg = GenerationConfig::from_transformers_json(None, &case["config"])
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let cfg = cfg
            .with_overrides(&case["kwargs"])
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let bias = case["bias"].as_f64().unwrap() as f32;
        let mut model = FakeModel::new(&seeds, cfg.num_beams, vocab, bias_token, bias);
        let mut steps = Vec::new();
        let out = generate(&mut model, seeds.len(), &cfg, &mut |l, _| steps.push(l))
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let expected: Vec<Vec<u32>> = case["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(u32s)
            .collect();
        assert_eq!(out.len(), seeds.len() * cfg.num_return_sequences, "{name}");
        for s in &out {
            assert_eq!(s[0], cfg.decoder_start_token_id, "{name}");
            assert!(s.len() <= cfg.effective_max_length(), "{name}");
        }
        let padded = pad_like_hf(&out, cfg.hf_output_pad_token_id());
        assert_eq!(padded, expected, "{name}: cfg {cfg:?}");
        assert_eq!(steps.first(), Some(&2), "{name}");
        assert!(steps.windows(2).all(|w| w[1] == w[0] + 1), "{name}");
        if cfg.num_beams > 1 && steps.len() > 2 {
            assert!(model.reorders > 0, "{name}");
        }
    }
}

fn decode_code(c: i64) -> f32 {
    match c {
        1000 => f32::NEG_INFINITY,
        1001 => f32::NAN,
        1002 => -1e9,
        c => c as f32 * 0.5,
    }
}

#[test]
fn topk_matches_torch_tie_order() {
    let cases = fixture()["topk"].as_array().unwrap();
    for (n_case, case) in cases.iter().enumerate() {
        let vals: Vec<f32> = case["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| decode_code(c.as_i64().unwrap()))
            .collect();
        let k = case["k"].as_u64().unwrap() as usize;
        let expected: Vec<usize> = case["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let mut q: Vec<Elem> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| Elem { v, i })
            .collect();
        topk(&mut q, k);
        let got: Vec<usize> = q[..k].iter().map(|e| e.i).collect();
        assert_eq!(got, expected, "case {n_case} n={} k={k}", vals.len());
        // the streaming variant used by beam search, split into rows
        for width in [vals.len(), 1] {
            if !vals.len().is_multiple_of(width) {
                continue;
            }
            let offsets = vec![0f32; vals.len() / width];
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            topk_offset_rows(&vals, &offsets, width, k, &mut out, &mut scratch);
            let got: Vec<usize> = out.iter().map(|e| e.i).collect();
            assert_eq!(got, expected, "streamed case {n_case} width {width}");
        }
    }
}

#[test]
fn log_softmax_close_to_torch() {
    let cases = fixture()["log_softmax"].as_array().unwrap();
    let (mut exact_rows, mut max_ulps) = (0usize, 0u32);
    for case in cases {
        let mut row: Vec<f32> = u32s(&case["input_bits"])
            .into_iter()
            .map(f32::from_bits)
            .collect();
        let expected: Vec<f32> = u32s(&case["output_bits"])
            .into_iter()
            .map(f32::from_bits)
            .collect();
        log_softmax_in_place(&mut row);
        if row == expected {
            exact_rows += 1;
        }
        for (a, b) in row.iter().zip(&expected) {
            let d = (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32;
            max_ulps = max_ulps.max(d);
        }
    }
    eprintln!(
        "log_softmax: {exact_rows}/{} rows bit-identical, max {max_ulps} ulp",
        cases.len()
    );
    assert!(
        exact_rows * 100 >= cases.len() * 90,
        "{exact_rows}/{}",
        cases.len()
    );
    assert!(max_ulps <= 4, "max ulp difference {max_ulps}");
}

#[test]
fn config_resolution_matches_transformers() {
    let cases = fixture()["config_resolution"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let gen = case.get("generation_config").filter(|g| !g.is_null());
        let got = GenerationConfig::from_transformers_json(gen, &case["config"]);
        let r = &case["resolved"];
        let cannot_generate = r.get("error").is_some()
            || [
                "max_length",
                "num_beams",
                "length_penalty",
                "early_stopping",
                "num_return_sequences",
            ]
            .iter()
            .any(|k| r[*k].is_null());
        if cannot_generate {
            assert!(got.is_err(), "{name}: expected an error, got {got:?}");
            continue;
        }
        let cfg = got.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let opt = |k: &str| -> Option<u32> {
            match &r[k] {
                Value::Null => None,
                Value::Array(a) => Some(a[0].as_u64().unwrap() as u32),
                v => Some(v.as_u64().unwrap() as u32),
            }
        };
        let num = |k: &str| r[k].as_u64().map(|x| x as usize);
        assert_eq!(Some(cfg.max_length), num("max_length"), "{name}");
        assert_eq!(cfg.max_new_tokens, num("max_new_tokens"), "{name}");
        assert_eq!(cfg.min_length, num("min_length").unwrap_or(0), "{name}");
        assert_eq!(cfg.min_new_tokens, num("min_new_tokens"), "{name}");
        assert_eq!(Some(cfg.num_beams), num("num_beams"), "{name}");
        assert_eq!(
            cfg.length_penalty,
            r["length_penalty"].as_f64().unwrap() as f32,
            "{name}"
        );
        assert_eq!(
            cfg.early_stopping,
            EarlyStopping::from_json(&r["early_stopping"]).unwrap(),
            "{name}"
        );
        assert_eq!(
            cfg.no_repeat_ngram_size,
            num("no_repeat_ngram_size").unwrap_or(0),
            "{name}"
        );
        assert_eq!(
            Some(cfg.num_return_sequences),
            num("num_return_sequences"),
            "{name}"
        );
        assert_eq!(
            Some(cfg.decoder_start_token_id),
            opt("decoder_start_token_id"),
            "{name}"
        );
        assert_eq!(cfg.bos_token_id, opt("bos_token_id"), "{name}");
        assert_eq!(cfg.eos_token_id, opt("eos_token_id"), "{name}");
        assert_eq!(Some(cfg.pad_token_id), opt("pad_token_id"), "{name}");
        assert_eq!(
            cfg.forced_bos_token_id,
            opt("forced_bos_token_id"),
            "{name}"
        );
        assert_eq!(
            cfg.forced_eos_token_id,
            opt("forced_eos_token_id"),
            "{name}"
        );
    }
}

/// The project's own resolution rule (no transformers counterpart): per key,
/// generation_config.json > config.json > task_specific_params.summarization > default.
#[test]
fn from_hf_json_cascade() {
    let config = serde_json::json!({
        "num_beams": 4, "max_length": 142, "forced_bos_token_id": 0,
        "task_specific_params": {"summarization": {
            "num_beams": 6, "min_length": 56, "no_repeat_ngram_size": 3,
            "early_stopping": true, "prefix": " "}}
    });
    let gen =
        serde_json::json!({"num_beams": 2, "length_penalty": 2.0, "forced_bos_token_id": null});
    let c = from_hf_json(Some(&gen), &config).unwrap();
    assert_eq!(c.num_beams, 2);
    assert_eq!(c.length_penalty, 2.0);
    assert_eq!(c.forced_bos_token_id, None);
    assert_eq!(c.max_length, 142);
    assert_eq!(c.min_length, 56);
    assert_eq!(c.no_repeat_ngram_size, 3);
    assert_eq!(c.early_stopping, EarlyStopping::True);
    assert_eq!(c.forced_eos_token_id, Some(2));
    assert_eq!((c.decoder_start_token_id, c.pad_token_id), (2, 1));
    let c = from_hf_json(None, &config).unwrap();
    assert_eq!((c.num_beams, c.forced_bos_token_id), (4, Some(0)));
    let bad = serde_json::json!({"do_sample": true});
    assert!(from_hf_json(None, &bad).is_err());
}

#[test]
fn serde_round_trip() {
    for (es, js) in [
        (EarlyStopping::True, "true"),
        (EarlyStopping::False, "false"),
        (EarlyStopping::Never, "\"never\""),
    ] {
        assert_eq!(serde_json::to_string(&es).unwrap(), js);
        assert_eq!(serde_json::from_str::<EarlyStopping>(js).unwrap(), es);
    }
    assert!(serde_json::from_str::<EarlyStopping>("\"always\"").is_err());
    let c = GenerationConfig {
        num_beams: 4,
        early_stopping: EarlyStopping::Never,
        max_new_tokens: Some(60),
        ..Default::default()
    };
    let s = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<GenerationConfig>(&s).unwrap(), c);
    let partial: GenerationConfig = serde_json::from_str(r#"{"num_beams": 3}"#).unwrap();
    assert_eq!(partial.num_beams, 3);
    assert_eq!(partial.max_length, 20);
}

#[test]
fn length_rules() {
    let mut c = GenerationConfig::default();
    assert_eq!(c.effective_max_length(), 21);
    c.apply_kwargs(&serde_json::json!({"max_length": 20}))
        .unwrap();
    assert_eq!(c.effective_max_length(), 20);
    c.apply_kwargs(&serde_json::json!({"max_new_tokens": 5, "max_length": 99}))
        .unwrap();
    assert_eq!(c.effective_max_length(), 6);
    c.apply_kwargs(&serde_json::json!({"min_new_tokens": 3, "min_length": 9}))
        .unwrap();
    assert_eq!(c.effective_min_length(), 4);
    assert!(c.apply_kwargs(&serde_json::json!({"top_kk": 3})).is_err());
    assert!(c
        .apply_kwargs(&serde_json::json!({"repetition_penalty": 1.2}))
        .is_err());
    let g = GenerationConfig {
        num_return_sequences: 2,
        ..Default::default()
    };
    assert!(g.validate().is_err());
}
