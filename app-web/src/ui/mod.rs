//! The Leptos views. Everything model-related goes through `window.bartleby`
//! (public/bartleby.js → the worker), the same API embedders use.

pub mod dashboards;

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{json, Value};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

fn js_err(v: JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

fn api() -> Result<JsValue, String> {
    let v = js_sys::Reflect::get(&js_sys::global(), &"bartleby".into()).map_err(js_err)?;
    if v.is_undefined() {
        return Err("window.bartleby is missing (bartleby.js did not load)".into());
    }
    Ok(v)
}

fn to_json(v: &JsValue) -> Value {
    js_sys::JSON::stringify(v)
        .ok()
        .and_then(|s| s.as_string())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn from_json(v: &Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::NULL)
}

/// `await window.bartleby[method](...args)`.
async fn call(method: &str, args: &[JsValue]) -> Result<JsValue, String> {
    let api = api()?;
    let f: js_sys::Function = js_sys::Reflect::get(&api, &method.into())
        .map_err(js_err)?
        .dyn_into()
        .map_err(|_| format!("bartleby.{method} is not a function"))?;
    let args: js_sys::Array = args.iter().collect();
    let promise = f.apply(&api, &args).map_err(js_err)?;
    JsFuture::from(js_sys::Promise::from(promise))
        .await
        .map_err(js_err)
}

fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

fn format_bytes(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.0} KB", n / 1e3)
    }
}

#[component]
pub fn App() -> impl IntoView {
    let (tab, set_tab) = signal("summarize");
    let shown = move |name: &'static str| {
        move || {
            if tab.get() == name {
                ""
            } else {
                "display:none"
            }
        }
    };
    view! {
        <header>
            <h1>"Bartleby"</h1>
            <p class="tagline">"Dialogue summarization that runs entirely in your browser — nothing you type leaves this machine."</p>
            <nav>
                <button id="tab-summarize" class:active=move || tab.get() == "summarize"
                    on:click=move |_| set_tab.set("summarize")>"Summarize"</button>
                <button id="tab-dashboards" class:active=move || tab.get() == "dashboards"
                    on:click=move |_| set_tab.set("dashboards")>"Dashboards"</button>
            </nav>
        </header>
        <main>
            <section id="view-summarize" style=shown("summarize")><Summarize/></section>
            <section id="view-dashboards" style=shown("dashboards")><dashboards::Dashboards/></section>
        </main>
    }
}

#[derive(Clone, Default)]
struct Status {
    loaded: bool,
    loading: bool,
    backend: Option<String>,
    notice: Option<String>,
    error: Option<String>,
    progress: Option<String>,
    model: Option<String>,
    /// Decoder-only models: `{model_type, template, system, chat_template}` (see bartleby.js).
    prompting: Option<Value>,
}

fn status_from(v: &Value) -> Status {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let progress = v.get("progress").filter(|p| !p.is_null()).map(|p| {
        match (
            p.get("loaded").and_then(Value::as_f64),
            p.get("total").and_then(Value::as_f64),
        ) {
            (Some(l), Some(t)) if t > 0.0 => format!(
                "downloading {} / {} ({:.0}%)",
                format_bytes(l),
                format_bytes(t),
                100.0 * l / t
            ),
            _ => format!(
                "starting the {} backend…",
                p.get("backend").and_then(Value::as_str).unwrap_or("model")
            ),
        }
    });
    let model = v.get("manifest").filter(|m| !m.is_null()).map(|m| {
        format!(
            "{} ({}, {} parameters)",
            m.pointer("/source/model")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            m.get("quantization").and_then(Value::as_str).unwrap_or("?"),
            m.get("parameters").and_then(Value::as_u64).unwrap_or(0)
        )
    });
    Status {
        loaded: v.get("loaded").and_then(Value::as_bool).unwrap_or(false),
        loading: v.get("loading").and_then(Value::as_bool).unwrap_or(false),
        backend: s("backend"),
        notice: s("notice"),
        error: s("error"),
        progress,
        model,
        prompting: v.get("prompting").filter(|p| p.is_object()).cloned(),
    }
}

#[component]
fn Summarize() -> impl IntoView {
    let (status, set_status) = signal(Status::default());
    let (text, set_text) = signal(String::new());
    let (examples, set_examples) = signal(Vec::<(String, String)>::new());
    let (num_beams, set_num_beams) = signal(String::new());
    let (min_length, set_min_length) = signal(String::new());
    let (max_length, set_max_length) = signal(String::new());
    let (length_penalty, set_length_penalty) = signal(String::new());
    let (no_repeat, set_no_repeat) = signal(String::new());
    let (max_input, set_max_input) = signal(String::new());
    let (long, set_long) = signal("truncate".to_string());
    // Decoder-only models: the prompt template, system message and chat-template switch, reset
    // to the model's own whenever a model loads.
    let (prompt, set_prompt) = signal(String::new());
    let (system, set_system) = signal(String::new());
    let (use_chat, set_use_chat) = signal(true);
    let (output, set_output) = signal(String::new());
    let (token_ids, set_token_ids) = signal(String::new());
    let (stats, set_stats) = signal(String::new());
    let (error, set_error) = signal(String::new());
    let (busy, set_busy) = signal(false);

    // Status updates from the worker API.
    if let Ok(api) = api() {
        let cb = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| {
            set_status.set(status_from(&to_json(&v)));
        });
        if let Ok(f) = js_sys::Reflect::get(&api, &"onStatus".into()) {
            if let Ok(f) = f.dyn_into::<js_sys::Function>() {
                let _ = f.call1(&api, cb.as_ref());
            }
        }
        cb.forget();
    }

    let prompting = Memo::new(move |_| status.get().prompting);
    let decoder_only = move || prompting.get().is_some();
    Effect::new(move |_| {
        if let Some(p) = prompting.get() {
            let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            set_prompt.set(s("template"));
            set_system.set(s("system"));
            set_use_chat.set(
                p.get("chat_template")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            );
        }
    });

    // The model: ?model=<url>, else the bundle shipped under the site (model/).
    spawn_local(async move {
        let url = query_param("model").unwrap_or_else(|| "model/".into());
        if let Err(e) = call("load", &[JsValue::from_str(&url)]).await {
            set_error.set(format!(
                "{e} — pick a bundle folder below, or open the page with ?model=<url>"
            ));
        }
    });

    // Bundled examples (a few validation dialogues copied in at build time).
    spawn_local(async move {
        let Some(window) = web_sys::window() else {
            return;
        };
        let Ok(resp) = JsFuture::from(window.fetch_with_str("examples.json")).await else {
            return;
        };
        let resp: web_sys::Response = resp.unchecked_into();
        if !resp.ok() {
            return;
        }
        let Ok(json) = resp.json() else { return };
        let Ok(json) = JsFuture::from(json).await else {
            return;
        };
        let list = to_json(&json);
        let items = list
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        Some((
                            r.get("id")?.as_str()?.to_string(),
                            r.get("dialogue")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        set_examples.set(items);
    });

    // A folder picker: `webkitdirectory` is not a typed attribute in leptos' view macro.
    let picker: NodeRef<leptos::html::Input> = NodeRef::new();
    Effect::new(move |_| {
        if let Some(el) = picker.get() {
            let _ = el.set_attribute("webkitdirectory", "");
        }
    });

    let pick_files = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(files) = input.files() else { return };
        set_error.set(String::new());
        spawn_local(async move {
            if let Err(e) = call("loadFiles", &[files.into()]).await {
                set_error.set(e);
            }
        });
    };

    let options = move || {
        let mut o = serde_json::Map::new();
        let mut int = |key: &str, v: String| {
            if let Ok(n) = v.trim().parse::<u64>() {
                o.insert(key.into(), json!(n));
            }
        };
        int("num_beams", num_beams.get());
        // Decoder-only models count generated tokens (transformers' *_new_tokens).
        let new_tokens = prompting.get_untracked().is_some();
        int(
            if new_tokens {
                "min_new_tokens"
            } else {
                "min_length"
            },
            min_length.get(),
        );
        int(
            if new_tokens {
                "max_new_tokens"
            } else {
                "max_length"
            },
            max_length.get(),
        );
        int("no_repeat_ngram_size", no_repeat.get());
        int("max_input_tokens", max_input.get());
        if let Ok(x) = length_penalty.get().trim().parse::<f64>() {
            o.insert("length_penalty".into(), json!(x));
        }
        o.insert("long".into(), json!(long.get()));
        if prompting.get_untracked().is_some() {
            o.insert("prompt".into(), json!(prompt.get()));
            let system = system.get();
            o.insert(
                "system".into(),
                if system.trim().is_empty() {
                    Value::Null
                } else {
                    json!(system)
                },
            );
            o.insert("chat_template".into(), json!(use_chat.get()));
        }
        Value::Object(o)
    };

    let run = move |_| {
        let input = text.get();
        if input.trim().is_empty() {
            set_error.set("Paste a dialogue (or pick an example) first.".into());
            return;
        }
        set_error.set(String::new());
        set_output.set(String::new());
        set_token_ids.set(String::new());
        set_stats.set(String::new());
        set_busy.set(true);
        let opts = options();
        spawn_local(async move {
            let on_update = Closure::<dyn FnMut(JsValue)>::new(move |u: JsValue| {
                let u = to_json(&u);
                let level = u.get("level").and_then(Value::as_u64).unwrap_or(1);
                if let (Some(d), Some(t)) = (
                    u.get("done").and_then(Value::as_u64),
                    u.get("total").and_then(Value::as_u64),
                ) {
                    // --long chunk: the windows of each level as they finish.
                    if t > 1 || level > 1 {
                        set_stats.set(format!("level {level}: {d} of {t} summaries"));
                    }
                } else if let Some(p) = u.get("partial").and_then(Value::as_str) {
                    set_output.set(if level > 1 || long.get_untracked() == "chunk" {
                        format!("[level {level}] {p}")
                    } else {
                        p.to_string()
                    });
                } else if let (Some(s), Some(m)) = (
                    u.get("step").and_then(Value::as_u64),
                    u.get("max_length").and_then(Value::as_u64),
                ) {
                    set_stats.set(format!("beam search: step {s} of at most {m}"));
                }
            });
            let result = call(
                "summarize",
                &[
                    JsValue::from_str(&input),
                    from_json(&opts),
                    on_update.as_ref().clone(),
                ],
            )
            .await;
            drop(on_update);
            set_busy.set(false);
            match result {
                Ok(r) => {
                    let r = to_json(&r);
                    set_output.set(
                        r.get("summary")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                    );
                    set_token_ids.set(r.get("token_ids").map(Value::to_string).unwrap_or_default());
                    let num = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
                    let how = if r.get("truncated").and_then(Value::as_bool) == Some(true) {
                        format!(
                            " · input cut at the window ({} tokens; try long inputs: chunk)",
                            num("input_tokens")
                        )
                    } else if num("levels") > 1 {
                        format!(" · {} windows, {} levels", num("chunks"), num("levels"))
                    } else {
                        String::new()
                    };
                    set_stats.set(format!(
                        "{:.0} ms · {} tokens · {:.1} tokens/s · {}{how}",
                        r.get("ms").and_then(Value::as_f64).unwrap_or(0.0),
                        r.get("tokens").and_then(Value::as_u64).unwrap_or(0),
                        r.get("tokens_per_s").and_then(Value::as_f64).unwrap_or(0.0),
                        r.get("backend").and_then(Value::as_str).unwrap_or("?"),
                    ));
                }
                Err(e) => set_error.set(e),
            }
        });
    };

    let cancel = move |_| {
        if let Ok(api) = api() {
            if let Ok(f) = js_sys::Reflect::get(&api, &"cancel".into()) {
                if let Ok(f) = f.dyn_into::<js_sys::Function>() {
                    let _ = f.call0(&api);
                }
            }
        }
        set_busy.set(false);
        set_stats.set("cancelled".into());
    };

    view! {
        <div class="status-bar">
            <span id="model-status">{move || {
                let s = status.get();
                if s.loaded {
                    format!("Model: {}", s.model.unwrap_or_default())
                } else if let Some(p) = s.progress {
                    p
                } else if s.loading {
                    "Loading the model…".to_string()
                } else if let Some(e) = s.error {
                    format!("No model: {e}")
                } else {
                    "No model loaded".to_string()
                }
            }}</span>
            <span id="backend" class="badge">{move || match status.get().backend {
                Some(b) if b == "webgpu" => "WebGPU".to_string(),
                Some(b) if b == "cpu" => "CPU (wasm)".to_string(),
                Some(b) if b == "server" => "Server".to_string(),
                _ => "—".to_string(),
            }}</span>
            <label class="picker">"Open a bundle folder: "
                <input id="model-files" type="file" multiple node_ref=picker on:change=pick_files/>
            </label>
        </div>
        <p id="notice" class="notice" style=move || if status.get().notice.is_some() { "" } else { "display:none" }>
            {move || status.get().notice.unwrap_or_default()}
        </p>
        <div class="columns">
            <div class="col">
                <label>"Example: "
                    <select id="examples" on:change=move |ev| {
                        let i: usize = event_target_value(&ev).parse().unwrap_or(usize::MAX);
                        if let Some((_, d)) = examples.get().get(i) {
                            set_text.set(d.clone());
                        }
                    }>
                        <option value="">"— pick one —"</option>
                        {move || examples.get().into_iter().enumerate().map(|(i, (id, _))| {
                            view! { <option value=i.to_string()>{id}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <textarea id="input" rows="14" placeholder="Paste a dialogue…"
                    prop:value=move || text.get()
                    on:input=move |ev| set_text.set(event_target_value(&ev))></textarea>
                <fieldset id="prompting" class="settings" style=move || if decoder_only() { "" } else { "display:none" }>
                    <legend>{move || format!(
                        "Prompt ({} is decoder-only: the dialogue goes where {{dialogue}} is)",
                        prompting.get().and_then(|p| p.get("model_type").and_then(Value::as_str).map(String::from)).unwrap_or_default()
                    )}</legend>
                    <textarea id="prompt" rows="3" prop:value=move || prompt.get()
                        on:input=move |ev| set_prompt.set(event_target_value(&ev))></textarea>
                    <label>"system message "<input id="system" type="text" placeholder="none"
                        prop:value=move || system.get() on:input=move |ev| set_system.set(event_target_value(&ev))/></label>
                    <label title="Render the prompt with the model's chat template (as apply_chat_template), or tokenize it as plain text">
                        <input id="chat-template" type="checkbox" prop:checked=move || use_chat.get()
                            disabled=move || !prompting.get().and_then(|p| p.get("chat_template").and_then(Value::as_bool)).unwrap_or(false)
                            on:change=move |ev| set_use_chat.set(event_target_checked(&ev))/>
                        " chat template"
                    </label>
                </fieldset>
                <fieldset class="settings">
                    <legend>"Generation (empty = the model's generation_config.json)"</legend>
                    <label>"beams "<input id="num-beams" type="number" min="1" prop:value=move || num_beams.get() on:input=move |ev| set_num_beams.set(event_target_value(&ev))/></label>
                    <label>{move || if decoder_only() { "min new tokens " } else { "min length " }}<input id="min-length" type="number" min="0" prop:value=move || min_length.get() on:input=move |ev| set_min_length.set(event_target_value(&ev))/></label>
                    <label>{move || if decoder_only() { "max new tokens " } else { "max length " }}<input id="max-length" type="number" min="1" prop:value=move || max_length.get() on:input=move |ev| set_max_length.set(event_target_value(&ev))/></label>
                    <label>"length penalty "<input id="length-penalty" type="number" step="0.1" prop:value=move || length_penalty.get() on:input=move |ev| set_length_penalty.set(event_target_value(&ev))/></label>
                    <label>"no-repeat n-gram "<input id="no-repeat" type="number" min="0" prop:value=move || no_repeat.get() on:input=move |ev| set_no_repeat.set(event_target_value(&ev))/></label>
                    <label>"max input tokens "<input id="max-input" type="number" min="2" prop:value=move || max_input.get() on:input=move |ev| set_max_input.set(event_target_value(&ev))/></label>
                    <label title="Inputs longer than the window: cut them (as transformers does), or summarize windows of whole turns and then their summaries">"long inputs "
                        <select id="long" on:change=move |ev| set_long.set(event_target_value(&ev))>
                            <option value="truncate" selected=true>"truncate"</option>
                            <option value="chunk">"chunk"</option>
                        </select>
                    </label>
                </fieldset>
                <button id="summarize" on:click=run disabled=move || busy.get() || !status.get().loaded>"Summarize"</button>
                <button id="cancel" on:click=cancel disabled=move || !busy.get()>"Cancel"</button>
            </div>
            <div class="col">
                <h2>"Summary"</h2>
                <div id="output" class="output">{move || output.get()}</div>
                <p id="stats" class="stats">{move || stats.get()}</p>
                <details><summary>"token ids"</summary><pre id="token-ids">{move || token_ids.get()}</pre></details>
                <p id="error" class="error">{move || error.get()}</p>
            </div>
        </div>
    }
}
