//! `bartleby serve`: the HTTP server (axum on tokio). Handlers check a request, queue its inputs
//! for the inference thread ([`batcher`]) and answer; this module holds the routes, limits,
//! authentication, CORS, metrics and graceful shutdown. The wire format is [`api`].

pub mod api;
pub mod batcher;
pub mod metrics;

use api::{ErrorBody, Generated, Inputs, Request, StreamEvent, SummaryText, Token};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batcher::{Done, Job, Served, Settings};
use futures_util::stream::Stream;
use metrics::Metrics;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Everything `serve` was started with.
pub struct Config {
    pub host: String,
    pub port: u16,
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    pub max_batch_wait: Duration,
    pub max_concurrent_requests: usize,
    pub max_body_bytes: usize,
    pub api_key: Option<String>,
    pub cors_origins: Vec<String>,
    pub web: Option<std::path::PathBuf>,
    /// `GET /info`'s model description.
    pub info: serde_json::Value,
}

struct AppState {
    models: Arc<Vec<Served>>,
    queue: Mutex<Option<Sender<Job>>>,
    admit: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    api_key: Option<String>,
    info: serde_json::Value,
    max_batch_tokens: usize,
    next_id: AtomicU64,
}

/// An error answer: status + `{"error", "error_type"}`.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.2,
            error_type: self.1.to_string(),
        };
        (self.0, Json(body)).into_response()
    }
}

fn validation(message: String) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
}

/// What a request's log line and metrics say about it (put in the response's extensions).
#[derive(Clone, Default)]
struct Timing {
    queue_ms: f64,
    inference_ms: f64,
    tokens: usize,
    inputs: usize,
}

/// Serves until SIGTERM or SIGINT, then stops accepting, finishes the requests in flight and
/// returns.
pub fn run(config: Config, models: Vec<Served>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let models = Arc::new(models);
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let limits = batcher::Limits {
        max_batch_tokens: config.max_batch_tokens,
        max_batch_size: config.max_batch_size,
        max_wait: config.max_batch_wait,
    };
    let worker = {
        let models = models.clone();
        let metrics = metrics.clone();
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || batcher::run(models, rx, limits, metrics))?
    };
    let state = Arc::new(AppState {
        models,
        queue: Mutex::new(Some(tx)),
        admit: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        metrics,
        api_key: config.api_key.clone(),
        info: config.info.clone(),
        max_batch_tokens: config.max_batch_tokens,
        next_id: AtomicU64::new(1),
    });
    let app = router(&config, state.clone())?;
    let addr = format!("{}:{}", config.host, config.port);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        // Always printed (tests and scripts read the port from it).
        eprintln!("bartleby serve: listening on http://{local}");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        anyhow::Ok(())
    })?;
    eprintln!("bartleby serve: stopped accepting; requests in flight answered");
    // Closing the queue ends the inference thread once it is idle.
    state.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(state);
    let _ = worker.join();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    eprintln!("bartleby serve: shutting down");
}

fn router(config: &Config, state: Arc<AppState>) -> anyhow::Result<Router> {
    // GET / is the web app's page (with --web); POST / the Inference API route.
    let root = match &config.web {
        Some(dir) => post(summarization).fallback_service(tower_http::services::ServeDir::new(dir)),
        None => post(summarization),
    };
    let api = Router::new()
        .route("/", root)
        .route("/generate", post(generate))
        .route("/generate_stream", post(generate_stream))
        .route("/info", get(info))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .route("/health", get(health));
    let mut app = api;
    if let Some(dir) = &config.web {
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    let mut app = app
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state);
    if !config.cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, Any, CorsLayer};
        let cors = CorsLayer::new()
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]);
        let cors = if config.cors_origins.iter().any(|o| o == "*") {
            cors.allow_origin(Any)
        } else {
            let origins = config
                .cors_origins
                .iter()
                .map(|o| {
                    HeaderValue::from_str(o)
                        .map_err(|_| anyhow::anyhow!("--cors-origin {o:?} is not a valid origin"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            cors.allow_origin(AllowOrigin::list(origins))
        };
        app = app.layer(cors);
    }
    Ok(app)
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request's handler panicked (see the server log)".into(),
    )
    .into_response()
}

/// `--api-key`: `Authorization: Bearer KEY` on every route but `/health` and the web app's files.
async fn authorize(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let page = req.method() == Method::GET && req.uri().path() == "/";
    if let (Some(key), false) = (&state.api_key, page) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time.
        let ok = given.is_some_and(|g| {
            g.len() == key.len()
                && g.bytes()
                    .zip(key.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong `Authorization: Bearer KEY` header".into(),
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/generate" => "/generate",
        "/generate_stream" => "/generate_stream",
        "/health" => "/health",
        "/info" => "/info",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        _ => "other",
    }
}

/// Counts every request by route and status and logs one line per API request.
async fn observe(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let route = route_label(req.uri().path());
    let method = req.method().clone();
    let started = Instant::now();
    let mut response = next.run(req).await;
    let status = response.status().as_u16();
    state.metrics.request(route, status);
    let timing = response.extensions().get::<Timing>().cloned();
    if let Some(t) = timing {
        tracing::info!(
            target: "bartleby::server",
            id,
            route,
            status,
            inputs = t.inputs,
            queue_ms = format!("{:.1}", t.queue_ms),
            inference_ms = format!("{:.1}", t.inference_ms),
            tokens = t.tokens,
            total_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "request"
        );
    } else if route != "other" && route != "/health" && route != "/metrics" {
        tracing::info!(target: "bartleby::server", id, %method, route, status, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let open = state.queue.lock().map(|q| q.is_some()).unwrap_or(false);
    if open {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down".into(),
        )
        .into_response()
    }
}

async fn info(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(state.info.clone())
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(api::openapi(env!("CARGO_PKG_VERSION")))
}

/// The body as a [`Request`]: 413 over the limit, 400 for what is not JSON, 422 for JSON of the
/// wrong shape.
fn parse_body(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Request, ApiError> {
    let body = body.map_err(|e| {
        let status = e.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_request"
        };
        ApiError(status, kind, e.body_text())
    })?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    serde_json::from_value(value).map_err(|e| validation(format!("body: {e}")))
}

/// Admits a request (429 when `--max-concurrent-requests` are in flight), resolves its settings
/// and queues its inputs; returns their answers' receivers.
struct Admitted {
    _permit: OwnedSemaphorePermit,
    replies: Vec<oneshot::Receiver<Result<Done, String>>>,
    state: Arc<AppState>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn admit(
    state: &Arc<AppState>,
    request: &Request,
    texts: Vec<String>,
    tokens: Option<mpsc::UnboundedSender<Token>>,
) -> Result<Admitted, ApiError> {
    let permit = state.admit.clone().try_acquire_owned().map_err(|_| {
        ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "too many requests in flight (--max-concurrent-requests): retry later".into(),
        )
    })?;
    let params = api::parse_parameters(request.parameters.as_ref()).map_err(validation)?;
    let model = match &params.adapter_id {
        None => 0,
        Some(name) => state
            .models
            .iter()
            .position(|m| m.adapter.as_deref() == Some(name))
            .ok_or_else(|| {
                let known: Vec<&str> = state
                    .models
                    .iter()
                    .filter_map(|m| m.adapter.as_deref())
                    .collect();
                validation(format!(
                    "parameters.adapter_id: no adapter {name:?} (this server has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?,
    };
    let served = &state.models[model];
    let gen = params
        .generation
        .apply(&served.defaults)
        .map_err(|e| validation(format!("parameters: {e}")))?;
    let max_input = params.max_input_tokens.unwrap_or(served.max_input);
    served
        .summarizer
        .validate(&gen, max_input)
        .map_err(|e| validation(format!("parameters: {e}")))?;
    let prefix = params.prefix.unwrap_or_else(|| served.prefix.clone());
    let settings = Settings {
        model,
        gen,
        max_input,
        prefix,
    };
    let mut jobs = Vec::with_capacity(texts.len());
    let mut replies = Vec::with_capacity(texts.len());
    for (i, text) in texts.into_iter().enumerate() {
        let field = if matches!(request.inputs, Inputs::Many(_)) {
            format!("inputs[{i}]")
        } else {
            "inputs".to_string()
        };
        let ids = served
            .summarizer
            .encode(&format!("{}{text}", settings.prefix), settings.max_input)
            .map_err(|e| validation(format!("{field}: {e}")))?;
        let cost = (ids.len() + settings.gen.effective_max_length()) * settings.gen.num_beams;
        if cost > state.max_batch_tokens {
            return Err(validation(format!(
                "{field}: needs {cost} batch tokens ((input {} + max length {}) x {} beams), more than \
                 the server's --max-batch-tokens {}",
                ids.len(),
                settings.gen.effective_max_length(),
                settings.gen.num_beams,
                state.max_batch_tokens
            )));
        }
        let (reply, rx) = oneshot::channel();
        jobs.push(Job {
            text,
            settings: settings.clone(),
            cost,
            enqueued: Instant::now(),
            tokens: tokens.clone(),
            reply,
        });
        replies.push(rx);
    }
    {
        let queue = state.queue.lock().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = queue.as_ref() else {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down".into(),
            ));
        };
        for job in jobs {
            queue.send(job).map_err(|_| {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the inference thread has stopped".into(),
                )
            })?;
        }
    }
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    Ok(Admitted {
        _permit: permit,
        replies,
        state: state.clone(),
    })
}

async fn wait(admitted: &mut Admitted) -> Result<(Vec<Done>, Timing), ApiError> {
    let mut out = Vec::with_capacity(admitted.replies.len());
    let mut timing = Timing::default();
    for rx in admitted.replies.iter_mut() {
        let done = rx
            .await
            .map_err(|_| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generation",
                    "the inference thread dropped the request".into(),
                )
            })?
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "generation", e))?;
        timing.queue_ms = timing.queue_ms.max(done.queue.as_secs_f64() * 1e3);
        timing.inference_ms = timing.inference_ms.max(done.inference.as_secs_f64() * 1e3);
        timing.tokens += done.details.generated_tokens;
        out.push(done);
    }
    timing.inputs = out.len();
    Ok((out, timing))
}

fn with_timing(mut response: Response, timing: Timing) -> Response {
    response.extensions_mut().insert(timing);
    response
}

/// `POST /`: the Inference API summarization task.
async fn summarization(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let request = parse_body(body)?;
    // TGI's compat route: `"stream": true` answers as /generate_stream.
    if request.stream == Some(true) {
        return stream_response(&state, &request);
    }
    let texts = match &request.inputs {
        Inputs::One(t) => vec![t.clone()],
        Inputs::Many(ts) if ts.is_empty() => {
            return Err(validation("inputs: an empty list".into()))
        }
        Inputs::Many(ts) => ts.clone(),
    };
    let details = api::parse_parameters(request.parameters.as_ref())
        .map(|p| p.details)
        .unwrap_or(false);
    let mut admitted = admit(&state, &request, texts, None)?;
    let (done, timing) = wait(&mut admitted).await?;
    let out: Vec<SummaryText> = done
        .into_iter()
        .map(|d| SummaryText {
            generated_text: details.then(|| d.text.clone()),
            details: details.then_some(d.details),
            summary_text: d.text,
        })
        .collect();
    Ok(with_timing(Json(out).into_response(), timing))
}

fn single_input(request: &Request) -> Result<String, ApiError> {
    match &request.inputs {
        Inputs::One(t) => Ok(t.clone()),
        Inputs::Many(_) => Err(validation(
            "inputs: expected one string on this route (POST / takes a list)".into(),
        )),
    }
}

/// `POST /generate`.
async fn generate(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let request = parse_body(body)?;
    let text = single_input(&request)?;
    let mut admitted = admit(&state, &request, vec![text], None)?;
    let (mut done, timing) = wait(&mut admitted).await?;
    let d = done.remove(0);
    let out = Generated {
        generated_text: d.text,
        details: d.details,
    };
    Ok(with_timing(Json(out).into_response(), timing))
}

/// `POST /generate_stream`: an event per greedy token, held back by one so the last one carries
/// the whole text and details (TGI's framing); beam search sends the last event only.
async fn generate_stream(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let request = parse_body(body)?;
    stream_response(&state, &request)
}

fn stream_response(state: &Arc<AppState>, request: &Request) -> Result<Response, ApiError> {
    let text = single_input(request)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let admitted = admit(state, request, vec![text], Some(tx))?;
    let stream = events(admitted, rx);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn events(
    admitted: Admitted,
    tokens: mpsc::UnboundedReceiver<Token>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct S {
        admitted: Admitted,
        tokens: mpsc::UnboundedReceiver<Token>,
        held: Option<Token>,
        index: usize,
        finished: bool,
    }
    let s = S {
        admitted,
        tokens,
        held: None,
        index: 0,
        finished: false,
    };
    futures_util::stream::unfold(s, |mut s| async move {
        if s.finished {
            return None;
        }
        loop {
            match s.tokens.recv().await {
                Some(token) => {
                    if let Some(prev) = s.held.replace(token) {
                        s.index += 1;
                        let ev = StreamEvent {
                            index: s.index,
                            token: prev,
                            generated_text: None,
                            details: None,
                        };
                        return Some((Ok(json_event(&ev)), s));
                    }
                }
                None => break,
            }
        }
        // The token channel is closed: the input is done (or failed).
        s.finished = true;
        let reply = match s.admitted.replies.get_mut(0) {
            Some(rx) => rx.await,
            None => return None,
        };
        let ev = match reply {
            Ok(Ok(done)) => {
                let token = s.held.take().unwrap_or_else(|| {
                    let id = done.details.token_ids.last().copied().unwrap_or(0);
                    Token {
                        id,
                        text: String::new(),
                        logprob: None,
                        special: true,
                    }
                });
                s.index += 1;
                json_event(&StreamEvent {
                    index: s.index,
                    token,
                    generated_text: Some(done.text),
                    details: Some(done.details),
                })
            }
            Ok(Err(e)) => json_event(&ErrorBody {
                error: e,
                error_type: "generation".into(),
            })
            .event("error"),
            Err(_) => json_event(&ErrorBody {
                error: "the inference thread dropped the request".into(),
                error_type: "generation".into(),
            })
            .event("error"),
        };
        Some((Ok(ev), s))
    })
}

fn json_event<T: serde::Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).unwrap_or_else(|_| "{}".into()))
}
