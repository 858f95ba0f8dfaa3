//! The offline signature protocol over the scanned corpora (BHSig260-Bengali, CEDAR in the
//! `<writer>/genuine-NN.png` layout): SigNet's pair counts, the bank's view, and the refusals
//! (a folder not in the layout, writers outside the corpus, overlapping writer sets).

use super::cli::{fails_with, ok_json};
use std::path::PathBuf;

fn shared(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpora")
        .join(name)
}

/// Raw pixels on two BHSig260 test writers with two dev writers: SigNet's pairs are
/// 24 x 23 / 2 = 276 genuine and 24 x 30 = 720 genuine-forged a writer; the bank questions
/// 24 - 5 = 19 genuine and 30 forged signatures a writer.
#[test]
#[cfg_attr(
    not(has_signature_scans),
    ignore = "needs ../shared/corpora/signatures-bhsig260-bengali and signatures-cedar"
)]
fn signatures_scanned_corpora_pair_counts_and_bank() {
    let b = shared("signatures-bhsig260-bengali");
    crate::require_input(&b.join("labels.tsv"));
    let v = ok_json(&[
        "eval",
        "--protocol",
        "signatures",
        "--raw",
        "--size",
        "32x64",
        "--corpus",
        b.to_str().unwrap(),
        "--test-writers",
        "79-80",
        "--dev-writers",
        "49-50",
        "--json",
    ]);
    assert_eq!(v["n_genuine_pairs"], 2 * 276);
    assert_eq!(v["n_forged_pairs"], 2 * 720);
    assert_eq!(v["bank"]["n_genuine"], 2 * 19);
    assert_eq!(v["bank"]["n_forged"], 2 * 30);
    for k in ["pair_accuracy", "far", "frr", "eer", "roc_auc"] {
        let x = v[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{k} {x}");
    }
    // SigNet's accuracy is 1 - (FAR + FRR) / 2 at the dev threshold.
    let (far, frr) = (v["far"].as_f64().unwrap(), v["frr"].as_f64().unwrap());
    assert!((v["pair_accuracy"].as_f64().unwrap() - (1.0 - (far + frr) / 2.0)).abs() < 1e-12);
    assert_eq!(
        v["threshold_source"],
        "calibrated on --dev-writers 49-50 of this corpus"
    );
    // CEDAR: 24 forgeries a writer -> 24 x 24 = 576 genuine-forged pairs.
    let c = shared("signatures-cedar");
    let v = ok_json(&[
        "eval",
        "--protocol",
        "signatures",
        "--raw",
        "--size",
        "32x64",
        "--corpus",
        c.to_str().unwrap(),
        "--test-writers",
        "45",
        "--dev-writers",
        "44",
        "--json",
    ]);
    assert_eq!(v["n_genuine_pairs"], 276);
    assert_eq!(v["n_forged_pairs"], 576);
}

#[test]
#[cfg_attr(
    not(has_signature_scans),
    ignore = "needs ../shared/corpora/signatures-bhsig260-bengali and signatures-cedar"
)]
fn signatures_refuse_bad_writers_and_folders() {
    let c = shared("signatures-cedar");
    let c = c.to_str().unwrap();
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", "--protocol", "signatures", "--raw", "--corpus", c];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str], msg: &str| {
        let a = eval(extra);
        let r: Vec<&str> = a.iter().map(String::as_str).collect();
        fails_with(&r, msg);
    };
    run(
        &["--test-writers", "36-50", "--dev-writers", "31-35"],
        "--test-writers 36-50: writer 46 is not in",
    );
    run(
        &["--test-writers", "36-45", "--dev-writers", "35-36"],
        "--dev-writers 35-36 and --test-writers 36-45 overlap (writer 36)",
    );
    run(
        &[
            "--test-writers",
            "36-45",
            "--dev-writers",
            "31-35",
            "--train-writers",
            "1-40",
        ],
        "--train-writers 1-40 and --test-writers 36-45 overlap (writer 36)",
    );
    run(&["--test-writers", "36-45"], "pass --dev-writers");
    // A folder in neither layout is refused naming it.
    let empty = tempfile::tempdir().unwrap();
    fails_with(
        &[
            "eval",
            "--protocol",
            "signatures",
            "--raw",
            "--corpus",
            empty.path().to_str().unwrap(),
            "--test-writers",
            "1-2",
        ],
        "not a signature folder",
    );
    // Training: a DIR:TRAIN:DEV whose TRAIN and DEV overlap, before any training.
    let out = tempfile::tempdir().unwrap();
    fails_with(
        &[
            "train",
            "image",
            "--protocol",
            "signatures",
            "--signature-corpus",
            &format!("{c}:1-30:30-35"),
            "--out",
            out.path().join("m").to_str().unwrap(),
        ],
        "overlap (writer 30)",
    );
}

/// The command: without --model the shipped encoder, with its own thresholds; its
/// training record names the writers it trained and chose on (CEDAR 1-35), so testing on any of
/// them is refused.
#[test]
#[cfg_attr(
    not(has_signature_scans),
    ignore = "needs ../shared/corpora/signatures-bhsig260-bengali and signatures-cedar"
)]
fn signatures_shipped_encoder_by_default() {
    let c = shared("signatures-cedar");
    let c = c.to_str().unwrap();
    let v = ok_json(&[
        "eval",
        "--protocol",
        "signatures",
        "--corpus",
        c,
        "--test-writers",
        "45",
        "--json",
    ]);
    assert_eq!(
        v["threshold_source"],
        "the encoder's own (calibrated on its dev writers)"
    );
    assert_eq!(v["n_genuine_pairs"], 276);
    let (far, frr) = (v["far"].as_f64().unwrap(), v["frr"].as_f64().unwrap());
    assert!((v["pair_accuracy"].as_f64().unwrap() - (1.0 - (far + frr) / 2.0)).abs() < 1e-12);
    fails_with(
        &[
            "eval",
            "--protocol",
            "signatures",
            "--corpus",
            c,
            "--test-writers",
            "30-36",
        ],
        "overlap (writer 30)",
    );
}
