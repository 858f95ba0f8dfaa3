//! Crash safety: a child process (this test binary re-executed, running the ignored test
//! `crash_child`) adds 10,000 items in batches of 100, printing the item count after every
//! committed add; the parent SIGKILLs it at random moments. After each kill the index must open
//! and hold every item of every add the child reported, and nothing half-added.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twindex::index::{Backend, HnswParams, Index, IndexConfig, Item, Metric};

const ENV_DIR: &str = "TWINDEX_CRASH_TEST_DIR";
const TOTAL: usize = 10_000;
const BATCH: usize = 100;
const DIM: usize = 8;
const ROUNDS: usize = 12;
const SEED: u64 = 20250101;

/// The vector of item `i`: a function of `i` only, so the parent can check it.
fn vector_of(i: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
    (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn batch(first: usize) -> (Vec<f32>, Vec<Item>) {
    let v = (first..first + BATCH).flat_map(vector_of).collect();
    let items = (first..first + BATCH)
        .map(|i| Item {
            label: format!("item-{i}"),
            source: format!("src/{i}"),
            payload: Some(json!({ "i": i })),
        })
        .collect();
    (v, items)
}

fn config() -> IndexConfig {
    IndexConfig {
        metric: Metric::L2,
        normalize: false,
        backend: Backend::Hnsw,
        hnsw: HnswParams {
            m: 8,
            ef_construction: 40,
            ef_search: 32,
            seed: 1,
        },
    }
}

fn report(n: usize) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "committed {n}").unwrap();
    out.flush().unwrap();
}

/// The child: add batches until the index holds `TOTAL` items. Does nothing unless run by
/// `crash_safety_under_sigkill` (which sets the directory variable).
#[test]
#[ignore = "child process of crash_safety_under_sigkill"]
fn crash_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut idx = if dir.join("manifest.json").exists() {
        Index::open(&dir).expect("child: reopen")
    } else {
        let (v, items) = batch(0);
        Index::create(
            &dir,
            config(),
            json!({"kind": "crash-test"}),
            DIM,
            &v,
            items,
            &|_| {},
        )
        .expect("child: create")
    };
    report(idx.len());
    while idx.len() < TOTAL {
        let (v, items) = batch(idx.len());
        idx.add(&v, items, &|_| {}).expect("child: add");
        report(idx.len());
    }
}

fn spawn_child(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "index_crash::crash_child",
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Read the child's "committed N" lines; the largest N lands in `last`.
fn watch(child: &mut std::process::Child, last: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test crash_child ... " before the first line.
            if let Some(pos) = line.find("committed ") {
                let n = line[pos + "committed ".len()..].trim();
                last.fetch_max(n.parse().unwrap(), Ordering::SeqCst);
            }
        }
    })
}

/// The index holds whole batches, at least `reported` items, and every item is intact.
fn verify(dir: &Path, reported: usize) -> usize {
    if !dir.join("manifest.json").exists() {
        assert_eq!(
            reported, 0,
            "child reported {reported} items but there is no manifest"
        );
        return 0;
    }
    let idx = Index::open(dir).expect("index must open after a kill");
    let n = idx.len();
    assert!(
        n >= reported,
        "index holds {n} items, child reported {reported} committed"
    );
    assert!(
        n <= reported + BATCH,
        "index holds {n} items, child reported only {reported}"
    );
    assert_eq!(n % BATCH, 0, "a half-added batch: {n} items");
    for i in 0..n {
        let g = idx
            .get(i as u64)
            .unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(g.item.label, format!("item-{i}"));
        assert_eq!(g.vector, &vector_of(i)[..], "item {i} vector");
    }
    for i in (0..n).step_by(997) {
        assert_eq!(idx.search(&vector_of(i), 1, None).unwrap()[0].id, i as u64);
    }
    n
}

#[test]
fn crash_safety_under_sigkill() {
    println!("seed {SEED}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut held = 0;
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.random_range(5..250));
        let last = Arc::new(AtomicUsize::new(0));
        let mut child = spawn_child(&dir);
        let reader = watch(&mut child, last.clone());
        let t0 = Instant::now();
        while t0.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().ok(); // SIGKILL
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let reported = last.load(Ordering::SeqCst);
        let n = verify(&dir, reported);
        assert!(n >= held, "items lost: held {held}, now {n}");
        held = n;
        println!(
            "round {round}: killed after {delay:?} ({status}), child reported {reported}, index holds {n}"
        );
        if n == TOTAL {
            break;
        }
    }
    // Let a last child finish the job.
    let committed_more = held < TOTAL;
    let last = Arc::new(AtomicUsize::new(0));
    let mut child = spawn_child(&dir);
    let reader = watch(&mut child, last.clone());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "final child failed: {status}");
    assert_eq!(last.load(Ordering::SeqCst), TOTAL);
    assert_eq!(verify(&dir, TOTAL), TOTAL);
    // After a commit, nothing but the current generation is left behind (the commit removes
    // what killed children left).
    if committed_more {
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            files.len(),
            5,
            "stale files left in the index directory: {files:?}"
        );
    }
}
