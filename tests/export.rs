//! `bartleby export` web bundles: the manifest matches the files, f32 bundles generate exactly
//! what the source checkpoint generates, quantized bundles reload to burn's exact quantized values,
//! and corrupt or impossible bundles are one-line errors with nothing half-written.

use bartleby_core::checkpoint::bundle::{Manifest, Quant};
use bartleby_core::checkpoint::Params;
use bartleby_core::checkpoint::{Checkpoint, LoadOptions};
use bartleby_core::pipeline::ids_tensor;
use bartleby_tests::*;
use std::path::Path;

fn export(model: &Path, quant: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "export",
        "--model",
        model.to_str().unwrap(),
        "--quant",
        quant,
        "--block-size",
        "4",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    bartleby(&args)
}

/// `bartleby summarize --model MODEL --input INPUT --output OUT`.
fn summarize(model: &Path, input: &Path, out: &Path) -> std::process::Output {
    summarize_with(model, input, out, &[])
}

/// [`summarize`] with more flags.
fn summarize_with(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "summarize",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    bartleby(&args)
}

fn summarize_ids(model: &Path, input: &Path, out: &Path) -> Vec<Vec<u32>> {
    summarize_ids_with(model, input, out, &[])
}

fn summarize_ids_with(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> Vec<Vec<u32>> {
    let run = summarize_with(model, input, out, extra);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// Three real SAMSum validation dialogues as a JSONL input file.
fn dialogues(dir: &Path) -> std::path::PathBuf {
    let data = root().join("../shared/data/samsum/validation.jsonl");
    let text = std::fs::read_to_string(&data).expect("../shared/data");
    let path = dir.join("in.jsonl");
    std::fs::write(
        &path,
        text.lines().take(3).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    path
}

#[test]
fn f32_and_q8_bundles_load_natively() {
    bundles_load_natively("tiny-gelu");
}

/// T5 bundles (gated FFN, f16 storage): the same guarantees as BART's.
#[test]
fn t5_bundles_load_natively() {
    bundles_load_natively("t5-gatedsilu-f16");
}

fn bundles_load_natively(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let input = dialogues(tmp.path());
    let model = model_dir(name);
    let reference = summarize_ids(&model, &input, &tmp.path().join("ref.jsonl"));

    for quant in ["f32", "f16", "q8", "q4"] {
        let dir = tmp.path().join(quant);
        let run = export(
            &model,
            quant,
            &dir,
            &["--check-input", input.to_str().unwrap()],
        );
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(stdout.contains("token agreement"), "{stdout}");
        // The manifest lists every file with its size and sha256.
        let manifest =
            Manifest::from_json(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest.quantization, Quant::parse(quant).unwrap());
        for name in [
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "model.safetensors",
        ] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            manifest.verify(name, &bytes).unwrap();
        }
        let check = manifest.check.as_ref().unwrap();
        assert_eq!(check.inputs, 3);
        let ids = summarize_ids(&dir, &input, &tmp.path().join(format!("{quant}.jsonl")));
        if quant == "f32" {
            // An f32 bundle is the same checkpoint: identical generations, and the check says so.
            assert_eq!(ids, reference);
            assert_eq!(check.identical_sequences, 3);
            assert_eq!(check.token_agreement, 1.0);
            assert_eq!(check.rouge_l, 1.0);
        } else {
            // The checks in the manifest describe exactly what the bundle generates: on the CPU
            // in int8 (the default), and in f32 with --f32-matmul.
            let same =
                |ids: &[Vec<u32>]| ids.iter().zip(&reference).filter(|(a, b)| a == b).count();
            if quant == "f16" {
                assert!(manifest.check_int8.is_none());
                assert_eq!(check.identical_sequences, same(&ids), "f16");
                continue;
            }
            let int8 = manifest
                .check_int8
                .as_ref()
                .expect("check_int8 for q8/q4 on the CPU");
            assert_eq!(int8.identical_sequences, same(&ids), "{quant} int8");
            let out = tmp.path().join(format!("{quant}-f32.jsonl"));
            let f32_ids = summarize_ids_with(&dir, &input, &out, &["--f32-matmul"]);
            assert_eq!(check.identical_sequences, same(&f32_ids), "{quant} f32");
        }
    }
    // Sizes: q4 < q8 < f16 < f32 weights.
    let size = |q: &str| {
        std::fs::metadata(tmp.path().join(q).join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(size("q4") < size("q8") && size("q8") < size("f32") && size("f16") < size("f32"));
}

#[test]
fn quantized_weights_reload_exactly() {
    // Loading a q8/q4 bundle expands the weights to f32 (q × scale); exporting that model again
    // must give the same bytes (the expansion keeps every stored integer and scale).
    let device = burn::tensor::Device::flex();
    let s = load("tiny-gelu", &device);
    for quant in [Quant::Q8, Quant::Q4] {
        let bytes =
            bartleby_core::checkpoint::quantized::encode_weights(&s.model, quant, 4).unwrap();
        let checkpoint = Checkpoint::from_shards(&[("model.safetensors", &bytes)]).unwrap();
        let (reloaded, report) = s
            .config
            .load(&checkpoint, &device, Default::default(), &mut |_| {})
            .unwrap();
        assert!(report.unused.is_empty(), "{:?}", report.unused);
        let again =
            bartleby_core::checkpoint::quantized::encode_weights(&reloaded, quant, 4).unwrap();
        assert_same_safetensors(&again, &bytes);
        // Kept as int8 for the CPU's integer products: the same stored values come back out.
        let options = LoadOptions {
            int8_matmul: true,
            ..LoadOptions::default()
        };
        let (int8, _) = s
            .config
            .load(&checkpoint, &device, options, &mut |_| {})
            .unwrap();
        let mut n = 0;
        let mut m = int8.clone();
        m.visit_projections(&mut |_, p| {
            n += p.host.is_some() as usize;
            Ok(())
        })
        .unwrap();
        assert!(n > 0, "no int8 projections");
        assert_same_safetensors(
            &bartleby_core::checkpoint::quantized::encode_weights(&int8, quant, 4).unwrap(),
            &bytes,
        );
        // Its logits: those of the f32-expanded weights up to the activations' int8 rounding.
        let pin = parity("tiny-gelu");
        let logits = |model: &bartleby_core::models::Model| -> Vec<f32> {
            let (_, logits) = model.forward(
                ids_tensor(&u32_rows(&pin["batch_input_ids"]), &device),
                ids_tensor(&u32_rows(&pin["batch_attention_mask"]), &device),
                ids_tensor(&u32_rows(&pin["decoder_input_ids"]), &device),
            );
            logits.into_data().try_to_vec::<f32>().unwrap()
        };
        let (a, b) = (logits(&reloaded), logits(&int8));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        eprintln!(
            "{quant:?}: int8 vs f32 products: logits max abs diff {diff:e} (max |logit| {scale})"
        );
        assert!(diff > 0.0 && diff < 0.05 * scale, "{quant:?}: diff {diff}");
    }
}

#[test]
fn bad_bundles_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir("tiny-gelu");
    // A block size that does not divide the projections' widths: nothing written.
    let out = tmp.path().join("bad-block");
    let run = bartleby(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--quant",
        "q8",
        "--block-size",
        "16",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_clear_error(&run.into(), &out, &["block size 16 does not divide"]);

    // A bundle whose weights were changed after export: summarize names the file.
    let dir = tmp.path().join("q8");
    assert!(export(&model, "q8", &dir, &["--check-n", "0"])
        .status
        .success());
    let w = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&w, &bytes).unwrap();
    let input = dialogues(tmp.path());
    let out = tmp.path().join("out.jsonl");
    let run = summarize(&dir, &input, &out);
    assert_clear_error(&run.into(), &out, &["model.safetensors", "sha256"]);
    // Its header changed (the loader, which reads the file while it is checked, cannot parse
    // it): the check's verdict is the error.
    bytes[last] ^= 1;
    bytes[12] ^= 0x20;
    std::fs::write(&w, &bytes).unwrap();
    let run = summarize(&dir, &input, &out);
    assert_clear_error(&run.into(), &out, &["model.safetensors", "sha256"]);

    // A truncated file: its size is named.
    bytes.truncate(100);
    std::fs::write(&w, &bytes).unwrap();
    let run = summarize(&dir, &input, &out);
    assert_clear_error(&run.into(), &out, &["model.safetensors", "100 bytes"]);

    // An existing output directory is kept unless --force.
    let run = export(&model, "q8", &dir, &[]);
    let r: Run = run.into();
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
}

/// The same export twice gives the same bytes (the manifest records sha256s; the safetensors
/// metadata used to come out in a HashMap's run-to-run order).
#[test]
fn export_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir("tiny-gelu");
    let mut outs = Vec::new();
    for i in 0..2 {
        let out = tmp.path().join(format!("b{i}"));
        let run = bartleby(&[
            "export",
            "--model",
            model.to_str().unwrap(),
            "--quant",
            "q4",
            "--block-size",
            "4",
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        outs.push(out);
    }
    for f in [
        "model.safetensors",
        "manifest.json",
        "config.json",
        "tokenizer.json",
    ] {
        assert_eq!(
            std::fs::read(outs[0].join(f)).unwrap(),
            std::fs::read(outs[1].join(f)).unwrap(),
            "{f} differs between two exports"
        );
    }
}
