//! The engine as an HTTP service (`twindex serve`): a thin shell over [`crate::query::Searcher`]
//! (after text-embeddings-inference's router). Routes translate JSON to library calls
//! ([`routes`]); texts and images of concurrent requests are embedded together by a bounded
//! batching queue ([`queue`]); searches and writes run on the blocking pool, never on the async
//! reactor; limits, a bearer token, graceful shutdown ([`server`]); Prometheus metrics
//! ([`metrics`]); an OpenAPI document built from the request field tables ([`openapi`]); and a
//! search page served from the binary (`page.html`).

pub mod error;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod request;
pub mod routes;
pub mod server;

pub use error::ApiError;
pub use server::{read_token_file, IndexSpec, ServeConfig, Server, ShutdownReport};

use std::time::Duration;

/// Limits on what one request may ask and how long it may take (also flags of `twindex
/// serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Largest request body in bytes (8 MiB: room for a few base64 images). Larger: bigger
    /// uploads, more memory per request.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Most queries or items in one request's batch form.
    #[arg(long, default_value_t = 256)]
    pub max_batch_request: usize,
    /// Longest text, in characters (default 10,000; the encoder truncates to its token limit
    /// anyway).
    #[arg(skip = 10_000usize)]
    pub max_text_chars: usize,
    /// Queries not answered within this many ms get 503. Writes are not cut short once
    /// logged: an add is answered when it is durable.
    #[arg(long = "timeout-ms", default_value = "10000", value_parser = millis)]
    pub request_timeout: Duration,
    /// Most texts/images embedded in one forward pass. Larger: more throughput, more latency.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Longest a batch waits for more requests, in ms, while requests arrive concurrently.
    #[arg(long = "batch-wait-ms", default_value = "2", value_parser = millis)]
    pub max_wait: Duration,
    /// Texts/images waiting per index before requests are refused with 503 + Retry-After.
    /// Larger: fewer refusals, longer worst-case latency.
    #[arg(long, default_value_t = 256)]
    pub queue_capacity: usize,
}

/// A duration given in whole milliseconds.
fn millis(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{s:?}: expected whole milliseconds, e.g. 2000"))
}

impl Limits {
    /// Refuse limits under which the server could answer nothing (a zero timeout, batch or
    /// queue): one line naming the limit.
    pub fn check(&self) -> crate::Result<()> {
        let zero = [
            (
                "the request timeout (--timeout-ms)",
                self.request_timeout.is_zero(),
            ),
            ("the body limit", self.max_body_bytes == 0),
            ("the batch size", self.max_batch == 0),
            ("the request batch limit", self.max_batch_request == 0),
            ("the queue capacity", self.queue_capacity == 0),
            ("the text length limit", self.max_text_chars == 0),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((what, _)) => Err(crate::Error::InvalidArgument(format!(
                "{what} is 0: every request would be refused; expected at least 1"
            ))),
            None => Ok(()),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 << 20,
            max_batch_request: 256,
            max_text_chars: 10_000,
            request_timeout: Duration::from_secs(10),
            max_batch: 64,
            max_wait: Duration::from_millis(2),
            queue_capacity: 256,
        }
    }
}
