//! Which of the tests' external inputs this machine has, as `has_*` cfgs for the test suite.
//!
//! A test that needs an input the repository does not ship (`../shared`, dlib's model files,
//! Chromium, the Milvus server) carries `#[cfg_attr(not(has_X), ignore = "needs X: how to get
//! it")]`, so a missing input shows in `cargo test`'s summary as an ignored test with its reason,
//! not as a pass. With `CI` set every cfg is emitted whatever is there: under CI nothing is
//! ignored for a missing input, the test runs and fails naming the file.
//!
//! The script reruns when an input appears or goes (it watches each input, or the folder that
//! would hold it). Where even that folder is missing (no `../shared` at all), `touch build.rs`
//! after providing it.

use std::path::{Path, PathBuf};

/// One input: its cfg name and the files that must all exist.
struct Input {
    cfg: &'static str,
    files: Vec<PathBuf>,
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let shared = root.join("../shared");
    let ci = std::env::var_os("CI").is_some();
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=TWINDEX_MILVUS_VENV");

    let minilm = shared.join("models/all-MiniLM-L6-v2");
    let pairs = shared.join("corpora/pairs");
    let reference = shared.join("reference");
    let dlib = root.join("corpora/dlib-models");
    let milvus_venv = match std::env::var_os("TWINDEX_MILVUS_VENV") {
        Some(v) => PathBuf::from(v),
        None => root.join("target/milvus-venv"),
    };
    let inputs = [
        Input {
            cfg: "has_minilm",
            files: ["config.json", "model.safetensors", "tokenizer.json"]
                .map(|f| minilm.join(f))
                .to_vec(),
        },
        Input {
            cfg: "has_qqp",
            files: ["qqp-10k.tsv", "qqp-10k.train.tsv", "qqp-10k.test.tsv"]
                .map(|f| pairs.join(f))
                .to_vec(),
        },
        Input {
            cfg: "has_minilm_reference",
            files: [
                "minilm_ref_100.txt",
                "minilm_ref_100.npy",
                "minilm_ref_100_tokens.json",
            ]
            .map(|f| reference.join(f))
            .to_vec(),
        },
        Input {
            cfg: "has_signatures",
            files: vec![shared.join("corpora/signatures-svc2004/labels.tsv")],
        },
        Input {
            cfg: "has_signature_scans",
            files: vec![
                shared.join("corpora/signatures-bhsig260-bengali/labels.tsv"),
                shared.join("corpora/signatures-cedar/labels.tsv"),
            ],
        },
        Input {
            cfg: "has_online_signatures",
            files: vec![shared.join("corpora/signatures-svc2004-online/U1S1.TXT")],
        },
        Input {
            cfg: "has_dlib_models",
            files: [
                "dlib_face_recognition_resnet_model_v1.dat",
                "shape_predictor_5_face_landmarks.dat",
            ]
            .map(|f| dlib.join(f))
            .to_vec(),
        },
        Input {
            cfg: "has_dlib_detector",
            files: vec![
                dlib.join("mmod_human_face_detector.dat"),
                dlib.join("shape_predictor_5_face_landmarks.dat"),
                dlib.join("dlib_face_recognition_resnet_model_v1.dat"),
                shared.join("corpora/faces-photos/PROVENANCE.md"),
            ],
        },
        Input {
            cfg: "has_milvus",
            files: vec![milvus_venv.join("bin/milvus-server")],
        },
    ];
    // Folders a missing input may appear in; a watch never climbs above them (`..` is no place
    // to scan).
    let tops = [shared.clone(), root.join("corpora"), milvus_venv.clone()];
    let mut watched = std::collections::BTreeSet::new();
    for input in &inputs {
        println!("cargo::rustc-check-cfg=cfg({})", input.cfg);
        let mut present = true;
        for f in &input.files {
            present &= f.exists();
            watched.extend(watch(f, &tops));
        }
        // The Milvus tests start the server in a network namespace: root only.
        if input.cfg == "has_milvus" {
            present &= is_root();
        }
        if present || ci {
            println!("cargo::rustc-cfg={}", input.cfg);
        }
    }
    for p in watched {
        println!("cargo::rerun-if-changed={}", p.display());
    }

    println!("cargo::rustc-check-cfg=cfg(has_chromium)");
    if chromium() || ci {
        println!("cargo::rustc-cfg=has_chromium");
    }

    // The CPU's SIMD features, for the tests of the fast paths: a test of a path this CPU cannot
    // run is ignored with the reason (under CI too: that is the machine, not a missing input).
    // The tests check at run time that the CPU they run on has the feature.
    for cfg in CPU_FEATURES {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    if native {
        for cfg in cpu_features() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// The `cpu_*` cfgs build.rs may emit.
const CPU_FEATURES: [&str; 3] = ["cpu_avx512f", "cpu_avx512bf16", "cpu_amx"];

/// The `cpu_*` cfgs of this CPU: AVX-512F; AVX512-BF16 (with AVX-512F); AMX-BF16 and AMX-TILE
/// (with AVX-512F) as the kernel reports them in /proc/cpuinfo.
fn cpu_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        out.push("cpu_avx512f");
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            out.push("cpu_avx512bf16");
        }
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let has = |f: &str| {
            flags
                .lines()
                .find(|l| l.starts_with("flags"))
                .is_some_and(|l| l.split_whitespace().any(|w| w == f))
        };
        if has("amx_bf16") && has("amx_tile") {
            out.push("cpu_amx");
        }
    }
    out
}

/// What to watch so that the script reruns when `file` changes, appears or goes: the file, or
/// the nearest folder up to one of `tops` that exists (none past them).
fn watch(file: &Path, tops: &[PathBuf]) -> Option<PathBuf> {
    let mut p = file;
    loop {
        if p.exists() {
            return Some(p.to_path_buf());
        }
        if tops.iter().any(|t| t == p) {
            return None;
        }
        p = p.parent()?;
    }
}

/// Whether this build runs as root (`Uid:` in /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether headless Chromium is on PATH (the names tests/it/serve.rs looks for). When it is
/// not, watch the folders a package manager installs it into.
fn chromium() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|b| dirs.iter().map(move |d| d.join(b)))
        .find(|p| p.is_file());
    match &found {
        Some(p) => println!("cargo::rerun-if-changed={}", p.display()),
        None => {
            for d in ["/usr/bin", "/usr/local/bin", "/snap/bin"] {
                if dirs.iter().any(|x| x == Path::new(d)) && Path::new(d).is_dir() {
                    println!("cargo::rerun-if-changed={d}");
                }
            }
        }
    }
    found.is_some()
}
