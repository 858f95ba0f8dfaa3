//! Property-based tests (proptest) of the invariants: the persistent index agrees with a plain
//! model through any sequence of adds, deletes, checkpoints, compactions and reopenings; the
//! write-ahead log replays exactly the whole records before any cut and survives any damage;
//! every file reader (IDX, PGM/PNG, pair and text TSV, pen trajectories, manifests, items,
//! npy/fvecs/ivecs, Parquet parts) returns an error naming the file, never a panic, on arbitrary
//! or damaged bytes.
//!
//! Cases are few (32 to 256 a property) so the suite stays fast; a failure prints the shrunk
//! input, and `PROPTEST_CASES=10000 cargo test --release --test it props::` searches harder.

use proptest::prelude::*;
use proptest::sample::Index as Pick;
use std::collections::BTreeMap;
use std::path::Path;
use twindex::index::wal::{self, Record, WalWriter};
use twindex::index::{Backend, EncoderRecord, HnswParams, Index, IndexConfig, Item, Metric};

// ---------------------------------------------------------------------------------------------
// The index against a model

const DIM: usize = 4;

/// One step of a history.
#[derive(Debug, Clone)]
enum Op {
    /// Add these rows (1 to 3).
    Add(Vec<[f32; DIM]>),
    /// Delete live items picked by position among the live ids (repeats collapse); with
    /// `bad`, add an id that is not live (deleted before, or never given): the whole call must
    /// fail and delete nothing.
    Delete {
        picks: Vec<Pick>,
        bad: Option<Pick>,
    },
    Checkpoint,
    Compact,
    /// Close the writer and open the directory again.
    Reopen,
}

fn row() -> impl Strategy<Value = [f32; DIM]> {
    proptest::array::uniform4(-1.0f32..1.0)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(row(), 1..4).prop_map(Op::Add),
        3 => (
            proptest::collection::vec(any::<Pick>(), 1..4),
            proptest::option::weighted(0.25, any::<Pick>())
        )
            .prop_map(|(picks, bad)| Op::Delete { picks, bad }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn item(id: u64) -> Item {
    Item {
        label: format!("l{}", id % 3),
        source: format!("s{id}"),
        payload: None,
    }
}

fn flat_l2() -> IndexConfig {
    IndexConfig {
        metric: Metric::L2,
        normalize: false,
        backend: Backend::Flat,
        hnsw: HnswParams::default(),
    }
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The index holds exactly the model's items, with their vectors and items; deleted and
/// never-given ids are absent; the exact search ranks as a brute-force scan of the model.
fn agrees(idx: &Index, model: &BTreeMap<u64, [f32; DIM]>, gone: &[u64], next: u64, q: &[f32]) {
    assert_eq!(idx.len(), model.len(), "live count");
    let mut ids: Vec<u64> = idx.ids().collect();
    ids.sort_unstable();
    assert_eq!(ids, model.keys().copied().collect::<Vec<_>>(), "live ids");
    for (&id, v) in model {
        let g = idx.get(id).unwrap();
        assert_eq!(g.vector, &v[..], "vector of {id}");
        assert_eq!(&*g.item, &item(id), "item of {id}");
    }
    for &id in gone.iter().chain([next, next + 1].iter()) {
        assert!(idx.get(id).is_err(), "{id} is not live but reads back");
    }
    let k = 5;
    let hits = idx.search(q, k, None).unwrap();
    let mut want: Vec<(f32, u64)> = model.iter().map(|(&id, v)| (l2(q, v), id)).collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    want.truncate(k);
    assert_eq!(hits.len(), want.len(), "hits");
    for (h, (d, _)) in hits.iter().zip(&want) {
        // Ties may come in either order: compare each rank's true distance.
        let got = l2(q, &model[&h.id]);
        assert!(
            (got - d).abs() <= 1e-6 * (1.0 + d),
            "hit {} at distance {got}, the model's is {d}",
            h.id
        );
    }
}

/// Run `ops` on a fresh index of `first` and the model side by side.
fn run_history(first: Vec<[f32; DIM]>, ops: Vec<Op>, q: [f32; DIM]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let flat: Vec<f32> = first.iter().flatten().copied().collect();
    let mut idx = Index::create(
        &dir,
        flat_l2(),
        EncoderRecord::Vectors {
            dim: None,
            source: Some("proptest".into()),
        },
        DIM,
        &flat,
        (0..first.len() as u64).map(item).collect(),
        &|_| {},
    )
    .unwrap();
    let mut model: BTreeMap<u64, [f32; DIM]> =
        first.into_iter().zip(0u64..).map(|(v, i)| (i, v)).collect();
    let mut next = model.len() as u64;
    let mut gone: Vec<u64> = Vec::new();
    agrees(&idx, &model, &gone, next, &q);
    for op in ops {
        match op {
            Op::Add(rows) => {
                let flat: Vec<f32> = rows.iter().flatten().copied().collect();
                let n = rows.len() as u64;
                let ids = idx
                    .add(&flat, (next..next + n).map(item).collect(), &|_| {})
                    .unwrap();
                // Ids are handed out in order and never reused, whatever was deleted.
                assert_eq!(ids, (next..next + n).collect::<Vec<_>>());
                for (id, v) in (next..).zip(rows) {
                    model.insert(id, v);
                }
                next += n;
            }
            Op::Delete { picks, bad } => {
                let live: Vec<u64> = model.keys().copied().collect();
                let mut ids: Vec<u64> = picks.iter().map(|p| live[p.index(live.len())]).collect();
                ids.sort_unstable();
                ids.dedup();
                if let Some(b) = bad {
                    let not_live: Vec<u64> = gone.iter().copied().chain([next, next + 7]).collect();
                    ids.push(not_live[b.index(not_live.len())]);
                    let before = idx.len();
                    assert!(idx.delete(&ids).is_err(), "deleting {ids:?} must fail");
                    assert_eq!(idx.len(), before, "a failed delete deleted something");
                } else if ids.len() < live.len() {
                    // (At least one item stays live.)
                    idx.delete(&ids).unwrap();
                    for id in ids {
                        model.remove(&id);
                        gone.push(id);
                    }
                }
            }
            Op::Checkpoint => idx.checkpoint().unwrap(),
            Op::Compact => idx.compact(&|_| {}).unwrap(),
            Op::Reopen => {
                drop(idx);
                idx = Index::open_writer(&dir).unwrap();
                assert_eq!(idx.recovery().torn_bytes, 0);
            }
        }
        agrees(&idx, &model, &gone, next, &q);
    }
    // Whatever happened, a reader opening the directory sees the same.
    drop(idx);
    agrees(&Index::open(&dir).unwrap(), &model, &gone, next, &q);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn index_agrees_with_a_model(
        first in proptest::collection::vec(row(), 1..6),
        ops in proptest::collection::vec(op(), 1..10),
        q in row(),
    ) {
        run_history(first, ops, q);
    }
}

// ---------------------------------------------------------------------------------------------
// The write-ahead log

/// A record as the index writes them: an add of 0 to 2 rows, or a delete of 0 to 3 ids.
fn record() -> impl Strategy<Value = Record> {
    let label = proptest::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter);
    let payload = proptest::option::of(any::<i32>().prop_map(|i| serde_json::json!({ "i": i })));
    let it = (label, any::<u16>(), payload).prop_map(|(label, s, payload)| Item {
        label,
        source: format!("s{s}"),
        payload,
    });
    prop_oneof![
        (any::<u64>(), 1usize..4, proptest::collection::vec(it, 0..3)).prop_flat_map(
            |(first_id, dim, items)| {
                let n = items.len() * dim;
                proptest::collection::vec(-1e6f32..1e6, n).prop_map(move |vectors| Record::Add {
                    first_id,
                    dim,
                    vectors,
                    items: items.clone(),
                })
            }
        ),
        proptest::collection::vec(any::<u64>(), 0..4).prop_map(|ids| Record::Delete { ids }),
    ]
}

const GEN: u64 = 7;

/// Write `records` through the index's own writer; the log's bytes and each record's end.
fn write_log(dir: &Path, records: &[Record]) -> (Vec<u8>, Vec<u64>) {
    let mut w = WalWriter::open(dir, GEN, 0).unwrap();
    let mut ends = Vec::new();
    for r in records {
        w.append(&r.encode()).unwrap();
        ends.push(w.len());
    }
    drop(w);
    (std::fs::read(dir.join(wal::wal_name(GEN))).unwrap(), ends)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A log cut at any byte (a power cut mid-append) replays exactly the records that were
    /// whole before the cut, reports the rest as torn, and never fails or panics.
    #[test]
    fn wal_replays_the_whole_records_before_any_cut(
        records in proptest::collection::vec(record(), 0..6),
        cut in any::<Pick>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (bytes, ends) = write_log(tmp.path(), &records);
        let cut = cut.index(bytes.len() + 1);
        std::fs::write(tmp.path().join(wal::wal_name(GEN)), &bytes[..cut]).unwrap();
        let replay = wal::read(tmp.path(), GEN).unwrap();
        let whole = ends.iter().filter(|&&e| e as usize <= cut).count();
        prop_assert_eq!(&replay.records[..], &records[..whole]);
        let valid = match whole {
            _ if cut < 16 => 0,
            0 => 16,
            w => ends[w - 1],
        };
        prop_assert_eq!(replay.valid_bytes, valid);
        prop_assert_eq!(replay.torn_bytes, cut as u64 - valid);
    }

    /// Damage anywhere (bytes changed, 1 to 4 of them): a damaged header is an error; damage
    /// in a record with a whole record after it is an error too (corruption, not a torn write:
    /// acknowledged records are never dropped); otherwise the log ends at the damaged record
    /// (the checksum catches it) and the records before it are replayed. Never a panic.
    #[test]
    fn wal_damage_ends_the_log_at_the_damaged_record(
        records in proptest::collection::vec(record(), 1..5),
        hits in proptest::collection::vec((any::<Pick>(), 1u8..=255), 1..5),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (orig, ends) = write_log(tmp.path(), &records);
        let mut bytes = orig.clone();
        for (p, x) in &hits {
            let a = p.index(bytes.len());
            bytes[a] ^= x;
        }
        // (A byte hit twice may be restored: the first byte that differs counts.)
        let first = bytes.iter().zip(&orig).position(|(a, b)| a != b);
        std::fs::write(tmp.path().join(wal::wal_name(GEN)), &bytes).unwrap();
        let replay = wal::read(tmp.path(), GEN);
        let Some(first) = first else {
            prop_assert_eq!(replay.unwrap().records, records);
            return Ok(());
        };
        if first < 16 {
            prop_assert!(replay.is_err(), "a damaged header reads: {:?}", replay);
        } else {
            let intact = ends.iter().filter(|&&e| (e as usize) <= first).count();
            // Record k spans ends[k-1]..ends[k] (the first starts after the 16-byte header).
            let span = |k: usize| (if k == 0 { 16 } else { ends[k - 1] as usize })..ends[k] as usize;
            let whole_after = (intact + 1..records.len()).any(|k| bytes[span(k)] == orig[span(k)]);
            if whole_after {
                // Damage with whole records after it is corruption: refused, never dropped.
                prop_assert!(replay.is_err(), "damage before whole records reads: {:?}", replay);
            } else {
                prop_assert_eq!(&replay.unwrap().records[..], &records[..intact]);
            }
        }
    }

    /// Whatever payload a (buggy or hostile) writer framed with a valid checksum, replay
    /// returns the record or an error naming the log; never a panic.
    #[test]
    fn wal_record_payloads_never_panic(
        kind in prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
        head in proptest::collection::vec(any::<u32>(), 0..5),
        tail in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut payload = vec![kind];
        for h in head {
            payload.extend_from_slice(&h.to_le_bytes());
        }
        payload.extend_from_slice(&tail);
        let tmp = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(tmp.path(), GEN, 0).unwrap();
        w.append(&payload).unwrap();
        drop(w);
        if let Err(e) = wal::read(tmp.path(), GEN) {
            prop_assert!(e.to_string().contains(&wal::wal_name(GEN)), "{}", e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Readers on arbitrary bytes

/// Bytes to feed a reader: arbitrary ones, or a valid sample damaged (bytes changed, the file
/// cut short, junk appended).
fn damaged(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        3 => (
            proptest::collection::vec((any::<Pick>(), any::<u8>()), 0..6),
            any::<Pick>(),
            proptest::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(move |(edits, cut, junk)| {
                let mut b = valid.clone();
                for (p, x) in edits {
                    b[p.index(n)] = x;
                }
                b.truncate(cut.index(n + 1).max(if junk.is_empty() { 0 } else { n }));
                b.extend(junk);
                b
            }),
    ]
}

/// Write `bytes` to `name` in a fresh folder and run `read` on it: it returns (what it returns
/// is its business), it does not panic, and an error names the file.
fn reads_or_names<T>(name: &str, bytes: &[u8], read: impl FnOnce(&Path) -> twindex::Result<T>) {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    if let Err(e) = read(&p) {
        let msg = e.to_string();
        assert!(
            msg.contains(name),
            "{name}: the error does not name the file: {msg}"
        );
    }
}

fn idx_sample() -> Vec<u8> {
    twindex::corpus::idx::encode_idx(&[2, 3, 3], &(0..18).collect::<Vec<u8>>())
}

fn pgm_sample() -> Vec<u8> {
    let mut b = b"P5\n3 2\n255\n".to_vec();
    b.extend([0, 50, 100, 150, 200, 250]);
    b
}

fn png_sample() -> Vec<u8> {
    let img = image::GrayImage::from_raw(3, 2, vec![0, 50, 100, 150, 200, 250]).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

const PAIRS: &[u8] = b"q1\tq2\tis_duplicate\nHow old are you?\tWhat is your age?\t1\na\tb\t0\n";
const SVC: &[u8] = b"3\n100 200 1000 1\n110 210 1010 1\n120 190 1020 0\n";
const CSV: &[u8] = b"x,y,t,pen\n1,2,10,1\n3,4,20,0\n";
const TEXTS: &[u8] = b"id\ttext\tlabel\n1\tHow old are you?\ta\n2\tWhat is your age?\tb\n";

/// The manifest and items file of a real two-item index, to damage.
fn index_files() -> (Vec<u8>, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    Index::create(
        &dir,
        flat_l2(),
        EncoderRecord::Vectors {
            dim: None,
            source: Some("proptest".into()),
        },
        2,
        &[0.0, 1.0, 1.0, 0.0],
        vec![item(0), item(1)],
        &|_| {},
    )
    .unwrap();
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    let items = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("items"))
        .map(|p| std::fs::read(p).unwrap())
        .expect("an items file");
    (manifest, items)
}

/// The samples themselves read: the damage starts from valid files.
#[test]
fn reader_samples_are_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str, b: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    use twindex::corpus::{idx, image_file, pairs, text, trajectory};
    assert_eq!(
        idx::parse_idx(Path::new("s"), &idx_sample()).unwrap().dims,
        [2, 3, 3]
    );
    for (name, b) in [("s.pgm", pgm_sample()), ("s.png", png_sample())] {
        let g = image_file::decode_grey(&b, Path::new(name)).unwrap();
        assert_eq!(g.dimensions(), (3, 2), "{name}");
    }
    assert_eq!(pairs::read_pairs_tsv(&p("p.tsv", PAIRS)).unwrap().len(), 2);
    assert_eq!(
        trajectory::read_trajectory(&p("s.TXT", SVC))
            .unwrap()
            .points
            .len(),
        3
    );
    assert_eq!(
        trajectory::read_trajectory(&p("s.csv", CSV))
            .unwrap()
            .points
            .len(),
        2
    );
    let cols = text::TextColumns {
        text: Some("text".into()),
        id: Some("id".into()),
        label: Some("label".into()),
    };
    assert_eq!(
        text::read_texts(&p("t.tsv", TEXTS), &cols).unwrap().len(),
        2
    );
    let (manifest, items) = index_files();
    let d = tmp.path().join("m");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("manifest.json"), &manifest).unwrap();
    twindex::index::store::read_manifest(&d).unwrap();
    let (ids, its) = twindex::index::store::parse_items(&items, Path::new("items")).unwrap();
    assert_eq!((ids, its), (vec![0, 1], vec![item(0), item(1)]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn idx_reader_never_panics(b in damaged(idx_sample())) {
        reads_or_names("x.idx", &b, |p| twindex::corpus::idx::parse_idx(p, &b));
        // Gzip'd: the decompressor sees damage too.
        reads_or_names("x.idx.gz", &b, twindex::corpus::idx::read_idx);
    }

    #[test]
    fn pgm_and_png_readers_never_panic(
        pgm in damaged(pgm_sample()),
        png in damaged(png_sample()),
    ) {
        reads_or_names("x.pgm", &pgm, |p| twindex::corpus::image_file::decode_grey(&pgm, p));
        reads_or_names("x.png", &png, twindex::corpus::image_file::read_grey);
    }

    #[test]
    fn pair_tsv_and_text_readers_never_panic(
        pairs in damaged(PAIRS.to_vec()),
        texts in damaged(TEXTS.to_vec()),
    ) {
        reads_or_names("x.tsv", &pairs, twindex::corpus::pairs::read_pairs_tsv);
        let cols = twindex::corpus::text::TextColumns {
            text: Some("text".into()),
            id: Some("id".into()),
            label: Some("label".into()),
        };
        reads_or_names("t.tsv", &texts, |p| twindex::corpus::text::read_texts(p, &cols));
        reads_or_names("l.txt", &texts, twindex::corpus::text::read_lines);
    }

    #[test]
    fn trajectory_readers_never_panic(
        svc in damaged(SVC.to_vec()),
        csv in damaged(CSV.to_vec()),
    ) {
        reads_or_names("U1S1.TXT", &svc, twindex::corpus::trajectory::read_trajectory);
        reads_or_names("x.csv", &csv, twindex::corpus::trajectory::read_trajectory);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The manifest, the items lines and an index directory whose manifest is damaged.
    #[test]
    fn manifest_and_items_readers_never_panic(
        (m, it) in {
            let (m, it) = index_files();
            (damaged(m), damaged(it))
        },
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("manifest.json"), &m).unwrap();
        if let Err(e) = twindex::index::store::read_manifest(d) {
            prop_assert!(e.to_string().contains("manifest.json"), "{}", e);
        }
        if let Err(e) = twindex::index::store::parse_items(&it, Path::new("items.jsonl")) {
            prop_assert!(e.to_string().contains("items.jsonl"), "{}", e);
        }
        let _ = Index::open(d);
    }
}

/// A small `.npy`, `.fvecs`, `.ivecs` and Parquet part, as twindex writes them.
fn vector_files() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    use twindex::index::parquet::{write_part, PartMeta, PartRows};
    use twindex::index::vecio::{write_fvecs, write_ivecs, write_npy};
    use twindex::index::Matrix;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let m = Matrix {
        rows: 3,
        cols: 2,
        data: vec![0.5, -1.0, 2.0, 0.0, 1.5, -2.5],
    };
    write_npy(&d.join("v.npy"), &m).unwrap();
    write_fvecs(&d.join("v.fvecs"), &m).unwrap();
    let ints = Matrix {
        rows: 2,
        cols: 3,
        data: vec![1, 2, 3, -4, 5, 6],
    };
    write_ivecs(&d.join("v.ivecs"), &ints).unwrap();
    let rows = PartRows {
        ids: vec![0, 1, 2],
        labels: vec!["a".into(), "b".into(), "".into()],
        texts: vec!["x".into(), "y".into(), "z".into()],
        vectors: m.data.clone(),
        dim: 2,
    };
    let meta = PartMeta {
        twindex: "test".into(),
        encoder: EncoderRecord::Vectors {
            dim: None,
            source: None,
        },
        dim: 2,
        metric: twindex::index::Metric::L2,
        normalize: false,
        threshold: None,
        calibration: None,
        hnsw: None,
        rows: 3,
        shard: None,
        source: "props".into(),
    };
    write_part(&d.join("v.parquet"), &rows, &meta).unwrap();
    let r = |n: &str| std::fs::read(d.join(n)).unwrap();
    (r("v.npy"), r("v.fvecs"), r("v.ivecs"), r("v.parquet"))
}

#[test]
fn vector_file_samples_are_valid() {
    let (npy, fvecs, ivecs, part) = vector_files();
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str, b: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    use twindex::index::vecio::{read_fvecs, read_ivecs, read_npy};
    assert_eq!(read_npy(&p("v.npy", &npy)).unwrap().rows, 3);
    assert_eq!(read_fvecs(&p("v.fvecs", &fvecs)).unwrap().rows, 3);
    assert_eq!(read_ivecs(&p("v.ivecs", &ivecs)).unwrap().rows, 2);
    let (meta, rows) = twindex::index::parquet::read_part(&p("v.parquet", &part)).unwrap();
    assert_eq!((meta.rows, rows.len()), (3, 3));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The vector files an index is built from or exported to.
    #[test]
    fn vector_file_readers_never_panic(
        (npy, fvecs, ivecs, part) in {
            let (npy, fvecs, ivecs, part) = vector_files();
            (damaged(npy), damaged(fvecs), damaged(ivecs), damaged(part))
        },
    ) {
        use twindex::index::vecio::{read_fvecs, read_ivecs, read_npy};
        reads_or_names("x.npy", &npy, read_npy);
        reads_or_names("x.fvecs", &fvecs, read_fvecs);
        reads_or_names("x.ivecs", &ivecs, read_ivecs);
        reads_or_names("x.parquet", &part, twindex::index::parquet::read_part);
    }
}

// The decision rule (`twindex::index::is_duplicate`: `distance <= threshold`): the threshold that
// training and evaluation choose gives, under that rule, exactly the accuracy they report, even
// where distances tie or sit one ulp apart (where a rounded midpoint used to land on a distance).
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn the_chosen_threshold_decides_as_reported(
        raw in prop::collection::vec((0u32..64, any::<bool>()), 1..40),
        base in 0.1f32..3.0,
    ) {
        use twindex::corpus::sampler::Pair;
        use twindex::index::is_duplicate;
        // distances a few ulps apart around `base`, so ties and neighbours are common
        let dist: Vec<f32> = raw.iter().map(|&(u, _)| f32::from_bits(base.to_bits() + u)).collect();
        let pairs: Vec<Pair> = raw
            .iter()
            .enumerate()
            .map(|(i, &(_, same))| Pair { a: i, b: i, y: if same { 1.0 } else { 0.0 } })
            .collect();
        let (acc, t) = twindex::train::image::best_threshold_accuracy(&dist, &pairs);
        prop_assert_eq!(twindex::train::image::pair_accuracy(&dist, &pairs, t), acc);
        let by_rule = dist
            .iter()
            .zip(&pairs)
            .filter(|(&d, p)| is_duplicate(d, t) == (p.y == 1.0))
            .count() as f64
            / pairs.len() as f64;
        prop_assert_eq!(by_rule, acc);
        prop_assert!(is_duplicate(t, t));
    }
}
