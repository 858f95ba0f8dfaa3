//! The batching queue in front of an index's encoder (after text-embeddings-inference's
//! `queue.rs` / `infer.rs`): handlers submit the texts and images of their requests; one worker
//! thread per index takes every job waiting (up to `max_batch` contents), waits up to
//! `max_wait` for more when requests are arriving concurrently, and embeds them together in one
//! `Searcher::embed_many` call. The queue is bounded in contents: when full, a submit is refused
//! at once (the handler answers 503 with `Retry-After`) instead of letting latency grow without
//! bound. Jobs whose requester has gone (timed out, disconnected) are dropped unembedded.

use super::metrics::Metrics;
use super::request::Content;
use crate::error::Error;
use crate::query::{Query, Searcher};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Sizes of the queue (see [`super::Limits`] for the defaults and their trade-offs).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Most contents embedded in one forward pass.
    pub max_batch: usize,
    /// Longest a batch waits for more contents once the first is taken (only while requests
    /// are arriving concurrently: a lone request is never delayed).
    pub max_wait: Duration,
    /// Most contents waiting; past that, submits are refused.
    pub capacity: usize,
}

/// Why a submit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

/// One vector per content, or the error embedding them gave with the position (in the job) of
/// the content at fault.
pub type Embedded = std::result::Result<Vec<Vec<f32>>, (usize, Error)>;

type Reply = oneshot::Sender<Embedded>;

struct Job {
    contents: Vec<Content>,
    reply: Reply,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Contents in `jobs`.
    queued: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    cfg: QueueConfig,
    metrics: Arc<Metrics>,
    index: String,
}

/// An index's batching queue and its worker thread.
pub struct EmbedQueue {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl EmbedQueue {
    /// Start the worker for `searcher` (named `index` in the metrics).
    pub fn start(
        index: &str,
        searcher: Arc<Searcher>,
        cfg: QueueConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            cfg,
            metrics,
            index: index.to_string(),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name(format!("embed-{index}"))
            .spawn(move || work(&s, &searcher))?;
        Ok(EmbedQueue {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Queue `contents` to be embedded together with other requests'; the receiver gets one
    /// vector per content, in order, or the error that embedding them gave.
    pub fn submit(&self, contents: Vec<Content>) -> Result<oneshot::Receiver<Embedded>, Refused> {
        let (tx, rx) = oneshot::channel();
        let n = contents.len();
        let mut st = self.lock();
        if st.closed {
            return Err(Refused::Closed);
        }
        // A request larger than the whole queue is still taken when the queue is empty.
        if st.queued > 0 && st.queued + n > self.shared.cfg.capacity {
            return Err(Refused::Full);
        }
        st.queued += n;
        st.jobs.push_back(Job {
            contents,
            reply: tx,
        });
        self.shared
            .metrics
            .set_queue_depth(&self.shared.index, st.queued);
        drop(st);
        self.shared.cv.notify_one();
        Ok(rx)
    }

    /// Contents waiting.
    pub fn depth(&self) -> usize {
        self.lock().queued
    }

    /// Refuse new jobs; the worker embeds those already queued, then exits.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.cv.notify_all();
    }

    /// Wait for the worker to exit (after [`EmbedQueue::close`]).
    pub fn join(&self) {
        let h = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for EmbedQueue {
    fn drop(&mut self) {
        self.close();
        self.join();
    }
}

fn work(sh: &Shared, searcher: &Searcher) {
    // Whether the last batch held more than one request: only then is waiting for company
    // worth its latency.
    let mut busy = false;
    loop {
        let mut batch: Vec<Job> = Vec::new();
        let mut n = 0usize;
        {
            let mut st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
            while st.jobs.is_empty() {
                if st.closed {
                    return;
                }
                st = sh.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            let deadline = Instant::now() + sh.cfg.max_wait;
            loop {
                while let Some(j) = st.jobs.front() {
                    if !batch.is_empty() && n + j.contents.len() > sh.cfg.max_batch {
                        break;
                    }
                    let j = st.jobs.pop_front().expect("front");
                    st.queued -= j.contents.len();
                    if j.reply.is_closed() {
                        sh.metrics.dropped(&sh.index);
                        continue;
                    }
                    n += j.contents.len();
                    batch.push(j);
                }
                let full = n >= sh.cfg.max_batch || !st.jobs.is_empty();
                let now = Instant::now();
                if full || !busy || st.closed || now >= deadline {
                    break;
                }
                st = sh
                    .cv
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            sh.metrics.set_queue_depth(&sh.index, st.queued);
        }
        if batch.is_empty() {
            continue;
        }
        busy = batch.len() > 1;
        sh.metrics.batch(&sh.index, n);
        embed_batch(searcher, batch);
    }
}

/// Embed every job's contents in one call; when that fails, each job alone, so that one bad
/// request (an image that does not decode) fails only itself.
fn embed_batch(searcher: &Searcher, batch: Vec<Job>) {
    let qs: Vec<Query> = batch
        .iter()
        .flat_map(|j| j.contents.iter().map(Content::as_query))
        .collect();
    let all = if batch.len() == 1 {
        None
    } else {
        searcher.embed_many(&qs).ok()
    };
    match all {
        Some(vs) => {
            let mut it = vs.into_iter();
            for j in batch {
                let mine: Vec<Vec<f32>> = it.by_ref().take(j.contents.len()).collect();
                let _ = j.reply.send(Ok(mine));
            }
        }
        None => {
            for j in batch {
                let _ = j.reply.send(embed_job(searcher, &j.contents));
            }
        }
    }
}

/// Embed one job's contents; on failure, find the first content at fault.
fn embed_job(searcher: &Searcher, contents: &[Content]) -> Embedded {
    let qs: Vec<Query> = contents.iter().map(Content::as_query).collect();
    match searcher.embed_many(&qs) {
        Ok(v) => Ok(v),
        Err(e) if qs.len() == 1 => Err((0, e)),
        Err(e) => {
            for (p, q) in qs.iter().enumerate() {
                if let Err(e) = searcher.embed_many(std::slice::from_ref(q)) {
                    return Err((p, e));
                }
            }
            Err((0, e))
        }
    }
}
