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
pub use server::{IndexSpec, ServeConfig, Server, ShutdownReport};

use std::time::Duration;

/// Limits on what one request may ask and how long it may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (default 8 MiB: room for a few base64 images). Larger: bigger
    /// uploads, more memory per request.
    pub max_body_bytes: usize,
    /// Most queries or items in one request's batch form (default 256).
    pub max_batch_request: usize,
    /// Longest text, in characters (default 10,000; the encoder truncates to its token limit
    /// anyway).
    pub max_text_chars: usize,
    /// A query or verification not answered within this is answered 503 (default 10 s).
    /// Writes are not cut short once logged: an add is answered when it is durable.
    pub request_timeout: Duration,
    /// Most texts/images embedded in one forward pass (default 64). Larger: more throughput
    /// under load, more latency per batch.
    pub max_batch: usize,
    /// Longest a batch waits for company while requests arrive concurrently (default 2 ms).
    pub max_wait: Duration,
    /// Most texts/images waiting per index before requests are refused with 503 and
    /// `Retry-After` (default 256). Larger: fewer refusals, longer worst-case latency.
    pub queue_capacity: usize,
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
