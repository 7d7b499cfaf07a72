//! The training-parity check shared by `train.rs` (burn's matmul) and `train_blas.rs` (OpenBLAS).

use bartleby_core::checkpoint::adapter::{self, LoraConfig};
use bartleby_core::train::{self, AdamW, GradAccumulator, LossScaler, Trainable};
use bartleby_tests::*;
use burn::tensor::{DType, Device};
use serde_json::Value;

fn adapter(model: &mut bartleby_core::models::Model, fixture: &str, dir: &str) {
    let dir = fixtures().join(fixture).join(dir);
    let config =
        LoraConfig::from_json(&std::fs::read(dir.join(adapter::CONFIG_FILE)).unwrap()).unwrap();
    let weights = std::fs::read(dir.join(adapter::WEIGHTS_FILE)).unwrap();
    adapter::load_adapter(model, &config, &weights).unwrap();
}

fn rows(fx: &Value) -> Vec<Value> {
    let path = root()
        .join("../shared/data")
        .join(fx["data"].as_str().unwrap());
    let text = std::fs::read_to_string(&path).expect("../shared/data (dialogsum train)");
    text.lines()
        .take(fx["batches"].as_array().unwrap().len() * 2)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `adapter_tol`: the final adapter's max abs difference from PEFT's, relative to its scale.
pub fn check_training(device: &Device, adapter_tol: f32) {
    check_training_in(device, None, 1e-3, 1e-3, adapter_tol);
}

/// [`check_training`] against `tests/fixtures/train-{precision}` (`half`: bf16 or f16 mixed
/// precision, made by `make_train_fixtures.py --precision`): losses within `loss_tol` and
/// gradient norms within `norm_tol` (relative) at every step; f16 also skips exactly the steps
/// PyTorch's GradScaler skips, with the same loss scale at every step.
pub fn check_training_in(
    device: &Device,
    half: Option<DType>,
    loss_tol: f64,
    norm_tol: f64,
    adapter_tol: f32,
) {
    let fixture = match half {
        None => "train",
        Some(DType::BF16) => "train-bf16",
        Some(DType::F16) => "train-f16",
        Some(other) => panic!("no fixture for {other:?}"),
    };
    check_fixture(device, fixture, half, loss_tol, norm_tol, adapter_tol)
}

/// The check against `tests/fixtures/<fixture>` (its own model: `train-t5` is T5's).
pub fn check_fixture(
    device: &Device,
    fixture: &str,
    half: Option<DType>,
    loss_tol: f64,
    norm_tol: f64,
    adapter_tol: f32,
) {
    let fx = read_json(&fixtures().join(fixture).join("steps.json"));
    let mut s = load(fx["model"].as_str().unwrap(), device);
    adapter(&mut s.model, fixture, "initial");
    if let Some(dtype) = half {
        // 12 projections per layer pair + the shared table + 2 position tables.
        let held = s.model.hold_matrices_in(dtype);
        assert!(held > 3, "only {held} matrices held in {dtype:?}");
        assert_eq!(s.model.as_bart().unwrap().shared.val().dtype(), dtype);
    }
    let mut scaler = fx["init_scale"].as_f64().map(|scale| LossScaler {
        scale,
        ..LossScaler::default()
    });
    let (max_source, max_target) = (
        fx["max_source"].as_u64().unwrap() as usize,
        fx["max_target"].as_u64().unwrap() as usize,
    );
    let micro = fx["micro_batch"].as_u64().unwrap() as usize;
    let ga = fx["grad_accum"].as_u64().unwrap() as usize;
    if let Some(prompting) = s.prompting.as_mut() {
        prompting.template = fx["prompt"].as_str().unwrap().into();
        prompting
            .chat_kwargs
            .insert("date_string".into(), fx["date_string"].clone());
    }
    let eos = s.answer_eos();
    let examples: Vec<_> = rows(&fx)
        .iter()
        .map(|r| {
            if s.prompting.is_some() {
                let prompt = s
                    .encode(r["dialogue"].as_str().unwrap(), usize::MAX)
                    .unwrap();
                return train::tokenize_causal(
                    &s.tokenizer,
                    prompt,
                    r["summary"].as_str().unwrap(),
                    eos.unwrap(),
                    max_target,
                )
                .unwrap();
            }
            train::tokenize(
                &s.tokenizer,
                // The model's summarization prefix (T5: "summarize: ") before every source.
                &format!("{}{}", s.prefix, r["dialogue"].as_str().unwrap()),
                r["summary"].as_str().unwrap(),
                max_source,
                max_target,
            )
            .unwrap()
        })
        .collect();
    let batches: Vec<train::Batch> = examples
        .chunks(micro)
        .map(|c| {
            let refs: Vec<&train::Example> = c.iter().collect();
            if s.prompting.is_some() {
                return train::collate_causal(&refs, s.config.pad_token_id());
            }
            train::collate(
                &refs,
                s.config.pad_token_id(),
                s.generation.decoder_start_token_id,
            )
        })
        .collect();
    for (ours, theirs) in batches.iter().zip(fx["batches"].as_array().unwrap()) {
        assert_eq!(ours.input_ids, u32_rows(&theirs["input_ids"]));
        assert_eq!(ours.attention_mask, u32_rows(&theirs["attention_mask"]));
        if !theirs["decoder_input_ids"].is_null() {
            assert_eq!(
                ours.decoder_input_ids,
                u32_rows(&theirs["decoder_input_ids"])
            );
        }
        assert_eq!(ours.labels, i64_rows(&theirs["labels"]));
    }

    s.model.set_dropout(0.0, 0.0, 0.0); // the reference runs model.eval()
    train::make_trainable(&mut s.model, Trainable::Lora).unwrap();
    let betas = fx["betas"].as_array().unwrap();
    let mut opt = AdamW::new(
        betas[0].as_f64().unwrap(),
        betas[1].as_f64().unwrap(),
        fx["eps"].as_f64().unwrap(),
        fx["weight_decay"].as_f64().unwrap(),
    );
    let steps = fx["steps"].as_u64().unwrap() as usize;
    let mut acc = GradAccumulator::default();
    for (step, expected) in fx["history"].as_array().unwrap().iter().enumerate() {
        let mut loss_sum = 0.0;
        let loss_scale = scaler.map_or(1.0, |s| s.scale);
        if let Some(want) = expected["loss_scale"].as_f64() {
            assert_eq!(loss_scale, want, "step {}: loss scale", step + 1);
        }
        for batch in &batches[step * ga..(step + 1) * ga] {
            let loss = train::loss(&s.model, batch).unwrap();
            loss_sum += train::scalar(loss.clone().inner()).unwrap();
            let loss = loss.div_scalar(ga as f64).mul_scalar(loss_scale);
            acc.backward(&mut s.model, Trainable::Lora, loss).unwrap();
        }
        let outcome = train::optimizer_step(
            &mut s.model,
            Trainable::Lora,
            &mut opt,
            scaler.as_mut(),
            acc.take(),
            fx["clip"].as_f64().unwrap(),
            |updates| {
                train::linear_schedule(
                    fx["lr"].as_f64().unwrap(),
                    updates,
                    fx["warmup"].as_u64().unwrap() as usize,
                    steps,
                )
            },
        )
        .unwrap();
        let (norm, lr) = (outcome.grad_norm, outcome.lr);
        let (loss, want) = (loss_sum / ga as f64, expected["loss"].as_f64().unwrap());
        let skipped = expected["skipped"].as_bool().unwrap_or(false);
        eprintln!(
            "step {}: loss {loss:.6} (torch {want:.6}), grad norm {norm:.5} (torch {}){}",
            step + 1,
            expected["grad_norm"],
            if outcome.skipped { ", skipped" } else { "" }
        );
        assert_eq!(outcome.skipped, skipped, "step {}: skipped", step + 1);
        assert!(
            (lr - expected["lr"].as_f64().unwrap()).abs() < 1e-12,
            "step {step}: lr"
        );
        assert!(
            ((loss - want) / want).abs() <= loss_tol,
            "step {}: loss {loss} vs {want}",
            step + 1
        );
        if !skipped {
            let want_norm = expected["grad_norm"].as_f64().unwrap();
            assert!(
                ((norm - want_norm) / want_norm).abs() <= norm_tol,
                "step {}: grad norm",
                step + 1
            );
        }
    }

    // The trained adapter equals PEFT's.
    let saved = adapter::save_adapter(&s.model).unwrap();
    let ours = safetensors::SafeTensors::deserialize(&saved).unwrap();
    let final_bytes = std::fs::read(
        fixtures()
            .join(fixture)
            .join("final")
            .join(adapter::WEIGHTS_FILE),
    )
    .unwrap();
    let theirs = safetensors::SafeTensors::deserialize(&final_bytes).unwrap();
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    assert_eq!(ours.len(), theirs.len());
    let mut worst = (0f32, String::new());
    for name in theirs.names() {
        let (a, b) = (
            f32s(ours.tensor(name).unwrap().data()),
            f32s(theirs.tensor(name).unwrap().data()),
        );
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        if diff / scale > worst.0 {
            worst = (diff / scale, name.to_string());
        }
    }
    eprintln!(
        "final adapter: worst difference {:e} of scale ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= adapter_tol,
        "{}: differs by {} of its scale",
        worst.1,
        worst.0
    );
}
