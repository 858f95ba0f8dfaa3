//! Prometheus metrics in the text exposition format (after text-embeddings-inference's
//! `prometheus.rs`, without a metrics crate): requests by route, method and status; request
//! latency and batch size histograms; queue depth; refused and abandoned jobs; index sizes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latency buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096, 8.192,
];
/// Batch size buckets, contents per forward pass.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(buckets: &[f64]) -> Self {
        Histogram {
            counts: vec![0; buckets.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, buckets: &[f64], v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(buckets) {
            if v <= b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, buckets: &[f64]) {
        for (c, b) in self.counts.iter().zip(buckets) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (route, method, status) -> count.
    requests: BTreeMap<(String, String, u16), u64>,
    /// route -> latency.
    latency: BTreeMap<String, Histogram>,
    /// index -> contents per batch.
    batches: BTreeMap<String, Histogram>,
    queue_depth: BTreeMap<String, usize>,
    /// index -> submits refused because the queue was full.
    refused: BTreeMap<String, u64>,
    /// index -> jobs dropped because their requester had gone.
    dropped: BTreeMap<String, u64>,
}

/// The server's counters. Cheap to update from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One answered request.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut m = self.lock();
        *m.requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        m.latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(LATENCY_BUCKETS, seconds);
    }

    /// One forward pass over `n` contents.
    pub fn batch(&self, index: &str, n: usize) {
        self.lock()
            .batches
            .entry(index.to_string())
            .or_insert_with(|| Histogram::new(BATCH_BUCKETS))
            .observe(BATCH_BUCKETS, n as f64);
    }

    pub fn set_queue_depth(&self, index: &str, n: usize) {
        self.lock().queue_depth.insert(index.to_string(), n);
    }

    pub fn refused(&self, index: &str) {
        *self.lock().refused.entry(index.to_string()).or_default() += 1;
    }

    pub fn dropped(&self, index: &str) {
        *self.lock().dropped.entry(index.to_string()).or_default() += 1;
    }

    /// The text exposition, with each index's live item count from `sizes`.
    pub fn render(&self, sizes: &[(String, usize)]) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# HELP twindex_requests_total HTTP requests answered, by route, method and status.\n# TYPE twindex_requests_total counter\n");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "twindex_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP twindex_request_duration_seconds Time to answer a request, by route.\n# TYPE twindex_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            h.render(
                &mut out,
                "twindex_request_duration_seconds",
                &format!("route=\"{route}\""),
                LATENCY_BUCKETS,
            );
        }
        out.push_str("# HELP twindex_batch_size Texts or images embedded in one forward pass, by index.\n# TYPE twindex_batch_size histogram\n");
        for (index, h) in &m.batches {
            h.render(
                &mut out,
                "twindex_batch_size",
                &format!("index=\"{index}\""),
                BATCH_BUCKETS,
            );
        }
        out.push_str("# HELP twindex_queue_depth Texts or images waiting to be embedded, by index.\n# TYPE twindex_queue_depth gauge\n");
        for (index, n) in &m.queue_depth {
            let _ = writeln!(out, "twindex_queue_depth{{index=\"{index}\"}} {n}");
        }
        out.push_str("# HELP twindex_queue_refused_total Requests refused because the queue was full, by index.\n# TYPE twindex_queue_refused_total counter\n");
        for (index, n) in &m.refused {
            let _ = writeln!(out, "twindex_queue_refused_total{{index=\"{index}\"}} {n}");
        }
        out.push_str("# HELP twindex_queue_dropped_total Queued requests dropped unembedded because the client had gone, by index.\n# TYPE twindex_queue_dropped_total counter\n");
        for (index, n) in &m.dropped {
            let _ = writeln!(out, "twindex_queue_dropped_total{{index=\"{index}\"}} {n}");
        }
        out.push_str(
            "# HELP twindex_index_items Live items, by index.\n# TYPE twindex_index_items gauge\n",
        );
        for (index, n) in sizes {
            let _ = writeln!(out, "twindex_index_items{{index=\"{index}\"}} {n}");
        }
        out
    }
}
