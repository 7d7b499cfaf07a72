//! Chat templates, rendered as transformers' `apply_chat_template` renders them: the model's
//! Jinja template (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json` as a
//! string or a list of named templates, `default` chosen) in a sandboxed engine with
//! `trim_blocks` and `lstrip_blocks` on, the loop controls, Python's string methods, the
//! functions HF templates call (`raise_exception`, `strftime_now`), a `tojson` that writes what
//! Python's `json.dumps` writes, and the tokenizer's special tokens (`bos_token`, `eos_token`,
//! ...) as variables; `tools` and `documents` are passed as `None`, as transformers does.

use crate::{Error, Result};
use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{Environment, ErrorKind};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A model's chat template with the special tokens it is rendered with.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    /// Where it came from (named in errors).
    pub file: String,
    pub source: String,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` ... as tokenizer_config.json sets them.
    pub special_tokens: BTreeMap<String, String>,
}

const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

impl ChatTemplate {
    /// The template of a model's files: `chat_template.jinja` when present (transformers ≥ 4.43
    /// saves it there), else `chat_template` in `tokenizer_config.json`. `None` when neither
    /// has one.
    pub fn from_files(
        jinja: Option<(&str, &[u8])>,
        tokenizer_config: Option<&[u8]>,
    ) -> Result<Option<Self>> {
        let config: Option<Value> = tokenizer_config
            .map(|b| {
                serde_json::from_slice(b).map_err(|e| Error::Config {
                    file: "tokenizer_config.json".into(),
                    message: format!("not valid JSON: {e}"),
                })
            })
            .transpose()?;
        let mut special_tokens = BTreeMap::new();
        if let Some(obj) = config.as_ref().and_then(Value::as_object) {
            for key in SPECIAL_KEYS {
                let text = match obj.get(key) {
                    Some(Value::String(s)) => Some(s.clone()),
                    // An AddedToken written out: {"content": "<s>", ...}.
                    Some(Value::Object(t)) => {
                        t.get("content").and_then(Value::as_str).map(str::to_string)
                    }
                    _ => None,
                };
                if let Some(text) = text {
                    special_tokens.insert(key.to_string(), text);
                }
            }
        }
        let (file, source) = if let Some((name, bytes)) = jinja {
            let text = std::str::from_utf8(bytes).map_err(|_| Error::Config {
                file: name.into(),
                message: "not UTF-8".into(),
            })?;
            (name.to_string(), text.to_string())
        } else {
            let file = "tokenizer_config.json";
            let err = |message: String| Error::Config {
                file: file.into(),
                message,
            };
            match config.as_ref().and_then(|c| c.get("chat_template")) {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::String(s)) => (file.to_string(), s.clone()),
                Some(Value::Array(list)) => {
                    let mut named = BTreeMap::new();
                    for t in list {
                        match (t.get("name").and_then(Value::as_str), t.get("template").and_then(Value::as_str)) {
                            (Some(n), Some(src)) => {
                                named.insert(n.to_string(), src.to_string());
                            }
                            _ => {
                                return Err(err(
                                    "\"chat_template\" list entries need \"name\" and \"template\" strings"
                                        .into(),
                                ))
                            }
                        }
                    }
                    let source = named.get("default").cloned().ok_or_else(|| {
                        err(format!(
                            "\"chat_template\" has no template named \"default\" (it has {:?})",
                            named.keys().collect::<Vec<_>>()
                        ))
                    })?;
                    (file.to_string(), source)
                }
                Some(v) => {
                    return Err(err(format!(
                        "\"chat_template\" must be a string or a list of named templates, found {v}"
                    )))
                }
            }
        };
        let template = Self {
            file,
            source,
            special_tokens,
        };
        // Compile once now, so that a template with a syntax error is reported at load.
        template.environment()?;
        Ok(Some(template))
    }

    fn environment(&self) -> Result<Environment<'_>> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<JValue, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_filter("tojson", tojson);
        env.add_template("chat", &self.source)
            .map_err(|e| Error::Config {
                file: self.file.clone(),
                message: format!("chat template: {}", one_line(&e)),
            })?;
        Ok(env)
    }

    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=…, **extra)`.
    /// `now_unix_seconds`: what `strftime_now` formats (UTC); without it the function is not
    /// defined (templates then use their fallback, e.g. Llama 3.2's "26 Jul 2024").
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &Map<String, Value>,
        now_unix_seconds: Option<i64>,
    ) -> Result<String> {
        let mut env = self.environment()?;
        if let Some(now) = now_unix_seconds {
            env.add_function("strftime_now", move |format: String| {
                strftime(now, &format)
                    .map_err(|m| minijinja::Error::new(ErrorKind::InvalidOperation, m))
            });
        }
        let mut context: BTreeMap<String, JValue> = BTreeMap::new();
        for (k, v) in &self.special_tokens {
            context.insert(k.clone(), JValue::from(v.clone()));
        }
        context.insert("messages".into(), JValue::from_serialize(messages));
        context.insert("tools".into(), JValue::from(()));
        context.insert("documents".into(), JValue::from(()));
        context.insert(
            "add_generation_prompt".into(),
            JValue::from(add_generation_prompt),
        );
        for (k, v) in extra {
            context.insert(k.clone(), JValue::from_serialize(v));
        }
        let template = env.get_template("chat").map_err(|e| Error::Config {
            file: self.file.clone(),
            message: format!("chat template: {}", one_line(&e)),
        })?;
        template.render(context).map_err(|e| {
            let message = match e.kind() {
                ErrorKind::InvalidOperation => {
                    format!("chat template raised: {}", e.detail().unwrap_or("error"))
                }
                _ => format!("chat template: {}", one_line(&e)),
            };
            Error::Config {
                file: self.file.clone(),
                message,
            }
        })
    }
}

fn one_line(e: &minijinja::Error) -> String {
    e.to_string().replace('\n', " ")
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson(value: JValue, kwargs: Kwargs) -> std::result::Result<JValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    python_json(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(JValue::from_safe_string(out))
}

/// Python's `json.dumps` layout, keys in their order: `", "` / `": "` separators without
/// indent; newlines and `indent` spaces per level with it (`","` then).
fn python_json(
    v: &JValue,
    indent: Option<usize>,
    sort: bool,
    level: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable if v.len() != Some(0) => {
            out.push('[');
            for (i, x) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                python_json(&x, indent, sort, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map if v.len() != Some(0) => {
            out.push('{');
            let mut keys: Vec<JValue> = v.try_iter()?.collect();
            if sort {
                keys.sort();
            }
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&Value::String(k.to_string()).to_string());
                out.push_str(": ");
                python_json(&v.get_item(&k)?, indent, sort, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => out.push_str("[]"),
        ValueKind::Map => out.push_str("{}"),
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        _ => {
            let json = serde_json::to_string(v)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            out.push_str(&json);
        }
    }
    Ok(())
}

/// `datetime.strftime` of a UTC time for the common directives.
fn strftime(unix_seconds: i64, format: &str) -> std::result::Result<String, String> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (month_name, day_name) = (MONTHS[(month - 1) as usize], DAYS[weekday]);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&day_name[..3]),
            Some('A') => out.push_str(day_name),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("strftime_now: unsupported directive %{other}")),
            None => return Err("strftime_now: format ends with %".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_matches_python() {
        // datetime.fromtimestamp(1721952000, timezone.utc) = 2024-07-26 00:00 (a Friday)
        assert_eq!(strftime(1_721_952_000, "%d %b %Y").unwrap(), "26 Jul 2024");
        assert_eq!(
            strftime(1_721_952_000 + 3_725, "%A %B %j %H:%M:%S %y %%").unwrap(),
            "Friday July 208 01:02:05 24 %"
        );
        // 2000-02-29 (leap day), 1969-12-31 23:59:59
        assert_eq!(
            strftime(951_782_400, "%Y-%m-%d %a").unwrap(),
            "2000-02-29 Tue"
        );
        assert_eq!(
            strftime(-1, "%Y-%m-%d %H:%M:%S").unwrap(),
            "1969-12-31 23:59:59"
        );
        assert!(strftime(0, "%Q").is_err());
    }

    #[test]
    fn tojson_writes_what_json_dumps_writes() {
        let t = ChatTemplate::from_files(
            Some((
                "t.jinja",
                "{% set v = {'b': [1, 2.5, 'é<'], 'a': {'x': none, 'y': true}, 'e': []} %}{{ v | tojson }}|{{ v | tojson(indent=2, sort_keys=true) }}".as_bytes(),
            )),
            None,
        )
        .unwrap()
        .unwrap();
        let out = t.render(&[], false, &Map::new(), None).unwrap();
        // json.dumps(v, ensure_ascii=False) | json.dumps(v, ensure_ascii=False, indent=2, sort_keys=True)
        assert_eq!(
            out,
            "{\"b\": [1, 2.5, \"é<\"], \"a\": {\"x\": null, \"y\": true}, \"e\": []}|{\n  \"a\": {\n    \"x\": null,\n    \"y\": true\n  },\n  \"b\": [\n    1,\n    2.5,\n    \"é<\"\n  ],\n  \"e\": []\n}"
        );
    }

    #[test]
    fn templates_from_tokenizer_config() {
        let cfg = br#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>",
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content.strip() }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"}]}"#;
        let t = ChatTemplate::from_files(None, Some(cfg)).unwrap().unwrap();
        let out = t
            .render(&[Message::new("user", "  hi ")], true, &Map::new(), None)
            .unwrap();
        assert_eq!(out, "<s>[user]hi>");
        let none = ChatTemplate::from_files(None, Some(br#"{"eos_token": "</s>"}"#)).unwrap();
        assert!(none.is_none());
        let bad = ChatTemplate::from_files(
            None,
            Some(br#"{"chat_template": [{"name": "x", "template": "y"}]}"#),
        );
        assert!(bad.unwrap_err().to_string().contains("\"default\""));
        let syntax = ChatTemplate::from_files(Some(("chat_template.jinja", b"{% if %}")), None);
        assert!(syntax
            .unwrap_err()
            .to_string()
            .starts_with("chat_template.jinja: chat template:"));
        let raises = ChatTemplate::from_files(
            Some((
                "chat_template.jinja",
                b"{{ raise_exception('only user messages') }}",
            )),
            None,
        )
        .unwrap()
        .unwrap();
        let err = raises
            .render(&[], true, &Map::new(), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "chat_template.jinja: chat template raised: only user messages"
        );
    }
}
