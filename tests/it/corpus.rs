//! IDX reader on the shipped corpus and on truncated / malformed files.

use std::io::Write;
use std::path::Path;
use twindex::corpus::idx::{encode_idx, read_idx, read_image_set, read_labels};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn shipped_mnist_reads_with_the_documented_counts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/mnist");
    let data = twindex::corpus::load_idx_corpus(&dir).unwrap();
    assert_eq!(
        (data.train.n, data.train.rows, data.train.cols),
        (60000, 28, 28)
    );
    assert_eq!(data.test.n, 10000);
    // PROVENANCE.txt: train label counts [5923, 6742, ...]
    let mut counts = [0usize; 10];
    for &l in &data.train.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(
        counts,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
}

#[test]
fn truncated_and_malformed_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let images = encode_idx(&[3, 4, 4], &[7u8; 48]);
    let labels = encode_idx(&[3], &[0, 1, 2]);

    // A good pair, raw and gzipped.
    let (ip, lp) = (dir.path().join("i.idx"), dir.path().join("l.idx.gz"));
    std::fs::write(&ip, &images).unwrap();
    std::fs::write(&lp, gz(&labels)).unwrap();
    let set = read_image_set(&ip, &lp).unwrap();
    assert_eq!((set.n, set.rows, set.cols), (3, 4, 4));

    // Truncated raw file.
    let t = dir.path().join("trunc.idx");
    std::fs::write(&t, &images[..40]).unwrap();
    let e = read_idx(&t).unwrap_err().to_string();
    assert!(e.contains("trunc.idx") && e.contains("truncated"), "{e}");

    // Truncated gzip stream.
    let tg = dir.path().join("trunc.idx.gz");
    let z = gz(&images);
    std::fs::write(&tg, &z[..z.len() / 2]).unwrap();
    let e = read_idx(&tg).unwrap_err().to_string();
    assert!(e.contains("trunc.idx.gz") && e.contains("gzip"), "{e}");

    // Wrong magic.
    let m = dir.path().join("magic.idx");
    let mut bad = images.clone();
    bad[0] = 0x50;
    std::fs::write(&m, &bad).unwrap();
    assert!(read_idx(&m)
        .unwrap_err()
        .to_string()
        .contains("bad IDX magic"));

    // Images passed where labels are expected.
    let e = read_labels(&ip).unwrap_err().to_string();
    assert!(e.contains("expected a 1-d labels file"), "{e}");

    // Label / image count disagreement.
    let l2 = dir.path().join("l2.idx");
    std::fs::write(&l2, encode_idx(&[2], &[0, 1])).unwrap();
    let e = read_image_set(&ip, &l2).unwrap_err().to_string();
    assert!(e.contains("2 labels") && e.contains("3 images"), "{e}");

    // Missing file.
    let e = read_idx(&dir.path().join("nope.idx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.idx"), "{e}");
}
