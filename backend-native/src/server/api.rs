//! The wire format of `bartleby serve`: request bodies, their `parameters`, responses, errors and
//! the OpenAPI document. One set of serde types, read by the handlers and the tests.

use crate::generation_args::GenerationArgs;
use bartleby_core::EarlyStopping;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// `inputs`: one text, or (on `POST /`) a list of them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Inputs {
    One(String),
    Many(Vec<String>),
}

/// A request body of `POST /`, `/generate` and `/generate_stream`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub inputs: Inputs,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// The Inference API's `options` (`use_cache`, `wait_for_model`): accepted, no effect.
    #[serde(default)]
    pub options: Option<Value>,
    /// TGI's `stream` flag on `/generate*`: the route decides; accepted for compatibility.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// `POST /`: one per input, in order. With `parameters.details` (TGI's compat route, which
/// huggingface_hub's `InferenceClient.text_generation` calls) also the text as `generated_text`
/// and its details.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct SummaryText {
    pub summary_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

/// Why generation ended: the model's end-of-sequence token, or the length limit.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    EosToken,
    Length,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Details {
    pub finish_reason: FinishReason,
    /// Tokens generated (the decoder start token not counted).
    pub generated_tokens: usize,
    /// The whole decoder sequence, decoder start token first: what `bartleby summarize` writes
    /// as `token_ids`.
    pub token_ids: Vec<u32>,
}

/// `POST /generate`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct Generated {
    pub generated_text: String,
    pub details: Details,
}

/// One token of `POST /generate_stream` (TGI's shape).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Token {
    pub id: u32,
    /// The text this token adds to the summary ("" for special tokens, and while a multi-byte
    /// character is incomplete).
    pub text: String,
    pub logprob: Option<f32>,
    pub special: bool,
}

/// One Server-Sent Event of `/generate_stream`: a token, and on the last event the whole text
/// and details.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct StreamEvent {
    pub index: usize,
    pub token: Token,
    pub generated_text: Option<String>,
    pub details: Option<Details>,
}

/// An error body: `{"error": "...", "error_type": "..."}` (TGI's shape).
#[derive(Debug, Deserialize, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_type: String,
}

/// The settings one request asks for, checked for types; the model checks the values.
#[derive(Debug, Default)]
pub struct Parameters {
    /// TGI's `details` flag (answers of `POST /` then carry them).
    pub details: bool,
    pub generation: GenerationArgs,
    pub max_input_tokens: Option<usize>,
    pub prefix: Option<String>,
    pub adapter_id: Option<String>,
}

/// The generation keys (generation_config.json names) `parameters` takes.
pub const GENERATION_KEYS: &[&str] = &[
    "num_beams",
    "max_length",
    "min_length",
    "max_new_tokens",
    "length_penalty",
    "no_repeat_ngram_size",
    "early_stopping",
];

/// Reads `parameters` (with the Inference API's nested `generate_parameters` merged in).
/// Errors name the field: `parameters.num_beams: expected an integer of 1 or more`.
pub fn parse_parameters(params: Option<&Map<String, Value>>) -> Result<Parameters, String> {
    let mut flat = Map::new();
    if let Some(params) = params {
        for (k, v) in params {
            if k == "generate_parameters" {
                let Value::Object(inner) = v else {
                    return Err("parameters.generate_parameters: expected an object".into());
                };
                flat.extend(inner.clone());
            } else {
                flat.insert(k.clone(), v.clone());
            }
        }
    }
    let mut p = Parameters::default();
    for (k, v) in &flat {
        let field = format!("parameters.{k}");
        if v.is_null() {
            continue;
        }
        let count = |min: u64| -> Result<usize, String> {
            v.as_u64()
                .filter(|&n| n >= min)
                .map(|n| n as usize)
                .ok_or_else(|| format!("{field}: expected an integer of {min} or more, got {v}"))
        };
        let g = &mut p.generation;
        match k.as_str() {
            "num_beams" => g.num_beams = Some(count(1)?),
            "max_length" => g.max_length = Some(count(1)?),
            "min_length" => g.min_length = Some(count(0)?),
            "max_new_tokens" => g.max_new_tokens = Some(count(1)?),
            "no_repeat_ngram_size" => g.no_repeat_ngram_size = Some(count(0)?),
            "length_penalty" => {
                g.length_penalty = Some(
                    v.as_f64()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| format!("{field}: expected a finite number, got {v}"))?,
                )
            }
            "early_stopping" => {
                g.early_stopping = Some(match v {
                    Value::Bool(true) => EarlyStopping::True,
                    Value::Bool(false) => EarlyStopping::False,
                    Value::String(s) if s == "never" => EarlyStopping::Never,
                    _ => return Err(format!("{field}: expected true, false or \"never\", got {v}")),
                })
            }
            "max_input_tokens" => p.max_input_tokens = Some(count(2)?),
            "prefix" => {
                p.prefix = Some(
                    v.as_str()
                        .ok_or_else(|| format!("{field}: expected a string, got {v}"))?
                        .to_string(),
                )
            }
            "adapter_id" => {
                p.adapter_id = Some(
                    v.as_str()
                        .ok_or_else(|| format!("{field}: expected a string, got {v}"))?
                        .to_string(),
                )
            }
            // TGI's flag: details are always returned.
            "details" => {
                p.details = v
                    .as_bool()
                    .ok_or_else(|| format!("{field}: expected true or false, got {v}"))?;
            }
            _ => {
                return Err(format!(
                    "{field}: unknown parameter (known: {}, max_input_tokens, prefix, adapter_id, details)",
                    GENERATION_KEYS.join(", ")
                ))
            }
        }
    }
    Ok(p)
}

/// The OpenAPI 3 document served at `GET /openapi.json`.
pub fn openapi(version: &str) -> Value {
    let params = json!({
        "type": "object",
        "description": "Generation settings over the model's generation_config.json (its names). Greedy \
            (num_beams 1) streams a token per event; beam search sends only the final event.",
        "properties": {
            "num_beams": {"type": "integer", "minimum": 1},
            "max_length": {"type": "integer", "minimum": 1},
            "min_length": {"type": "integer", "minimum": 0},
            "max_new_tokens": {"type": "integer", "minimum": 1},
            "length_penalty": {"type": "number"},
            "no_repeat_ngram_size": {"type": "integer", "minimum": 0},
            "early_stopping": {"oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["never"]}]},
            "max_input_tokens": {"type": "integer", "minimum": 2},
            "prefix": {"type": "string"},
            "adapter_id": {"type": "string", "description": "one of the server's --adapter NAMEs"},
            "details": {"type": "boolean", "description": "accepted; details are always returned"},
            "generate_parameters": {"type": "object", "description": "the same keys, nested (Inference API)"}
        },
        "additionalProperties": false
    });
    let request = |inputs: Value| {
        json!({"type": "object", "required": ["inputs"], "properties": {
            "inputs": inputs, "parameters": {"$ref": "#/components/schemas/Parameters"},
            "options": {"type": "object"}, "stream": {"type": "boolean"}}})
    };
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let errors = json!({
        "400": error, "401": error, "413": error, "422": error, "429": error, "500": error, "503": error
    });
    let with_errors = |ok: Value| {
        let mut r = errors.as_object().expect("object").clone();
        r.insert("200".into(), ok);
        Value::Object(r)
    };
    let body = |schema: &str| json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "bartleby serve", "version": version,
                 "description": "Summarization over HTTP: the Hugging Face Inference API task (POST /) and \
                     text-generation-inference's /generate and /generate_stream."},
        "paths": {
            "/": {"post": {"summary": "Inference API summarization", "requestBody": body("SummarizationRequest"),
                "responses": with_errors(json!({"description": "one summary per input",
                    "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/SummaryText"}}}}}))}},
            "/generate": {"post": {"summary": "One summary with its token ids", "requestBody": body("GenerateRequest"),
                "responses": with_errors(json!({"description": "the summary",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Generated"}}}}))}},
            "/generate_stream": {"post": {"summary": "Server-Sent Events: one per token (greedy), the last with the whole text and details; beam search sends the last event only",
                "requestBody": body("GenerateRequest"),
                "responses": with_errors(json!({"description": "events",
                    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}}}}))}},
            "/health": {"get": {"summary": "200 when the model is loaded", "responses": {"200": {"description": "ok"}}}},
            "/info": {"get": {"summary": "Model, architecture, dtype, device, limits, version", "responses": {"200": {"description": "info"}}}},
            "/metrics": {"get": {"summary": "Prometheus text format", "responses": {"200": {"description": "metrics"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}}
        },
        "components": {"schemas": {
            "Parameters": params,
            "SummarizationRequest": request(json!({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})),
            "GenerateRequest": request(json!({"type": "string"})),
            "SummaryText": {"type": "object", "properties": {"summary_text": {"type": "string"}}},
            "Details": {"type": "object", "properties": {
                "finish_reason": {"type": "string", "enum": ["eos_token", "length"]},
                "generated_tokens": {"type": "integer"},
                "token_ids": {"type": "array", "items": {"type": "integer"}}}},
            "Generated": {"type": "object", "properties": {
                "generated_text": {"type": "string"}, "details": {"$ref": "#/components/schemas/Details"}}},
            "Token": {"type": "object", "properties": {"id": {"type": "integer"}, "text": {"type": "string"},
                "logprob": {"type": "number", "nullable": true}, "special": {"type": "boolean"}}},
            "StreamEvent": {"type": "object", "properties": {"index": {"type": "integer"},
                "token": {"$ref": "#/components/schemas/Token"},
                "generated_text": {"type": "string", "nullable": true},
                "details": {"allOf": [{"$ref": "#/components/schemas/Details"}], "nullable": true}}},
            "Error": {"type": "object", "properties": {"error": {"type": "string"},
                "error_type": {"type": "string", "enum": ["bad_request", "unauthorized", "payload_too_large",
                    "validation", "overloaded", "generation", "shutting_down"]}}}
        }}
    })
}
