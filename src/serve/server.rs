//! Opening the served indexes, binding, running, and shutting down gracefully (after
//! text-embeddings-inference's `shutdown.rs`): on SIGTERM or SIGINT the server stops accepting,
//! `/readyz` turns 503, in-flight requests finish (up to a grace period), the batching queues
//! drain, and every index is closed through [`Searcher::close`], which checkpoints its log.

use super::metrics::Metrics;
use super::queue::{EmbedQueue, QueueConfig};
use super::routes::{self, AppState, IndexHandle};
use super::Limits;
use crate::error::{Error, Result};
use crate::query::{OpenOptions, Searcher};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One index to serve under a name.
#[derive(Debug, Clone)]
pub struct IndexSpec {
    /// The name in URLs: letters, digits, `_` and `-`, at most 64 (never a path).
    pub name: String,
    /// The index directory, or `milvus://HOST:PORT/COLLECTION` for a Milvus collection made by
    /// `twindex index push`.
    pub dir: PathBuf,
}

impl std::str::FromStr for IndexSpec {
    type Err = Error;

    /// `NAME=INDEX_DIR` (or `NAME=milvus://...`); the name is checked when the server opens.
    fn from_str(spec: &str) -> Result<Self> {
        let (name, dir) = spec.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!("--index {spec:?}: expected NAME=INDEX_DIR"))
        })?;
        Ok(IndexSpec {
            name: name.to_string(),
            dir: PathBuf::from(dir),
        })
    }
}

/// The bearer token in `path` (surrounding white space trimmed; an empty file is refused).
pub fn read_token_file(path: &std::path::Path) -> Result<String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| Error::Msg(format!("reading the token file {}: {e}", path.display())))?;
    match t.trim() {
        "" => Err(Error::InvalidArgument(format!(
            "{}: the token file is empty",
            path.display()
        ))),
        t => Ok(t.to_string()),
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub indexes: Vec<IndexSpec>,
    /// Where to listen (default `127.0.0.1:8080`: loopback only). Port 0: any free port.
    pub addr: String,
    /// Bearer token required on `/v1` and `/metrics` (none: open).
    pub token: Option<String>,
    pub limits: Limits,
    /// Text indexes: the text model's folder, when it moved since the indexes were built.
    pub model: Option<PathBuf>,
    /// Serve without the writer lock: adds and deletes are refused (403).
    pub read_only: bool,
    /// After a stop signal, how long in-flight requests may take before the server stops anyway
    /// (default 30 s).
    pub grace: Duration,
    /// Async worker threads (default: the cores, at most 4; searches and encodes run elsewhere).
    pub workers: Option<usize>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            indexes: Vec::new(),
            addr: "127.0.0.1:8080".into(),
            token: None,
            limits: Limits::default(),
            model: None,
            read_only: false,
            grace: Duration::from_secs(30),
            workers: None,
        }
    }
}

/// What happened at shutdown.
#[derive(Debug, Clone)]
pub struct ShutdownReport {
    /// The signal that stopped the server.
    pub signal: &'static str,
    /// Whether every in-flight request finished within the grace period.
    pub drained: bool,
    /// Indexes closed (checkpointed when writable).
    pub closed: Vec<String>,
    /// Indexes that could not be closed, with why (their writes are in the log all the same,
    /// replayed at the next open).
    pub not_closed: Vec<(String, String)>,
}

impl std::fmt::Display for ShutdownReport {
    /// What the server says as it stops: the signal, whether requests finished, what closed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "twindex serve: {} received; {}; closed {}",
            self.signal,
            match self.drained {
                true => "in-flight requests finished",
                false => "grace period over with requests still running",
            },
            match self.closed.is_empty() {
                true => "no index".to_string(),
                false => self.closed.join(", "),
            }
        )?;
        for (name, why) in &self.not_closed {
            write!(f, "\ntwindex serve: index {name} not checkpointed ({why}); its log is replayed at the next open")?;
        }
        Ok(())
    }
}

/// Whether `name` may name an index in URLs.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A bound server with its indexes open, not yet answering.
pub struct Server {
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    grace: Duration,
    workers: usize,
}

impl Server {
    /// Open every index (writable unless `read_only`), start the batching queues and bind.
    pub fn open(cfg: ServeConfig) -> Result<Server> {
        if cfg.indexes.is_empty() {
            return Err(Error::InvalidArgument("no index to serve".into()));
        }
        if let Some(t) = &cfg.token {
            if t.trim().is_empty() {
                return Err(Error::Empty("the bearer token is empty".into()));
            }
        }
        cfg.limits.check()?;
        let metrics = Arc::new(Metrics::default());
        let mut indexes = BTreeMap::new();
        let mut dirs: Vec<(std::path::PathBuf, &str)> = Vec::new();
        for spec in &cfg.indexes {
            if !valid_name(&spec.name) {
                return Err(Error::InvalidArgument(format!(
                    "index name {:?}: use letters, digits, _ and - (at most 64)",
                    spec.name
                )));
            }
            if indexes.contains_key(&spec.name) {
                return Err(Error::InvalidArgument(format!(
                    "index name {:?} given twice",
                    spec.name
                )));
            }
            let oo = OpenOptions {
                writable: !cfg.read_only,
                model: cfg.model.clone(),
            };
            let searcher = Arc::new(match spec.dir.to_str() {
                Some(u) if u.starts_with(crate::query::milvus::SCHEME) => {
                    let uri = crate::query::milvus::MilvusUri::parse(u)?;
                    let coll = uri.collection.clone().ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "--index {}={u}: name the collection (milvus://HOST:PORT/COLLECTION)",
                            spec.name
                        ))
                    })?;
                    Searcher::open_milvus(&uri, &coll, &oo)?
                }
                _ => {
                    if !spec.dir.join("manifest.json").is_file() {
                        return Err(Error::InvalidArgument(format!(
                            "--index {}={}: no twindex index there (no manifest.json)",
                            spec.name,
                            spec.dir.display()
                        )));
                    }
                    let real =
                        std::fs::canonicalize(&spec.dir).map_err(|e| Error::io(&spec.dir, e))?;
                    if let Some((_, other)) = dirs.iter().find(|(d, _)| *d == real) {
                        return Err(Error::InvalidArgument(format!(
                            "--index {}={}: the same index is already served as {other:?}; \
                             serve each index once",
                            spec.name,
                            spec.dir.display()
                        )));
                    }
                    dirs.push((real, &spec.name));
                    let s = Searcher::open(&spec.dir, &oo)?;
                    // A server keeps the graph in memory: no request waits on a page fault.
                    s.load_graph()?;
                    s
                }
            });
            let queue = match searcher.encoder().kind() {
                "vectors" => None,
                _ => Some(
                    EmbedQueue::start(
                        &spec.name,
                        searcher.clone(),
                        QueueConfig {
                            max_batch: cfg.limits.max_batch.max(1),
                            max_wait: cfg.limits.max_wait,
                            capacity: cfg.limits.queue_capacity.max(1),
                        },
                        metrics.clone(),
                    )
                    .map_err(|e| Error::Msg(format!("starting the embedding worker: {e}")))?,
                ),
            };
            indexes.insert(
                spec.name.clone(),
                IndexHandle {
                    name: spec.name.clone(),
                    searcher,
                    queue,
                    writable: !cfg.read_only,
                },
            );
        }
        let listener = std::net::TcpListener::bind(&cfg.addr)
            .map_err(|e| Error::Msg(format!("binding {}: {e}", cfg.addr)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Msg(format!("binding {}: {e}", cfg.addr)))?;
        let workers = cfg.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(4)
        });
        Ok(Server {
            state: Arc::new(AppState {
                indexes,
                limits: cfg.limits,
                metrics,
                token_digest: cfg
                    .token
                    .map(|t| Sha256::digest(t.trim().as_bytes()).into()),
                shutting_down: AtomicBool::new(false),
            }),
            listener,
            grace: cfg.grace,
            workers: workers.max(1),
        })
    }

    /// The address it listens on (the port chosen when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// Answer requests until SIGTERM or SIGINT, then shut down gracefully.
    pub fn run(self) -> Result<ShutdownReport> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.workers)
            .max_blocking_threads(64)
            .thread_name("twindex-serve")
            .enable_all()
            .build()
            .map_err(|e| Error::Msg(format!("starting the async runtime: {e}")))?;
        let Server {
            state,
            listener,
            grace,
            ..
        } = self;
        let signal: Arc<Mutex<&'static str>> = Arc::new(Mutex::new("none"));
        let drained = rt.block_on(serve(state.clone(), listener, grace, signal.clone()))?;
        // Stop the queues (each embeds what it holds, then exits), then wait for the blocking
        // tasks that still hold a searcher (a write whose client went away is still finished).
        for h in state.indexes.values() {
            if let Some(q) = &h.queue {
                q.close();
                q.join();
            }
        }
        rt.shutdown_timeout(grace);
        let state = wait_unique(state, grace);
        let mut report = ShutdownReport {
            signal: *signal.lock().unwrap_or_else(|p| p.into_inner()),
            drained,
            closed: Vec::new(),
            not_closed: Vec::new(),
        };
        let Some(state) = state else {
            report.not_closed.push((
                "*".into(),
                "requests still running after the grace period".into(),
            ));
            return Ok(report);
        };
        for (name, h) in state.indexes {
            drop(h.queue);
            match Arc::try_unwrap(h.searcher) {
                Ok(s) => match s.close() {
                    Ok(()) => report.closed.push(name),
                    Err(e) => report.not_closed.push((name, e.to_string())),
                },
                Err(_) => report
                    .not_closed
                    .push((name, "still in use by a request".into())),
            }
        }
        Ok(report)
    }
}

/// `state` once nobody else holds it (or `None` after `grace`).
fn wait_unique(mut state: Arc<AppState>, grace: Duration) -> Option<AppState> {
    let until = Instant::now() + grace;
    loop {
        match Arc::try_unwrap(state) {
            Ok(s) => return Some(s),
            Err(s) if Instant::now() < until => {
                state = s;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
}

/// Serve until a signal; then stop accepting and let in-flight requests finish within
/// `grace`. Returns whether they all did.
async fn serve(
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    grace: Duration,
    signal: Arc<Mutex<&'static str>>,
) -> Result<bool> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| Error::Msg(format!("listening: {e}")))?;
    let app = routes::router(state.clone());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let st = state.clone();
    tokio::spawn(async move {
        let s = wait_signal().await;
        *signal.lock().unwrap_or_else(|p| p.into_inner()) = s;
        st.shutting_down.store(true, Ordering::SeqCst);
        let _ = tx.send(true);
    });
    let mut stop = rx.clone();
    let graceful = async move {
        let _ = stop.wait_for(|v| *v).await;
    };
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
    });
    let mut stopped = rx;
    let finished = |r: std::result::Result<std::io::Result<()>, tokio::task::JoinError>| match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Msg(format!("serving: {e}"))),
        Err(e) => Err(Error::Msg(format!("serving: {e}"))),
    };
    tokio::select! {
        r = &mut server => finished(r).map(|()| true),
        _ = stopped.wait_for(|v| *v) => {
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => finished(r).map(|()| true),
                Err(_) => {
                    server.abort();
                    Ok(false)
                }
            }
        }
    }
}

async fn wait_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
