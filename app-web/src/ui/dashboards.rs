//! The "Dashboards" view: open the files `bartleby eval` / `compare` / `train` write (or the
//! example results shipped under `results/`) and look at them: metrics across runs with their
//! bootstrap intervals, a sortable and filterable per-example table, failure categories with
//! their examples, training curves, and ROUGE/BLEU recomputed in the page.
//!
//! Parsing, charts and table logic live in [`crate::dashboard`] (plain Rust, tested natively);
//! this module only wires them to the page.
//!
//! Stable hooks for tests: `#dash-files` (file input), `#dash-load-examples`, `#dash-chart`,
//! `#dash-table`, `#dash-filter`, `#dash-failures`, `#dash-train`, `#dash-recompute` (button),
//! `#dash-recompute-result`, `#dash-messages`, `#dash-loaded`, `#dash-run` (predictions run
//! picker), `#dash-count` (rows shown).

use crate::dashboard::{
    self as d, check_against, detect, metrics_bar_chart_svg, recompute_with, table_view,
    train_loss_svg, train_validation_svg, Dashboard, Interval, Loaded, MetricCheck,
    RecomputeOptions, Recomputed, SortKey,
};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Rows of the per-example table rendered at most.
const MAX_ROWS: usize = 200;
/// The list of example result files, relative to the page.
const EXAMPLES_INDEX: &str = "results/index.json";
const EXAMPLES_DIR: &str = "results/";

/// A line of the status area.
#[derive(Clone, Debug, PartialEq)]
struct Message {
    error: bool,
    text: String,
}

/// The recomputation shown under the table.
#[derive(Clone, Debug, PartialEq)]
struct RecomputeView {
    run: String,
    /// The file the recomputed values are compared with, if any.
    against: Option<String>,
    result: Result<(Recomputed, Vec<MetricCheck>), String>,
}

fn js_error(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The bytes of a user-picked file.
async fn file_bytes(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("{}: cannot read: {}", file.name(), js_error(e)))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// GETs `url` (relative to the page) and returns the body.
async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let resp = JsFuture::from(window().fetch_with_str(url))
        .await
        .map_err(|e| format!("{url}: fetch failed: {}", js_error(e)))?;
    let resp: web_sys::Response = resp
        .dyn_into()
        .map_err(|_| format!("{url}: fetch returned no response"))?;
    if !resp.ok() {
        return Err(format!(
            "{url}: HTTP {} {}",
            resp.status(),
            resp.status_text()
        ));
    }
    let promise = resp
        .array_buffer()
        .map_err(|e| format!("{url}: cannot read body: {}", js_error(e)))?;
    let buf = JsFuture::from(promise)
        .await
        .map_err(|e| format!("{url}: cannot read body: {}", js_error(e)))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// Parses `results/index.json`: a list of file names (strings, or objects with a `file` field)
/// relative to `results/`.
fn parse_index(bytes: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("{EXAMPLES_INDEX}: invalid JSON: {e}"))?;
    let list = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => match o.get("files") {
            Some(serde_json::Value::Array(a)) => a,
            _ => return Err(format!("{EXAMPLES_INDEX}: expected a list of file names")),
        },
        _ => return Err(format!("{EXAMPLES_INDEX}: expected a list of file names")),
    };
    list.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_str()
                .or_else(|| x.get("file").and_then(|f| f.as_str()))
                .map(str::to_string)
                .ok_or_else(|| format!("{EXAMPLES_INDEX}: entry {i} is not a file name"))
        })
        .collect()
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.digits$}"))
}

/// A score cell: ROUGE as F1 × 100 with its interval; BLEU as is.
fn fmt_interval(i: Option<Interval>, scale: f64) -> String {
    match i {
        None => "–".into(),
        Some(i) if i.low == i.high => format!("{:.2}", scale * i.mid),
        Some(i) => format!(
            "{:.2} [{:.2}, {:.2}]",
            scale * i.mid,
            scale * i.low,
            scale * i.high
        ),
    }
}

#[component]
pub fn Dashboards() -> impl IntoView {
    let dash = RwSignal::new(Dashboard::default());
    let messages = RwSignal::new(Vec::<Message>::new());
    let loaded_files = RwSignal::new(Vec::<(String, String)>::new());
    let busy = RwSignal::new(false);
    let run = RwSignal::new(None::<String>);
    let filter = RwSignal::new(String::new());
    let sort = RwSignal::new((SortKey::Row, false));
    let recomputed = RwSignal::new(None::<RecomputeView>);

    // Adds parsed files; errors go to the status area.
    let ingest = move |results: Vec<Result<Loaded, String>>| {
        let mut msgs = Vec::new();
        let mut files = Vec::new();
        dash.update(|dsh| {
            for r in results {
                match r {
                    Ok(l) => {
                        files.push((l.file().to_string(), l.kind().to_string()));
                        dsh.add(l);
                    }
                    Err(e) => msgs.push(Message {
                        error: true,
                        text: e,
                    }),
                }
            }
        });
        if !files.is_empty() {
            msgs.push(Message {
                error: false,
                text: format!("Loaded {} file(s).", files.len()),
            });
        }
        loaded_files.update(|l| {
            for f in files {
                l.retain(|x| x.0 != f.0);
                l.push(f);
            }
        });
        messages.set(msgs);
        // Show the first predictions set when none is picked (or the picked one is gone).
        let names: Vec<String> =
            dash.with_untracked(|x| x.predictions.iter().map(|p| p.name.clone()).collect());
        let current = run.get_untracked();
        if current.as_ref().is_none_or(|c| !names.contains(c)) {
            run.set(names.first().cloned());
        }
    };

    let on_files = move |ev: web_sys::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(list) = input.files() else {
            return;
        };
        let files: Vec<web_sys::File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
        if files.is_empty() {
            return;
        }
        busy.set(true);
        spawn_local(async move {
            let mut results = Vec::with_capacity(files.len());
            for f in &files {
                let name = f.name();
                results.push(match file_bytes(f).await {
                    Ok(bytes) => detect(&name, &bytes),
                    Err(e) => Err(e),
                });
            }
            ingest(results);
            busy.set(false);
            // Picking the same files again fires `change` again.
            input.set_value("");
        });
    };

    let load_examples = move |_| {
        busy.set(true);
        spawn_local(async move {
            let results = match fetch_bytes(EXAMPLES_INDEX)
                .await
                .and_then(|b| parse_index(&b))
            {
                Err(e) => vec![Err(e)],
                Ok(names) if names.is_empty() => {
                    vec![Err(format!("{EXAMPLES_INDEX}: lists no file"))]
                }
                Ok(names) => {
                    let mut out = Vec::with_capacity(names.len());
                    for name in names {
                        let url = format!("{EXAMPLES_DIR}{name}");
                        out.push(match fetch_bytes(&url).await {
                            Ok(bytes) => detect(&name, &bytes),
                            Err(e) => Err(e),
                        });
                    }
                    out
                }
            };
            ingest(results);
            busy.set(false);
        });
    };

    // The rows of the picked predictions set, filtered and sorted.
    let view_rows = Memo::new(move |_| {
        let name = run.get();
        let q = filter.get();
        let (key, desc) = sort.get();
        dash.with(|x| {
            let Some(p) = x
                .predictions
                .iter()
                .find(|p| Some(&p.name) == name.as_ref())
            else {
                return (Vec::new(), 0, 0);
            };
            let idx = table_view(&p.rows, &q, key, desc);
            let matched = idx.len();
            let shown: Vec<d::PredictionRow> = idx
                .into_iter()
                .take(MAX_ROWS)
                .map(|i| p.rows[i].clone())
                .collect();
            (shown, matched, p.rows.len())
        })
    });

    let header = move |label: &'static str, key: SortKey, class: &'static str| {
        let arrow = move || {
            let (k, desc) = sort.get();
            if k != key {
                ""
            } else if desc {
                " ▼"
            } else {
                " ▲"
            }
        };
        view! {
            <th
                class=format!("dash-sortable {class}")
                data-sort=label
                on:click=move |_| {
                    sort.update(|s| {
                        if s.0 == key {
                            s.1 = !s.1;
                        } else {
                            *s = (key, false);
                        }
                    })
                }
            >
                {label}
                {arrow}
            </th>
        }
    };

    let do_recompute = move |_| {
        let Some(name) = run.get_untracked() else {
            messages.set(vec![Message {
                error: true,
                text: "Load a NAME_predictions.csv first.".into(),
            }]);
            return;
        };
        let view = dash.with_untracked(|x| {
            let p = x.predictions.iter().find(|p| p.name == name)?;
            let metrics = x.metrics_of(&name);
            let opts =
                metrics.map_or_else(RecomputeOptions::default, RecomputeOptions::from_metrics);
            let result = recompute_with(&p.rows, &opts).map(|re| {
                let checks = metrics
                    .map(|m| check_against(&m.scores, &re))
                    .unwrap_or_else(|| check_against(&re.scores(&name), &re))
                    .into_iter()
                    .map(|c| {
                        if metrics.is_some() {
                            c
                        } else {
                            MetricCheck {
                                file: None,
                                matches: None,
                                ..c
                            }
                        }
                    })
                    .collect();
                (re, checks)
            });
            Some(RecomputeView {
                run: name.clone(),
                against: metrics.map(|m| m.file.clone()),
                result,
            })
        });
        recomputed.set(view);
    };

    let chart_svg = move || dash.with(|x| metrics_bar_chart_svg(&x.chart_runs()));

    view! {
        <section class="dashboards">
            <div class="dash-controls">
                <label class="dash-open">
                    "Open result files "
                    <input
                        id="dash-files"
                        type="file"
                        multiple
                        accept=".json,.jsonl,.csv,.md"
                        on:change=on_files
                    />
                </label>
                <button id="dash-load-examples" class="dash-button" on:click=load_examples>
                    "Load example results"
                </button>
                <span class="dash-busy" class:hidden=move || !busy.get()>
                    "Loading…"
                </span>
            </div>
            <p class="dash-help">
                "Drop any mix of NAME_metrics.json (with its failure report), NAME_metrics.csv, "
                "NAME_predictions.csv (bartleby eval), a bartleby compare JSON, or "
                "runs/NAME/metrics.jsonl (bartleby train). Nothing leaves your browser."
            </p>
            <ul id="dash-messages" class="dash-messages">
                {move || {
                    messages
                        .get()
                        .into_iter()
                        .map(|m| {
                            view! {
                                <li class={if m.error { "dash-error" } else { "dash-ok" }}>{m.text}</li>
                            }
                        })
                        .collect_view()
                }}
            </ul>
            <ul id="dash-loaded" class="dash-loaded">
                {move || {
                    loaded_files
                        .get()
                        .into_iter()
                        .map(|(f, k)| {
                            view! {
                                <li>
                                    <span class="dash-file">{f}</span>
                                    " "
                                    <span class="dash-kind">{k}</span>
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ul>

            <h2>"Metrics across runs"</h2>
            <div id="dash-chart" class="dash-chart" inner_html=chart_svg></div>
            {move || scores_table(&dash.get())}

            <h2>"Per-example predictions"</h2>
            <div class="dash-table-controls">
                <label>
                    "Run "
                    <select
                        id="dash-run"
                        on:change=move |ev| {
                            let v = event_target_value(&ev);
                            run.set(if v.is_empty() { None } else { Some(v) });
                            recomputed.set(None);
                        }
                    >
                        {move || {
                            let current = run.get();
                            dash.with(|x| {
                                x.predictions
                                    .iter()
                                    .map(|p| {
                                        let selected = Some(&p.name) == current.as_ref();
                                        view! {
                                            <option value=p.name.clone() selected=selected>
                                                {p.name.clone()}
                                            </option>
                                        }
                                    })
                                    .collect_view()
                            })
                        }}
                    </select>
                </label>
                <input
                    id="dash-filter"
                    type="search"
                    placeholder="Filter dialogue, reference, prediction…"
                    prop:value=move || filter.get()
                    on:input=move |ev| filter.set(event_target_value(&ev))
                />
                <button id="dash-recompute" class="dash-button" on:click=do_recompute>
                    "Recompute ROUGE/BLEU here"
                </button>
            </div>
            <p id="dash-count" class="dash-count">
                {move || {
                    let (shown, matched, total) = view_rows.get();
                    if total == 0 {
                        "No predictions loaded.".to_string()
                    } else if matched == total {
                        format!("Showing {} of {total} rows.", shown.len())
                    } else {
                        format!("Showing {} of {matched} matching rows ({total} in all).", shown.len())
                    }
                }}
            </p>
            <div id="dash-recompute-result" class="dash-recompute-result">
                {move || recomputed.get().map(recompute_view)}
            </div>
            <div class="dash-table-wrap">
                <table id="dash-table" class="dash-table">
                    <thead>
                        <tr>
                            {header("id", SortKey::Id, "col-id")}
                            {header("dialogue", SortKey::DialogueWords, "col-dialogue")}
                            {header("reference", SortKey::ReferenceWords, "col-reference")}
                            {header("prediction", SortKey::PredictionWords, "col-prediction")}
                            {header("ROUGE-L", SortKey::RougeL, "col-rouge")}
                        </tr>
                    </thead>
                    <tbody>
                        {move || {
                            view_rows
                                .get()
                                .0
                                .into_iter()
                                .map(|r| {
                                    view! {
                                        <tr>
                                            <td class="col-id">{r.id}</td>
                                            <td class="col-dialogue">
                                                <div class="dash-clip">{r.dialogue}</div>
                                            </td>
                                            <td class="col-reference">{r.reference}</td>
                                            <td class="col-prediction">{r.prediction}</td>
                                            <td class="col-rouge num">{fmt_opt(r.rouge_l, 3)}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()
                        }}
                    </tbody>
                </table>
            </div>

            <h2>"Failure categories"</h2>
            <div id="dash-failures" class="dash-failures">
                {move || dash.with(|x| failures_view(&x.failures))}
            </div>

            <h2>"Training curves"</h2>
            <div id="dash-train" class="dash-train">
                {move || dash.with(|x| train_view(&x.train))}
            </div>

            <h2>"Model ranking"</h2>
            <div id="dash-ranking" class="dash-ranking">
                {move || dash.with(|x| ranking_view(&x.rankings))}
            </div>
        </section>
    }
}

/// The numbers behind the chart, with the comparisons' deltas and warnings.
fn scores_table(x: &Dashboard) -> impl IntoView {
    let runs = x.chart_runs();
    if runs.is_empty() {
        return view! { <p class="dash-empty">"No metrics loaded."</p> }.into_any();
    }
    let delta_of = |name: &str, metric: &str| {
        x.comparisons
            .iter()
            .flat_map(|c| &c.runs)
            .find(|r| r.scores.name == name)
            .and_then(|r| r.deltas.iter().find(|d| d.metric == metric))
            .map(|d| {
                let scale = if metric == "bleu" { 1.0 } else { 100.0 };
                let mark = if d.significant == Some(true) { "*" } else { "" };
                format!(" ({:+.2}{mark})", scale * d.delta)
            })
            .unwrap_or_default()
    };
    let rows = runs
        .iter()
        .map(|r| {
            let mut cells: Vec<String> = (0..4)
                .map(|k| fmt_interval(r.rouge[k], 100.0) + &delta_of(&r.name, d::ROUGE_KEYS[k]))
                .collect();
            cells.push(fmt_opt(r.bleu, 2) + &delta_of(&r.name, "bleu"));
            view! {
                <tr>
                    <td>{r.name.clone()}</td>
                    <td class="num">{r.n.map(|n| n.to_string()).unwrap_or_default()}</td>
                    {cells.into_iter().map(|c| view! { <td class="num">{c}</td> }).collect_view()}
                </tr>
            }
        })
        .collect_view();
    let notes = x
        .comparisons
        .iter()
        .flat_map(|c| c.warnings.iter().cloned())
        .map(|w| view! { <p class="dash-warning">{w}</p> })
        .collect_view();
    let rule = x.comparisons.iter().find_map(|c| c.rule.clone());
    view! {
        <table id="dash-scores" class="dash-scores">
            <thead>
                <tr>
                    <th>"run"</th>
                    <th>"n"</th>
                    <th>"ROUGE-1"</th>
                    <th>"ROUGE-2"</th>
                    <th>"ROUGE-L"</th>
                    <th>"ROUGE-Lsum"</th>
                    <th>"BLEU"</th>
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
        <p class="dash-note">
            "ROUGE: F1 × 100, mid [low, high] of the 95% bootstrap interval; BLEU 0-100. "
            {rule.map(|r| format!("Deltas against the comparison's baseline. {r}"))}
        </p>
        {notes}
    }
    .into_any()
}

fn recompute_view(v: RecomputeView) -> impl IntoView {
    match v.result {
        Err(e) => view! { <p class="dash-error">{format!("{}: {e}", v.run)}</p> }.into_any(),
        Ok((re, checks)) => {
            let o = re.options;
            let settings = format!(
                "{}: {} rows, ROUGE {} the stemmer, {} bootstrap resamples (seed {}); corpus BLEU. ",
                v.run,
                re.n,
                if o.stemmer { "with" } else { "without" },
                o.bootstrap_samples,
                o.bootstrap_seed
            );
            let against = match &v.against {
                Some(f) => format!("Compared with {f}."),
                None => format!(
                    "No NAME_metrics.json of {} is loaded: recomputed values only (stemmed, 1000 resamples, seed 0).",
                    v.run
                ),
            };
            let per_example = if re.rouge_l_mismatches == 0 {
                "Per-example ROUGE-L: every rougeL_score of the file matches.".to_string()
            } else {
                format!(
                    "Per-example ROUGE-L: {} row(s) differ from rougeL_score (largest difference {:.2e}).",
                    re.rouge_l_mismatches, re.rouge_l_max_diff
                )
            };
            let rows = checks
                .into_iter()
                .map(|c| {
                    let scale = if c.label == "BLEU" { 1.0 } else { 100.0 };
                    let (mark, class) = match c.matches {
                        Some(true) => ("✓ same", "dash-match"),
                        Some(false) => ("✗ differs", "dash-mismatch"),
                        None => ("", ""),
                    };
                    view! {
                        <tr class=class>
                            <td>{c.label}</td>
                            <td class="num">{fmt_interval(c.file, scale)}</td>
                            <td class="num">{fmt_interval(c.here, scale)}</td>
                            <td>{mark}</td>
                        </tr>
                    }
                })
                .collect_view();
            view! {
                <p class="dash-note">{settings}{against}</p>
                <table class="dash-recompute-table">
                    <thead>
                        <tr>
                            <th>"metric"</th>
                            <th>"file"</th>
                            <th>"recomputed here"</th>
                            <th></th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
                <p class="dash-note">{per_example}</p>
            }
            .into_any()
        }
    }
}

fn failures_view(reports: &[d::FailureReport]) -> impl IntoView {
    if reports.is_empty() {
        return view! { <p class="dash-empty">"No NAME_metrics.json with a failure report loaded."</p> }.into_any();
    }
    reports
        .iter()
        .map(|r| {
            let head = format!(
                "{}: {} of {} examples flagged{}",
                r.name,
                r.flagged.map_or("?".into(), |x| x.to_string()),
                r.total.map_or("?".into(), |x| x.to_string()),
                r.model
                    .as_ref()
                    .map(|m| format!(" (model {m})"))
                    .unwrap_or_default()
            );
            let counts = r
                .counts
                .iter()
                .map(|c| {
                    view! {
                        <tr class:dash-zero={c.count == 0}>
                            <td>{c.category.clone()}</td>
                            <td class="num">{c.count}</td>
                            <td class="num">{format!("{:.1}%", c.share_pct)}</td>
                        </tr>
                    }
                })
                .collect_view();
            let cats = r
                .categories
                .iter()
                .map(|c| {
                    let examples = c.examples.iter().map(failure_example).collect_view();
                    view! {
                        <details class="dash-category" data-category=c.category.clone()>
                            <summary>
                                {format!("{} ({} worst)", c.category, c.examples.len())}
                            </summary>
                            {examples}
                        </details>
                    }
                })
                .collect_view();
            view! {
                <div class="dash-failure-report">
                    <h3>{head}</h3>
                    <table class="dash-failure-counts">
                        <thead>
                            <tr>
                                <th>"category"</th>
                                <th>"examples"</th>
                                <th>"share"</th>
                            </tr>
                        </thead>
                        <tbody>{counts}</tbody>
                    </table>
                    {cats}
                </div>
            }
        })
        .collect_view()
        .into_any()
}

fn failure_example(e: &d::FailureExample) -> impl IntoView {
    let title = format!(
        "{}: severity {:.3}{}",
        e.id,
        e.severity,
        e.rouge_l
            .map(|r| format!(", ROUGE-L F {r:.3}"))
            .unwrap_or_default()
    );
    let mut facts: Vec<(String, String)> = Vec::new();
    if let Some(w) = &e.words {
        facts.push(("Words".into(), w.clone()));
    }
    if !e.not_in_dialogue.is_empty() {
        facts.push(("Not in the dialogue".into(), e.not_in_dialogue.join(", ")));
    }
    if let Some(r) = &e.repeated {
        facts.push(("Repeated".into(), r.clone()));
    }
    for n in &e.notes {
        facts.push((String::new(), n.clone()));
    }
    facts.push(("Reference".into(), e.reference.clone()));
    facts.push(("Generated".into(), e.generated.clone()));
    let facts = facts
        .into_iter()
        .map(|(k, v)| {
            view! {
                <li>
                    <span class="dash-fact">{k}</span>
                    " "
                    {v}
                </li>
            }
        })
        .collect_view();
    let dialogue = if e.dialogue_truncated {
        format!("{}\n…", e.dialogue)
    } else {
        e.dialogue.clone()
    };
    view! {
        <div class="dash-example">
            <h4>{title}</h4>
            <ul>{facts}</ul>
            <pre class="dash-dialogue">{dialogue}</pre>
        </div>
    }
}

fn train_view(logs: &[d::TrainLog]) -> impl IntoView {
    if logs.is_empty() {
        return view! { <p class="dash-empty">"No runs/NAME/metrics.jsonl loaded."</p> }.into_any();
    }
    let loss = train_loss_svg(logs);
    let val = train_validation_svg(logs);
    let rows = logs
        .iter()
        .map(|l| {
            let last = l.steps.last();
            let best = l
                .validations
                .iter()
                .filter_map(|v| Some((v.rouge_l?, v.step)))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let peak = l
                .steps
                .iter()
                .filter_map(|s| s.peak_rss_bytes)
                .max()
                .map(|b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)));
            view! {
                <tr>
                    <td>{l.name.clone()}</td>
                    <td class="num">{last.map(|s| s.step.to_string()).unwrap_or_default()}</td>
                    <td class="num">{fmt_opt(last.map(|s| s.loss), 4)}</td>
                    <td class="num">
                        {best.map(|(r, s)| format!("{} (step {s})", d::pct(r))).unwrap_or_default()}
                    </td>
                    <td class="num">{fmt_opt(last.and_then(|s| s.tokens_per_s), 0)}</td>
                    <td class="num">{peak.unwrap_or_default()}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="dash-chart" inner_html=loss></div>
        {val.map(|v| view! { <div class="dash-chart" inner_html=v></div> })}
        <table class="dash-train-table">
            <thead>
                <tr>
                    <th>"run"</th>
                    <th>"last step"</th>
                    <th>"loss"</th>
                    <th>"best val ROUGE-L"</th>
                    <th>"tokens/s"</th>
                    <th>"peak RSS"</th>
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

/// `final_ranking.json` files of `bartleby benchmark`: the composite chart and the table.
fn ranking_view(rankings: &[d::Ranking]) -> impl IntoView {
    if rankings.is_empty() {
        return view! { <p class="dash-empty">"No final_ranking.json (bartleby benchmark) loaded."</p> }
            .into_any();
    }
    rankings
        .iter()
        .map(|r| {
            let chart = d::ranking_svg(r);
            let rows = r
                .rows
                .iter()
                .map(|row| {
                    let interval = match (row.rank_low, row.rank_high) {
                        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
                        _ => String::new(),
                    };
                    view! {
                        <tr>
                            <td class="num">{row.rank.map(|k| k.to_string()).unwrap_or_default()}</td>
                            <td title=row.model_id.clone()>{row.model.clone()}</td>
                            <td class="num">{fmt_opt(row.rouge_l, 2)}</td>
                            <td class="num">{fmt_opt(row.time, 2)}</td>
                            <td class="num">{fmt_opt(row.throughput, 2)}</td>
                            <td class="num">{fmt_opt(row.composite_score, 3)}</td>
                            <td class="num">{fmt_opt(row.p_first, 2)}</td>
                            <td class="num">{interval}</td>
                            <td>{row.error.clone().unwrap_or_default()}</td>
                        </tr>
                    }
                })
                .collect_view();
            view! {
                <h3>{r.file.clone()}</h3>
                <div class="dash-chart" inner_html=chart></div>
                <table class="dash-ranking-table">
                    <thead>
                        <tr>
                            <th>"rank"</th>
                            <th>"model"</th>
                            <th>"ROUGE-L"</th>
                            <th>"time (s)"</th>
                            <th>"throughput"</th>
                            <th>"composite"</th>
                            <th>"P(rank 1)"</th>
                            <th>"rank interval"</th>
                            <th>"error"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            }
        })
        .collect_view()
        .into_any()
}
