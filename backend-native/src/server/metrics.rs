//! `GET /metrics`: counters and histograms in the Prometheus text exposition format (0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A cumulative histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bound (and +Inf last), observations ≤ it (not yet cumulative).
    counts: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: Mutex::new((vec![0; bounds.len() + 1], 0.0, 0)),
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.0[i] += 1;
        c.1 += value;
        c.2 += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, n) in c.0.iter().enumerate() {
            cumulative += n;
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", c.1, c.2);
    }
}

const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Everything `/metrics` reports.
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub queue_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub batch_size: Histogram,
    pub generated_tokens: AtomicU64,
    pub in_flight: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            queue_seconds: Histogram::new(SECONDS),
            inference_seconds: Histogram::new(SECONDS),
            batch_size: Histogram::new(SIZES),
            generated_tokens: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn request(&self, route: &'static str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((route, status)).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP bartleby_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE bartleby_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "bartleby_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        self.queue_seconds.write(
            &mut out,
            "bartleby_queue_seconds",
            "Time an input waited in the queue before its batch started.",
        );
        self.inference_seconds.write(
            &mut out,
            "bartleby_inference_seconds",
            "Time of the batch an input ran in.",
        );
        self.batch_size
            .write(&mut out, "bartleby_batch_size", "Inputs per batch.");
        let _ = writeln!(
            out,
            "# HELP bartleby_generated_tokens_total Tokens generated (decoder start not counted).\n\
             # TYPE bartleby_generated_tokens_total counter\nbartleby_generated_tokens_total {}",
            self.generated_tokens.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP bartleby_requests_in_flight Requests admitted and not yet answered.\n\
             # TYPE bartleby_requests_in_flight gauge\nbartleby_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out
    }
}
