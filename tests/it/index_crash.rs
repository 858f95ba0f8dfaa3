//! Crash safety: a child process (this test binary re-executed, running the ignored test
//! `crash_child`) adds items one at a time (each acknowledged once its log record is fsync'd)
//! and checkpoints every `CHECKPOINT_EVERY` items, printing the item count after every
//! acknowledged add; the parent SIGKILLs it at `ROUNDS` random moments (during appends and
//! during checkpoints). After each kill the index must open and hold every item of every add the
//! child reported, and nothing half-added. Then a log is cut at random bytes: every whole record
//! before the cut is replayed, nothing after it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twindex::index::{Backend, EncoderRecord, HnswParams, Index, IndexConfig, Item, Metric};

const ENV_DIR: &str = "TWINDEX_CRASH_TEST_DIR";
const TOTAL: usize = 4_000;
const BATCH: usize = 1;
const CHECKPOINT_EVERY: usize = 250;
const DIM: usize = 8;
const ROUNDS: usize = 20;
const SEED: u64 = 20250101;

/// The vector of item `i`: a function of `i` only, so the parent can check it.
fn vector_of(i: usize) -> Vec<f32> {
    crate::data::vectors(i as u64, 1, DIM)
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
            ..Default::default()
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
        Index::open_writer(&dir).expect("child: reopen")
    } else {
        let (v, items) = batch(0);
        Index::create(
            &dir,
            config(),
            EncoderRecord::Vectors {
                dim: None,
                source: Some("crash-test".into()),
            },
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
        if idx.len() % CHECKPOINT_EVERY == 0 {
            idx.checkpoint().expect("child: checkpoint");
        }
    }
    idx.close().expect("child: close");
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
    let idx = Index::open_writer(dir).expect("index must open after a kill");
    let n = idx.len();
    assert!(
        n >= reported,
        "index holds {n} items, child reported {reported} committed"
    );
    assert!(
        n <= reported + BATCH,
        "index holds {n} items, child reported only {reported}"
    );
    // Each add is one record: an item is there whole (vector, label, payload) or not at all.
    for i in 0..n {
        let g = idx
            .get(i as u64)
            .unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(g.item.label, format!("item-{i}"));
        assert_eq!(g.vector, &vector_of(i)[..], "item {i} vector");
    }
    for i in (0..n).step_by(97) {
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
        let delay = Duration::from_millis(rng.random_range(5..120));
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
        // A child killed before it printed anything acknowledged what the last one left.
        let reported = last.load(Ordering::SeqCst).max(held);
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
    // After a checkpoint, nothing but the current generation is left behind (the checkpoint
    // removes what killed children left): its six files, the manifest and the lock.
    if committed_more {
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            files.len(),
            7,
            "stale files left in the index directory: {files:?}"
        );
    }
}

/// A log cut at random bytes (a power cut mid-append): the whole records before the cut are
/// replayed, the torn one is dropped, never applied in part, and the writer appends after it.
#[test]
fn torn_log_tail_is_dropped_at_every_cut() {
    println!("seed {SEED}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let (v, items) = batch(0);
    let mut idx = Index::create(
        &dir,
        config(),
        EncoderRecord::Vectors {
            dim: None,
            source: Some("crash-test".into()),
        },
        DIM,
        &v,
        items,
        &|_| {},
    )
    .unwrap();
    let gen = idx.manifest().generation;
    let log = dir.join(twindex::index::wal::wal_name(gen));
    let mut ends = vec![];
    for i in 1..40 {
        let (v, items) = batch(i);
        idx.add(&v, items, &|_| {}).unwrap();
        ends.push(std::fs::metadata(&log).unwrap().len());
    }
    idx.delete(&[3, 17]).unwrap();
    ends.push(std::fs::metadata(&log).unwrap().len());
    drop(idx);
    let whole = std::fs::read(&log).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut cuts: Vec<usize> = (0..30).map(|_| rng.random_range(0..=whole.len())).collect();
    cuts.extend([0, 15, 16, whole.len()]);
    for cut in cuts {
        let copy = tmp.path().join(format!("cut-{cut}"));
        std::fs::create_dir(&copy).unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
        std::fs::write(copy.join(log.file_name().unwrap()), &whole[..cut]).unwrap();
        // Records wholly before the cut: adds of items 1.., then the delete.
        let whole_records = ends.iter().filter(|&&e| e as usize <= cut).count();
        let adds = whole_records.min(39);
        let deleted = whole_records == 40;
        let mut idx = Index::open_writer(&copy).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let want = 1 + adds - if deleted { 2 } else { 0 };
        assert_eq!(idx.len(), want, "cut at {cut}");
        let torn = idx.recovery().torn_bytes;
        assert_eq!(
            torn > 0,
            ends.last().map(|&e| e as usize) != Some(cut)
                && cut > 0
                && !ends.contains(&(cut as u64))
                && cut != 16,
            "cut at {cut}: torn {torn}"
        );
        for i in 0..=adds {
            if deleted && (i == 3 || i == 17) {
                continue;
            }
            let g = idx
                .get(i as u64)
                .unwrap_or_else(|e| panic!("cut at {cut}, item {i}: {e}"));
            assert_eq!(g.vector, &vector_of(i)[..]);
        }
        assert!(
            idx.get(adds as u64 + 1).is_err(),
            "cut at {cut}: an unacknowledged item is there"
        );
        // The writer cuts the torn tail and appends after the last whole record.
        let (v, items) = batch(adds + 1);
        let ids = idx.add(&v, items, &|_| {}).unwrap();
        assert_eq!(ids, vec![adds as u64 + 1]);
        drop(idx);
        let again = Index::open(&copy).unwrap();
        assert_eq!(again.len(), want + 1, "cut at {cut}: after appending");
        assert_eq!(again.recovery().torn_bytes, 0);
        assert_eq!(
            again.search(&vector_of(adds + 1), 1, None).unwrap()[0].id,
            adds as u64 + 1
        );
    }
}
