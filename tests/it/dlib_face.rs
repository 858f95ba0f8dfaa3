//! dlib's face models against dlib itself: landmarks, chips and descriptors computed by
//! dlib's Python bindings (benches/peers/dlib_face_reference.py) for six ORL faces.

use std::path::{Path, PathBuf};
use twindex::model::dlib::{face_chip, DlibResNet, Grey, Rect, ShapePredictor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dlib model files, or `None` (with the reason printed) where they were not fetched.
pub fn dlib_models() -> Option<PathBuf> {
    let d = root().join("corpora/dlib-models");
    if d.join("dlib_face_recognition_resnet_model_v1.dat").exists()
        && d.join("shape_predictor_5_face_landmarks.dat").exists()
    {
        Some(d)
    } else {
        eprintln!(
            "skipped: {} has no dlib models (bash benches/peers/fetch_dlib_models.sh fetches them)",
            d.display()
        );
        None
    }
}

fn grey(path: &Path) -> (Vec<u8>, usize, usize) {
    let g = image::open(path).unwrap().to_luma8();
    let (w, h) = (g.width() as usize, g.height() as usize);
    (g.into_raw(), w, h)
}

#[test]
fn landmarks_and_descriptors_match_dlib() {
    let Some(d) = dlib_models() else { return };
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
