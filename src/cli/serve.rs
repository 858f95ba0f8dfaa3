//! `twindex serve`: indexes as an HTTP service (see `twindex::serve` and docs/serving.md).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use twindex::serve::{IndexSpec, Limits, ServeConfig, Server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// An index to serve as NAME=INDEX_DIR, or NAME=milvus://HOST:PORT/COLLECTION for a Milvus
    /// collection made by `twindex index push` (NAME: letters, digits, _ and -). Repeat for many.
    #[arg(long = "index", required = true, value_name = "NAME=INDEX_DIR")]
    pub indexes: Vec<String>,
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// File holding a bearer token required on /v1 and /metrics (compared in constant time).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Text indexes: the text model's folder, when it moved since the indexes were built.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Serve without taking the writer lock: adds and deletes are refused.
    #[arg(long)]
    pub read_only: bool,
    /// Most texts/images embedded in one forward pass. Larger: more throughput, more latency.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Longest a batch waits for more requests, in ms, while requests arrive concurrently.
    #[arg(long, default_value_t = 2)]
    pub batch_wait_ms: u64,
    /// Texts/images waiting per index before requests are refused with 503 + Retry-After.
    #[arg(long, default_value_t = 256)]
    pub queue_capacity: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Most queries or items in one request's batch form.
    #[arg(long, default_value_t = 256)]
    pub max_batch_request: usize,
    /// Queries not answered within this many ms get 503.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// After SIGTERM/SIGINT, how long in-flight requests may take, in seconds.
    #[arg(long, default_value_t = 30)]
    pub grace_s: u64,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut indexes = Vec::new();
    for spec in &a.indexes {
        let Some((name, dir)) = spec.split_once('=') else {
            bail!("--index {spec:?}: expected NAME=INDEX_DIR");
        };
        indexes.push(IndexSpec {
            name: name.to_string(),
            dir: PathBuf::from(dir),
        });
    }
    let token = match &a.token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading the token file {}", p.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!("{}: the token file is empty", p.display());
            }
            Some(t)
        }
        None => None,
    };
    let cfg = ServeConfig {
        indexes,
        addr: a.addr.clone(),
        token,
        limits: Limits {
            max_body_bytes: a.max_body_bytes,
            max_batch_request: a.max_batch_request.max(1),
            request_timeout: Duration::from_millis(a.timeout_ms),
            max_batch: a.max_batch.max(1),
            max_wait: Duration::from_millis(a.batch_wait_ms),
            queue_capacity: a.queue_capacity.max(1),
            ..Limits::default()
        },
        model: a.model.clone(),
        read_only: a.read_only,
        grace: Duration::from_secs(a.grace_s),
        workers: None,
    };
    let names: Vec<String> = cfg.indexes.iter().map(|i| i.name.clone()).collect();
    let server = Server::open(cfg).context("starting the server")?;
    eprintln!(
        "twindex serve: listening on http://{} (indexes: {}{})",
        server.local_addr(),
        names.join(", "),
        if a.token_file.is_some() {
            "; bearer token required"
        } else {
            ""
        }
    );
    let report = server.run()?;
    eprintln!(
        "twindex serve: {} received; {}; closed {}",
        report.signal,
        if report.drained {
            "in-flight requests finished"
        } else {
            "grace period over with requests still running"
        },
        if report.closed.is_empty() {
            "no index".to_string()
        } else {
            report.closed.join(", ")
        }
    );
    for (name, why) in &report.not_closed {
        eprintln!("twindex serve: index {name} not checkpointed ({why}); its log is replayed at the next open");
    }
    Ok(())
}
