//! The Web Worker: holds the model and runs `bartleby-core` on burn's WebGPU backend, or on its
//! CPU backend compiled to wasm. `public/worker.js` fetches and caches the bundle files and calls
//! the two functions exported here; the page never touches the model directly.

#[cfg(target_arch = "wasm32")]
mod engine {
    use bartleby_core::pipeline::BundleFiles;
    use bartleby_core::Summarizer;
    use burn::tensor::Device;
    use std::cell::RefCell;
    use std::rc::Rc;
    use wasm_bindgen::prelude::*;

    /// The loaded model, its backend, and (decoder-only models) the bundle's own prompting:
    /// template, system message, whether the chat template is used.
    #[derive(Clone)]
    struct Loaded {
        summarizer: Rc<Summarizer>,
        backend: &'static str,
        prompting: Option<(String, Option<String>, bool)>,
    }

    thread_local! {
        static MODEL: RefCell<Option<Loaded>> = const { RefCell::new(None) };
        /// The WebGPU device, created once per worker (burn registers one server per device:
        /// a second `init_async` fails), reused by every later load.
        static WEBGPU: RefCell<Option<Device>> = const { RefCell::new(None) };
    }

    fn err(e: impl std::fmt::Display) -> JsError {
        JsError::new(&e.to_string())
    }

    /// Loads a bundle: `files` is an array of `[path, Uint8Array]` pairs (manifest.json
    /// included); `backend` is "webgpu" or "cpu"; `max_buffer_bytes` is the device's largest
    /// buffer (the embedding table is split under it). Every file is checked against the
    /// manifest: sizes here, sha256 here too unless `sha256_checked` (worker.js hashes with
    /// SubtleCrypto, ~10× faster than sha2 in wasm). `software_adapter`: the WebGPU adapter is
    /// a CPU emulation (SwiftShader), where products and encoding's attention run on a kernel
    /// of their own (`bartleby_core::ops::gpu::use_blocked_products`). Returns the manifest as JSON.
    #[wasm_bindgen]
    pub async fn load_bundle(
        files: js_sys::Array,
        backend: String,
        max_buffer_bytes: Option<f64>,
        sha256_checked: bool,
        software_adapter: bool,
    ) -> Result<String, JsError> {
        let mut map = BundleFiles::new();
        for pair in files.iter() {
            let pair = js_sys::Array::from(&pair);
            let name = pair
                .get(0)
                .as_string()
                .ok_or_else(|| JsError::new("load_bundle: a file name is not a string"))?;
            let bytes = js_sys::Uint8Array::new(&pair.get(1)).to_vec();
            map.insert(name, bytes);
        }
        let (device, name): (Device, &'static str) = match backend.as_str() {
            "webgpu" => {
                let device = match WEBGPU.with(|d| d.borrow().clone()) {
                    Some(device) => device,
                    None => {
                        let device = Device::wgpu_options().init_async().await.map_err(|e| {
                            JsError::new(&format!("WebGPU: no usable device ({e:?})"))
                        })?;
                        WEBGPU.with(|d| *d.borrow_mut() = Some(device.clone()));
                        device
                    }
                };
                (device, "webgpu")
            }
            "cpu" => (Device::flex(), "cpu"),
            other => {
                return Err(JsError::new(&format!(
                    "backend {other:?}: expected webgpu or cpu"
                )))
            }
        };
        MODEL.with(|m| m.borrow_mut().take());
        bartleby_core::ops::gpu::use_blocked_products(name == "webgpu" && software_adapter);
        let options = bartleby_core::checkpoint::LoadOptions {
            max_tensor_bytes: max_buffer_bytes.map(|b| b as u64),
            // q8/q4 bundles on the CPU: int8 products, as `bartleby summarize --device cpu`.
            int8_matmul: name == "cpu",
            // f16/bf16 weights are widened to f32 at load in the browser: wasm has no fused
            // multiply-add, which the native half-precision kernels' order is defined by.
            host_weights: false,
        };
        let (manifest, mut summarizer) =
            bartleby_core::pipeline::load_bundle(&map, &device, options, sha256_checked)
                .map_err(err)?;
        // A chat template's `strftime_now` formats the page's clock (UTC), as the CLI's does.
        if let Some(prompting) = summarizer.prompting.as_mut() {
            prompting.now_unix_seconds = Some((js_sys::Date::now() / 1000.0).floor() as i64);
        }
        drop(map);
        let prompting = summarizer
            .prompting
            .as_ref()
            .map(|p| (p.template.clone(), p.system.clone(), p.use_chat));
        MODEL.with(|m| {
            *m.borrow_mut() = Some(Loaded {
                summarizer: Rc::new(summarizer),
                backend: name,
                prompting,
            })
        });
        Ok(String::from_utf8(manifest.to_json()).map_err(err)?)
    }

    /// How the loaded model is prompted, as JSON: `{"model_type", "template", "system",
    /// "chat_template"}` (`chat_template`: whether the model has one, and so uses it by
    /// default) for a decoder-only model; null for an encoder-decoder or when none is loaded.
    #[wasm_bindgen]
    pub fn prompting() -> Option<String> {
        MODEL.with(|m| {
            let m = m.borrow();
            let loaded = m.as_ref()?;
            let (template, system, chat) = loaded.prompting.as_ref()?;
            Some(
                serde_json::json!({
                    "model_type": loaded.summarizer.config.model_type(),
                    "template": template,
                    "system": system,
                    "chat_template": chat,
                })
                .to_string(),
            )
        })
    }

    /// The prompting `options` ask for (`prompt`, `system`, `chat_template`; absent: the
    /// bundle's own), removed from `options`; refused for an encoder-decoder.
    fn wanted_prompting(
        loaded: &Loaded,
        options: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<(String, Option<String>, bool)>, JsError> {
        use serde_json::Value;
        let given: Vec<(&str, Value)> = ["prompt", "system", "chat_template"]
            .into_iter()
            .filter_map(|k| options.remove(k).map(|v| (k, v)))
            .collect();
        let Some((template, system, chat)) = loaded.prompting.clone() else {
            if let Some((key, _)) = given.iter().find(|(_, v)| !v.is_null()) {
                return Err(JsError::new(&format!(
                    "options.{key}: {} is an encoder-decoder model; prompts are for decoder-only models",
                    loaded.summarizer.config.model_type()
                )));
            }
            return Ok(None);
        };
        let has_chat = loaded
            .summarizer
            .prompting
            .as_ref()
            .is_some_and(|p| p.chat.is_some());
        let (mut template, mut system, mut chat) = (template, system, chat);
        for (key, value) in given {
            match (key, value) {
                (_, Value::Null) => {
                    if key == "system" {
                        system = None;
                    }
                }
                ("prompt", Value::String(t)) => {
                    bartleby_core::pipeline::Prompting::check_template(&t).map_err(|e| {
                        err(format!(
                            "options.prompt: {}",
                            e.to_string().trim_start_matches("input: ")
                        ))
                    })?;
                    template = t;
                }
                ("system", Value::String(t)) => system = (!t.is_empty()).then_some(t),
                ("chat_template", Value::Bool(b)) => {
                    if b && !has_chat {
                        return Err(JsError::new(
                            "options.chat_template: the model has no chat template",
                        ));
                    }
                    chat = b;
                }
                ("chat_template", _) => {
                    return Err(JsError::new(
                        "options.chat_template: expected true or false",
                    ))
                }
                (key, _) => return Err(JsError::new(&format!("options.{key}: expected a string"))),
            }
        }
        Ok(Some((template, system, chat)))
    }

    /// Summarizes `text` with the bundle's generation settings overridden by `options` (a JSON
    /// object with generation_config.json's key names, plus `max_input_tokens` and the long-input
    /// keys `long` ("truncate" | "chunk"), `chunk_overlap`, `partial_max_new_tokens`, as the CLI's
    /// flags; decoder-only models also `prompt` (a template with `{dialogue}`), `system` (a
    /// system message; null or "" for none) and `chat_template` (false: the filled prompt as
    /// plain text), as `--prompt`, `--system`, `--no-chat-template`; absent keys mean the
    /// bundle's own). `on_update` is called with a JSON object after every generation step: `{"level",
    /// "step", "max_length", "partial"}` (partial text for greedy search; null for beam search),
    /// and after every batch of windows: `{"level", "done", "total"}`. Returns `{"summary",
    /// "token_ids", "input_tokens", "truncated", "chunks", "levels"}` as JSON.
    #[wasm_bindgen]
    pub async fn summarize(
        text: String,
        options: String,
        on_update: js_sys::Function,
    ) -> Result<String, JsError> {
        let mut options: serde_json::Value = if options.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(&options).map_err(|e| err(format!("options: {e}")))?
        };
        let obj = options
            .as_object_mut()
            .ok_or_else(|| JsError::new("options: expected a JSON object"))?;
        // The prompting this call asks for, set on the model when it differs from what the model
        // holds — only while no other summary runs on it (each run holds the model).
        let summarizer = MODEL.with(|m| -> Result<Rc<Summarizer>, JsError> {
            let mut m = m.borrow_mut();
            let loaded = m.as_mut().ok_or_else(|| JsError::new("no model loaded"))?;
            if let Some((template, system, chat)) = wanted_prompting(loaded, obj)? {
                let held = loaded.summarizer.prompting.as_ref();
                if held.is_some_and(|p| {
                    p.template != template || p.system != system || p.use_chat != chat
                }) {
                    let summarizer = Rc::get_mut(&mut loaded.summarizer).ok_or_else(|| {
                        JsError::new(
                            "another summary is running with another prompt; wait for it to finish",
                        )
                    })?;
                    let p = summarizer.prompting.as_mut().expect("decoder-only");
                    (p.template, p.system, p.use_chat) = (template, system, chat);
                }
            }
            Ok(loaded.summarizer.clone())
        })?;
        let whole = |v: Option<serde_json::Value>, key: &str| -> Result<Option<usize>, JsError> {
            match v {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                    JsError::new(&format!("options.{key}: expected a whole number"))
                }),
            }
        };
        let max_input = whole(obj.remove("max_input_tokens"), "max_input_tokens")?
            .unwrap_or_else(|| summarizer.max_input_tokens());
        let mode = match obj.remove("long") {
            None | Some(serde_json::Value::Null) => bartleby_core::LongMode::Truncate,
            Some(serde_json::Value::String(m)) => m.parse().map_err(err)?,
            Some(_) => {
                return Err(JsError::new(
                    "options.long: expected \"truncate\" or \"chunk\"",
                ))
            }
        };
        let long = bartleby_core::LongOptions {
            mode,
            overlap_tokens: whole(obj.remove("chunk_overlap"), "chunk_overlap")?.unwrap_or(0),
            partial_max_new_tokens: whole(
                obj.remove("partial_max_new_tokens"),
                "partial_max_new_tokens",
            )?,
        };
        let gen = summarizer
            .summarization_generation()
            .map_err(err)?
            .0
            .with_overrides(&options)
            .map_err(err)?;
        if text.trim().is_empty() {
            return Err(JsError::new("the text is empty"));
        }
        let max_length = gen.effective_max_length();
        let greedy = gen.num_beams == 1;
        let tokenizer = summarizer.tokenizer.clone();
        let mut on_event = |event: bartleby_core::LongEvent<'_>| {
            let update = match event {
                bartleby_core::LongEvent::Step {
                    level,
                    step,
                    sequences,
                } => {
                    let partial = if greedy {
                        sequences
                            .first()
                            .and_then(|s| tokenizer.decode(s, true).ok())
                            .map(serde_json::Value::String)
                            .unwrap_or(serde_json::Value::Null)
                    } else {
                        serde_json::Value::Null
                    };
                    serde_json::json!({"level": level, "step": step, "max_length": max_length, "partial": partial})
                }
                bartleby_core::LongEvent::Windows { level, done, total } => {
                    serde_json::json!({"level": level, "done": done, "total": total})
                }
            };
            let _ = on_update.call1(&JsValue::NULL, &JsValue::from_str(&update.to_string()));
        };
        // Windows in batches of 8, as the CLI's default --batch-size.
        let out = summarizer
            .summarize_long_async(&[text.as_str()], &gen, max_input, &long, 8, &mut on_event)
            .await
            .map_err(err)?;
        let (summaries, info) = &out[0];
        let best = &summaries[0];
        Ok(serde_json::json!({
            "summary": best.summary,
            "token_ids": best.token_ids,
            "input_tokens": info.input_tokens,
            "truncated": info.truncated,
            "chunks": info.chunks,
            "levels": info.levels,
        })
        .to_string())
    }

    /// The backend of the loaded model ("webgpu" / "cpu"), or null.
    #[wasm_bindgen]
    pub fn backend() -> Option<String> {
        MODEL.with(|m| m.borrow().as_ref().map(|l| l.backend.to_string()))
    }
}

fn main() {
    #[cfg(target_arch = "wasm32")]
    console_error_panic_hook::set_once();
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("bartleby-worker runs in the browser: build the site with `trunk build --release`");
}
