//! `twindex serve`: indexes as an HTTP service (see `twindex::serve` and docs/serving.md).

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use twindex::serve::{read_token_file, IndexSpec, Limits, ServeConfig, Server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// An index to serve as NAME=INDEX_DIR, or NAME=milvus://HOST:PORT/COLLECTION for a Milvus
    /// collection made by `twindex index push` (NAME: letters, digits, _ and -). Repeat for many.
    #[arg(long = "index", required = true, value_name = "NAME=INDEX_DIR")]
    pub indexes: Vec<IndexSpec>,
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
    #[command(flatten)]
    pub limits: Limits,
    /// After SIGTERM/SIGINT, how long in-flight requests may take, in seconds.
    #[arg(long, default_value_t = 30)]
    pub grace_s: u64,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let cfg = ServeConfig {
        indexes: a.indexes.clone(),
        addr: a.addr.clone(),
        token: a.token_file.as_deref().map(read_token_file).transpose()?,
        limits: a.limits.clone(),
        model: a.model.clone(),
        read_only: a.read_only,
        grace: Duration::from_secs(a.grace_s),
        workers: None,
    };
    let names: Vec<String> = cfg.indexes.iter().map(|i| i.name.clone()).collect();
    let server = Server::open(cfg).context("starting the server")?;
    let auth = match a.token_file {
        Some(_) => "; bearer token required",
        None => "",
    };
    eprintln!(
        "twindex serve: listening on http://{} (indexes: {}{auth})",
        server.local_addr(),
        names.join(", "),
    );
    eprintln!("{}", server.run()?);
    Ok(())
}
