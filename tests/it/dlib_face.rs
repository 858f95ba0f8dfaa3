//! dlib's face models against dlib itself: landmarks, chips (sha256 of the pixels) and
//! descriptors computed by dlib's Python bindings (benches/peers/dlib_face_reference.py) for
//! six ORL faces.

use std::path::{Path, PathBuf};
use twindex::model::dlib::{face_chip, DlibResNet, Grey, Rect, ShapePredictor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dlib model files (the tests that call this are ignored by build.rs's `has_dlib_models`
/// where they were not fetched).
pub fn dlib_models() -> PathBuf {
    let d = root().join("corpora/dlib-models");
    crate::require_input(&d.join("dlib_face_recognition_resnet_model_v1.dat"));
    crate::require_input(&d.join("shape_predictor_5_face_landmarks.dat"));
    d
}

/// `twindex import dlib-face` from `models` into `dir/dlib-face`; returns that directory.
fn import(models: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("dlib-face");
    let v = super::cli::ok_json(&[
        "import",
        "dlib-face",
        "--models",
        models.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["dim"], 128);
    out
}

fn grey(path: &Path) -> (Vec<u8>, usize, usize) {
    let g = image::open(path).unwrap().to_luma8();
    let (w, h) = (g.width() as usize, g.height() as usize);
    (g.into_raw(), w, h)
}

#[test]
#[cfg_attr(
    not(has_dlib_models),
    ignore = "needs dlib's models in corpora/dlib-models: bash benches/peers/fetch_dlib_models.sh"
)]
fn landmarks_and_descriptors_match_dlib() {
    let d = dlib_models();
    let sp = ShapePredictor::load(&d.join("shape_predictor_5_face_landmarks.dat")).unwrap();
    let net = DlibResNet::load_dat(&d.join("dlib_face_recognition_resnet_model_v1.dat")).unwrap();
    assert_eq!((sp.num_parts(), net.side(), net.dim()), (5, 150, 128));
    let refs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/dlib_face_reference.json")).unwrap(),
    )
    .unwrap();
    let mut worst = 0f32;
    for r in refs.as_array().unwrap() {
        let path = root()
            .join("corpora/orl-faces")
            .join(r["path"].as_str().unwrap());
        let (px, w, h) = grey(&path);
        let img = Grey {
            pixels: &px,
            width: w,
            height: h,
        };
        let b: Vec<i64> = r["rect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let parts = sp.predict(
            img,
            Rect {
                left: b[0],
                top: b[1],
                right: b[2],
                bottom: b[3],
            },
        );
        let want: Vec<[i64; 2]> = r["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| [p[0].as_i64().unwrap(), p[1].as_i64().unwrap()])
            .collect();
        assert_eq!(parts, want, "{}: landmarks", path.display());
        let chip = face_chip(img, &parts, 150, 0.25).unwrap();
        let sha = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&chip));
        assert_eq!(
            sha,
            r["chip_sha256"].as_str().unwrap(),
            "{}: chip",
            path.display()
        );
        let x = candle_core::Tensor::from_vec(chip, (1, 150, 150, 1), &candle_core::Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let e = candle_core::Module::forward(&net, &x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want: Vec<f32> = r["descriptor"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let diff = e
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{}: max |twindex - dlib| = {diff:.2e}", path.display());
        worst = worst.max(diff);
    }
    // dlib's descriptors are printed with 6 decimals; same-person distances are ~0.3.
    assert!(worst < 1e-4, "descriptor differs from dlib's by {worst}");
}

#[test]
#[cfg_attr(
    not(has_dlib_models),
    ignore = "needs dlib's models in corpora/dlib-models: bash benches/peers/fetch_dlib_models.sh"
)]
fn truncated_or_foreign_dlib_files_are_named_errors() {
    let d = dlib_models();
    let t = tempfile::tempdir().unwrap();
    let sp = std::fs::read(d.join("shape_predictor_5_face_landmarks.dat")).unwrap();
    let net = std::fs::read(d.join("dlib_face_recognition_resnet_model_v1.dat")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("sp-truncated.dat", sp[..sp.len() / 3].to_vec()),
        ("sp-empty.dat", Vec::new()),
        ("sp-extra.dat", [sp.as_slice(), b"xx"].concat()),
    ];
    for (name, bytes) in &cases {
        let p = t.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = ShapePredictor::load(&p).err().unwrap().to_string();
        assert!(e.contains(name), "{name}: {e}");
    }
    for (name, bytes) in [
        ("net-truncated.dat", net[..net.len() / 2].to_vec()),
        ("net-is-predictor.dat", sp.clone()),
    ] {
        let p = t.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = DlibResNet::load_dat(&p).err().unwrap().to_string();
        assert!(e.contains(name), "{name}: {e}");
    }
}

#[test]
#[cfg_attr(
    not(has_dlib_models),
    ignore = "needs dlib's models in corpora/dlib-models: bash benches/peers/fetch_dlib_models.sh"
)]
fn imported_face_encoder_enrols_identifies_and_verifies() {
    use super::cli::{fails_with, ok_json, twindex};
    let d = dlib_models();
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("dlib-face");
    let (m, ds) = (model.to_str().unwrap(), d.to_str().unwrap());
    // A user's directory named like an import's working directory is not twindex's to remove.
    let theirs = t.path().join("dlib-face.importing.tmp");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let v = ok_json(&["import", "dlib-face", "--models", ds, "--out", m, "--json"]);
    assert_eq!(v["dim"], 128);
    assert_eq!(
        std::fs::read_to_string(theirs.join("notes.txt")).unwrap(),
        "mine"
    );
    // A second import into the same place refuses and leaves the first intact.
    fails_with(
        &["import", "dlib-face", "--models", ds, "--out", m],
        "already holds",
    );
    // A class of five people, one photo each.
    let class = t.path().join("class");
    for s in 1..=5 {
        std::fs::create_dir_all(class.join(format!("s{s}"))).unwrap();
        std::fs::copy(
            root().join(format!("corpora/orl-faces/s{s}/1.pgm")),
            class.join(format!("s{s}/1.pgm")),
        )
        .unwrap();
    }
    let idx = t.path().join("idx");
    let i = idx.to_str().unwrap();
    ok_json(&[
        "index",
        "build",
        "--model",
        m,
        "--corpus",
        class.to_str().unwrap(),
        "--out",
        i,
        "--backend",
        "flat",
        "--json",
    ]);
    // The index carries the landmark predictor with the encoder: it works with the model gone.
    assert!(idx.join("encoder/landmarks.dat").exists());
    std::fs::rename(&model, t.path().join("moved")).unwrap();
    let q = root().join("corpora/orl-faces/s6/2.pgm");
    let q = q.to_str().unwrap();
    let before = ok_json(&["query", "--index", i, "--image", q, "--k", "1", "--json"]);
    assert_eq!(before["results"][0]["duplicate"], false, "{before}");
    let s6 = root().join("corpora/orl-faces/s6/1.pgm");
    let o = twindex(&[
        "index",
        "add",
        "--index",
        i,
        "--label",
        "s6",
        s6.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = ok_json(&["query", "--index", i, "--image", q, "--k", "1", "--json"]);
    assert_eq!(after["results"][0]["label"], "s6", "{after}");
    assert_eq!(after["results"][0]["duplicate"], true, "{after}");
    let v = ok_json(&["verify", "--index", i, "--label", "s6", q, "--json"]);
    assert_eq!(v["accepted"], true, "{v}");
    let v = ok_json(&["verify", "--index", i, "--label", "s2", q, "--json"]);
    assert_eq!(v["accepted"], false, "{v}");
    // An encoder directory without its landmark predictor is refused, naming the file.
    let moved = t.path().join("moved");
    std::fs::remove_file(moved.join("landmarks.dat")).unwrap();
    fails_with(
        &[
            "eval",
            "--protocol",
            "orl",
            "--model",
            moved.to_str().unwrap(),
            "--folds",
            "0",
        ],
        "landmarks.dat",
    );
}

/// The ORL protocol on one fold (10 unseen people, 10 enrolment images each) with
/// dlib's pretrained descriptor: identification >= 0.97 and verification ROC-AUC >= 0.99.
#[test]
#[cfg_attr(
    not(has_dlib_models),
    ignore = "needs dlib's models in corpora/dlib-models: bash benches/peers/fetch_dlib_models.sh"
)]
fn orl_fold_with_the_pretrained_face_descriptor() {
    use super::cli::ok_json;
    let d = dlib_models();
    let t = tempfile::tempdir().unwrap();
    let model = import(&d, t.path());
    let m = model.to_str().unwrap();
    let v = ok_json(&[
        "eval",
        "--protocol",
        "orl",
        "--model",
        m,
        "--folds",
        "0",
        "--json",
    ]);
    let (id, auc) = (
        v["identification_accuracy"].as_f64().unwrap(),
        v["verification_roc_auc"].as_f64().unwrap(),
    );
    println!("ORL fold 0, dlib descriptor: identification {id:.4}, ROC-AUC {auc:.4}");
    assert!(id >= 0.97 && auc >= 0.99, "{v}");
}

#[test]
fn reader_decodes_packed_ints_floats_and_names_truncation() {
    use twindex::model::dlib::Reader;
    let p = Path::new("x.dat");
    // 300 = 0x012c (2 bytes), -5, and 122.782 as mantissa 16093282 * 2^-17.
    let bytes = [
        0x02, 0x2c, 0x01, 0x81, 0x05, 0x03, 0x62, 0x90, 0xf5, 0x81, 0x11, 0x02, 0x01,
    ];
    let mut r = Reader::new(&bytes, p);
    assert_eq!(r.int().unwrap(), 300);
    assert_eq!(r.int().unwrap(), -5);
    assert!((r.float().unwrap() - 122.782).abs() < 1e-4);
    let e = r.int().unwrap_err().to_string();
    assert!(e.contains("x.dat") && e.contains("ends inside"), "{e}");
}

/// An encoder trained on aligned chips (`--align-faces DIR`) carries the landmark predictor it
/// was trained with and reads query files through the same alignment.
#[test]
#[cfg_attr(
    not(has_dlib_models),
    ignore = "needs dlib's models in corpora/dlib-models: bash benches/peers/fetch_dlib_models.sh"
)]
fn encoder_trained_on_aligned_faces_is_self_contained() {
    use twindex::model::{Arch, ImageModel, ImageModelConfig};
    let d = dlib_models();
    let t = tempfile::tempdir().unwrap();
    let dlib = import(&d, t.path());
    let fa = ImageModel::load(&dlib)
        .unwrap()
        .config
        .preprocess
        .face_align
        .unwrap();
    let mut cfg = ImageModelConfig::new(Arch::Deep, 32, 32, 1);
    cfg.preprocess.face_align = Some(fa);
    let m = ImageModel::new_trainable(cfg, 1).unwrap();
    let out = t.path().join("mine");
    m.save(&out).unwrap();
    assert_eq!(
        std::fs::read(out.join("landmarks.dat")).unwrap(),
        std::fs::read(dlib.join("landmarks.dat")).unwrap()
    );
    std::fs::remove_dir_all(&dlib).unwrap();
    let back = ImageModel::load(&out).unwrap();
    let face = root().join("corpora/orl-faces/s1/1.pgm");
    let chip = back.config.preprocess.load_file(&face).unwrap();
    assert_eq!(chip.len(), 32 * 32);
    let e = back.embed_pixels(&chip, 1, 1).unwrap();
    assert_eq!(e.len(), 128);
}

#[test]
fn the_pretrained_arch_is_not_trained() {
    super::cli::fails_with(
        &[
            "train",
            "image",
            "--corpus",
            "mnist",
            "--arch",
            "dlib-resnet",
            "--out",
            "/nonexistent/x",
        ],
        "import dlib-face",
    );
}
