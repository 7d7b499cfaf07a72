//! TensorBoard event files — what `tensorboard --logdir` reads and `wandb sync` imports: a
//! TFRecord stream (`u64` length, its masked CRC-32C, the record, its masked CRC-32C) of `Event`
//! protocol buffers, the first carrying `file_version = "brain.Event:2"`, the others one scalar
//! summary each (`Summary.Value{tag, simple_value}`, as `SummaryWriter.add_scalar` writes them),
//! and `source_metadata.writer = "bartleby"` where TensorBoard's writer puts its own name.
//! The format is small and frozen, so it is encoded here; `tests/tensorboard.rs` compares the
//! bytes with a file written by TensorBoard's own `EventFileWriter`.

/// One scalar point.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    pub value: f32,
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
}

/// One text point (TensorBoard's text plugin renders it as Markdown).
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub tag: String,
    pub step: i64,
    pub text: String,
    pub wall_time: f64,
}

/// A hyperparameter's value (`google.protobuf.Value`: number, string or bool).
#[derive(Debug, Clone, PartialEq)]
pub enum HParam {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// A run's hyperparameters for TensorBoard's HParams dashboard: the session start summary
/// `hparams_pb` (tensorboard.plugins.hparams.summary_v2) writes (`_hparams_/session_start_info`),
/// keys sorted (protobuf's deterministic map order).
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    pub values: Vec<(String, HParam)>,
    /// The trial id (`group_name`): the run's name.
    pub group_name: String,
    pub start_time_secs: f64,
}

impl HParams {
    /// The fields of a JSON object (a config, a report's settings) as hyperparameters: nested keys
    /// joined with `.`, arrays as their JSON text, nulls left out.
    pub fn from_json(group_name: &str, start_time_secs: f64, v: &serde_json::Value) -> Self {
        use serde_json::Value as V;
        let values = crate::mlflow::leaves("", v)
            .into_iter()
            .map(|(k, v)| {
                let value = match v {
                    V::Bool(b) => HParam::Bool(*b),
                    V::Number(n) => HParam::Number(n.as_f64().unwrap_or(0.0)),
                    V::String(s) => HParam::Text(s.clone()),
                    other => HParam::Text(other.to_string()),
                };
                (k, value)
            })
            .collect();
        Self {
            values,
            group_name: group_name.to_string(),
            start_time_secs,
        }
    }

    /// The `Summary` (one value) of the session start.
    fn summary(&self) -> Vec<u8> {
        let mut sorted: Vec<&(String, HParam)> = self.values.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut start = Vec::new();
        for (k, v) in sorted {
            let mut value = Vec::new();
            match v {
                HParam::Number(x) => field_f64(&mut value, 2, *x),
                HParam::Text(t) => field_bytes(&mut value, 3, t.as_bytes()),
                HParam::Bool(b) => {
                    key(&mut value, 4, 0);
                    varint(&mut value, u64::from(*b));
                }
            }
            let mut entry = Vec::new();
            field_bytes(&mut entry, 1, k.as_bytes());
            field_bytes(&mut entry, 2, &value);
            field_bytes(&mut start, 1, &entry);
        }
        if !self.group_name.is_empty() {
            field_bytes(&mut start, 4, self.group_name.as_bytes());
        }
        field_f64(&mut start, 5, self.start_time_secs);
        let mut plugin_data = Vec::new(); // HParamsPluginData{session_start_info = 3}, version 0
        field_bytes(&mut plugin_data, 3, &start);
        let mut plugin = Vec::new();
        field_bytes(&mut plugin, 1, b"hparams");
        field_bytes(&mut plugin, 2, &plugin_data);
        let mut metadata = Vec::new();
        field_bytes(&mut metadata, 1, &plugin);
        // The null tensor: DT_FLOAT with an empty dimension.
        let tensor = [0x08, 0x01, 0x12, 0x02, 0x12, 0x00];
        let mut value = Vec::new();
        field_bytes(&mut value, 1, b"_hparams_/session_start_info");
        field_bytes(&mut value, 8, &tensor);
        field_bytes(&mut value, 9, &metadata);
        let mut summary = Vec::new();
        field_bytes(&mut summary, 1, &value);
        summary
    }
}

/// The file name TensorBoard recognises (`events.out.tfevents.*`), fixed per run so that a run's
/// file is rewritten in place rather than multiplied.
pub const FILE_NAME: &str = "events.out.tfevents.bartleby";

/// An event file: the version record (at `start` seconds), then every scalar in order.
pub fn event_file(start: f64, scalars: &[Scalar]) -> Vec<u8> {
    event_file_with_text(start, scalars, &[])
}

/// [`event_file`] followed by text events (as `text_pb` of TensorBoard's text plugin writes
/// them: a scalar `DT_STRING` tensor with `plugin_name = "text"` metadata).
pub fn event_file_with_text(start: f64, scalars: &[Scalar], texts: &[Text]) -> Vec<u8> {
    event_file_full(start, None, scalars, texts)
}

/// [`event_file_with_text`] with the run's hyperparameters right after the version record (an
/// event at `start`, step 0).
pub fn event_file_full(
    start: f64,
    hparams: Option<&HParams>,
    scalars: &[Scalar],
    texts: &[Text],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut version = Vec::new();
    field_f64(&mut version, 1, start);
    field_bytes(&mut version, 3, b"brain.Event:2");
    // `source_metadata.writer`: which program wrote the file (TensorBoard's own writer names
    // itself here).
    let mut source = Vec::new();
    field_bytes(&mut source, 1, b"bartleby");
    field_bytes(&mut version, 10, &source);
    record(&mut out, &version);
    if let Some(h) = hparams {
        let mut event = Vec::new();
        field_f64(&mut event, 1, start);
        field_bytes(&mut event, 5, &h.summary());
        record(&mut out, &event);
    }
    for s in scalars {
        let mut value = Vec::new();
        field_bytes(&mut value, 1, s.tag.as_bytes());
        field_f32(&mut value, 2, s.value);
        let mut summary = Vec::new();
        field_bytes(&mut summary, 1, &value);
        let mut event = Vec::new();
        field_f64(&mut event, 1, s.wall_time);
        if s.step != 0 {
            key(&mut event, 2, 0);
            varint(&mut event, s.step as u64);
        }
        field_bytes(&mut event, 5, &summary);
        record(&mut out, &event);
    }
    for t in texts {
        let mut tensor = Vec::new();
        key(&mut tensor, 1, 0);
        varint(&mut tensor, 7); // DT_STRING
        field_bytes(&mut tensor, 2, b""); // a scalar: no dimensions
        field_bytes(&mut tensor, 8, t.text.as_bytes());
        let mut plugin = Vec::new();
        field_bytes(&mut plugin, 1, b"text");
        let mut metadata = Vec::new();
        field_bytes(&mut metadata, 1, &plugin);
        let mut value = Vec::new();
        field_bytes(&mut value, 1, t.tag.as_bytes());
        field_bytes(&mut value, 8, &tensor);
        field_bytes(&mut value, 9, &metadata);
        let mut summary = Vec::new();
        field_bytes(&mut summary, 1, &value);
        let mut event = Vec::new();
        field_f64(&mut event, 1, t.wall_time);
        if t.step != 0 {
            key(&mut event, 2, 0);
            varint(&mut event, t.step as u64);
        }
        field_bytes(&mut event, 5, &summary);
        record(&mut out, &event);
    }
    out
}

/// The scalars of a JSON object's numeric fields (`step` and `time` taken out), tagged
/// `prefix/field`.
pub fn scalars_of(line: &serde_json::Value, prefix: &str, skip: &[&str]) -> Vec<Scalar> {
    let step = line["step"].as_i64().unwrap_or(0);
    let wall_time = line["time"].as_f64().unwrap_or(0.0);
    line.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !["step", "time"].contains(&k.as_str()) && !skip.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            v.as_f64().map(|x| Scalar {
                tag: format!("{prefix}/{k}"),
                step,
                value: x as f32,
                wall_time,
            })
        })
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_f64(out: &mut Vec<u8>, field: u32, v: f64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn field_f32(out: &mut Vec<u8>, field: u32, v: f32) {
    key(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn field_bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    key(out, field, 2);
    varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// TFRecord's masked CRC-32C (Castagnoli).
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value (RFC 3720 / iSCSI).
        assert_eq!(super::crc32c(b"123456789"), 0xe306_9283);
    }
}
