//! dlib's pretrained face models (the face ResNet and the 5-point landmark predictor) as a
//! twindex image encoder directory, written into a temporary sibling and renamed, so a failed
//! import leaves nothing behind.

use super::dlib::{DlibResNet, ShapePredictor};
use super::dlib_detect::{MmodDetector, DETECTOR};
use super::image::{FaceAlign, CONFIG_FILE, WEIGHTS_FILE};
use super::{Arch, ImageModel, ImageModelConfig, TrainingRecord};
use crate::error::{Error, Result};
use std::path::Path;

/// dlib's face ResNet file name.
pub const RESNET: &str = "dlib_face_recognition_resnet_model_v1.dat";
/// dlib's 5-point landmark predictor file name.
pub const LANDMARKS: &str = "shape_predictor_5_face_landmarks.dat";
/// The predictor's name inside an encoder directory.
const LANDMARKS_IN_MODEL: &str = "landmarks.dat";
/// The detector's name inside an encoder directory.
const DETECTOR_IN_MODEL: &str = "detector.dat";

/// How the imported encoder frames and decides.
#[derive(Debug, Clone)]
pub struct DlibImport {
    /// Where faces are in the images, as fractions of width and height: left, top, right,
    /// bottom (there is no face detector: images must be face crops framed alike).
    pub face_box: [f64; 4],
    /// Margin around the template face in the 150x150 chip (dlib's descriptor expects 0.25).
    pub padding: f64,
    /// Default duplicate (same person) distance (dlib documents 0.6).
    pub threshold: f32,
    /// The command line recorded in the encoder's training record.
    pub command: Option<String>,
    /// Find faces in photos with dlib's MMOD detector, upsampling each photo this many times
    /// first (`face_box` is then unused); `None`: face crops framed alike.
    pub detect: Option<u32>,
}

/// What an import made.
#[derive(Debug, Clone)]
pub struct DlibImported {
    pub dim: usize,
    /// The side of the aligned face chip.
    pub side: usize,
    pub residual_blocks: usize,
}

fn ctx(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Msg(format!("{what}: {e}"))
}

/// Parse `left,top,right,bottom` fractions (0 <= left < right <= 1, 0 <= top < bottom <= 1).
pub fn parse_face_box(s: &str) -> Result<[f64; 4]> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::Msg(format!(
                "--face-box {s:?}: expected four numbers left,top,right,bottom: {e}"
            ))
        })?;
    match v.as_slice() {
        &[l, t, r, b] if (0.0..1.0).contains(&l) && (0.0..1.0).contains(&t) && l < r && t < b && r <= 1.0 && b <= 1.0 => {
            Ok([l, t, r, b])
        }
        _ => Err(Error::Msg(format!("--face-box {s:?}: expected four fractions 0 <= left < right <= 1, 0 <= top < bottom <= 1"))),
    }
}

/// Import dlib's models from the folder `src` as the encoder directory `out` (which must not
/// hold an encoder yet).
pub fn import_dlib_face(src: &Path, out: &Path, opts: &DlibImport) -> Result<DlibImported> {
    // dlib's chips use 0.25 (its default); a negative or huge padding frames no face and then
    // accepts strangers, so only a plausible share of the face box is taken.
    if !(0.0..=1.0).contains(&opts.padding) {
        return Err(Error::InvalidArgument(format!(
            "--padding {}: expected a share of the face box from 0 to 1 (dlib's default 0.25)",
            opts.padding
        )));
    }
    if opts.detect.is_some_and(|u| u > 2) {
        return Err(Error::InvalidArgument(format!(
            "--upsample {}: expected 0, 1 or 2 (each doubles the photo's width and height)",
            opts.detect.unwrap_or(0)
        )));
    }
    let (rp, lp, dp) = (src.join(RESNET), src.join(LANDMARKS), src.join(DETECTOR));
    let mut need = vec![&rp, &lp];
    if opts.detect.is_some() {
        need.push(&dp);
    }
    for p in need {
        if !p.exists() {
            return Err(Error::Msg(format!(
                "{}: not found (bash benches/peers/fetch_dlib_models.sh fetches dlib's models into corpora/dlib-models)",
                p.display()
            )));
        }
    }
    let net = DlibResNet::load_dat(&rp)?;
    let sp = ShapePredictor::load(&lp)?;
    if sp.num_parts() != 5 {
        return Err(Error::Msg(format!(
            "{}: a {}-point predictor; the face chip needs the 5-point one",
            lp.display(),
            sp.num_parts()
        )));
    }
    if opts.detect.is_some() {
        // Check it reads before anything is written.
        MmodDetector::load(&dp)?;
    }
    let channels = if opts.detect.is_some() { 3 } else { 1 };
    let mut config = ImageModelConfig::new(Arch::DlibResnet, net.side(), net.side(), channels);
    let p = &mut config.preprocess;
    p.scale = 1.0;
    p.auto_invert = false;
    p.face_align = Some(FaceAlign {
        landmarks: LANDMARKS_IN_MODEL.into(),
        face_box: opts.face_box,
        padding: opts.padding,
        detector: opts.detect.map(|_| DETECTOR_IN_MODEL.to_string()),
        upsample: opts.detect.unwrap_or(0),
        model_dir: None,
    });
    config.dim = net.dim();
    config.normalized = false;
    config.threshold = opts.threshold;
    config.training = TrainingRecord {
        corpus: "pretrained by dlib (about 3 million faces); imported, not trained here".into(),
        loss: "dlib loss_metric (pair hinge on Euclidean distance, margin 0.04 around 0.6)".into(),
        miner: "hard negatives within each batch (dlib)".into(),
        command: opts.command.clone(),
        ..Default::default()
    };
    if out.join(CONFIG_FILE).exists() {
        return Err(Error::Msg(format!(
            "{}: already holds an encoder; remove it or choose another --out",
            out.display()
        )));
    }
    // A fresh sibling of this process's own: `create_dir` fails rather than reuse (or, on a
    // failure, remove) a directory that twindex did not create.
    let tmp = out.with_extension(format!("importing-{}.tmp", std::process::id()));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(ctx(format!("creating {}", parent.display())))?;
    }
    std::fs::create_dir(&tmp).map_err(ctx(format!("creating {}", tmp.display())))?;
    let write = || -> Result<()> {
        let weights = tmp.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&net.tensors()?, &weights)
            .map_err(|e| Error::Msg(format!("writing {}: {e}", weights.display())))?;
        std::fs::copy(&lp, tmp.join(LANDMARKS_IN_MODEL))
            .map_err(ctx(format!("copying {}", lp.display())))?;
        if opts.detect.is_some() {
            std::fs::copy(&dp, tmp.join(DETECTOR_IN_MODEL))
                .map_err(ctx(format!("copying {}", dp.display())))?;
        }
        crate::fsutil::atomic_write_json(&tmp.join(CONFIG_FILE), &config)?;
        // Check that the directory loads as an encoder before it takes its name.
        ImageModel::load(&tmp)?;
        if out.exists() {
            std::fs::remove_dir(out)
                .map_err(ctx(format!("{} exists and is not empty", out.display())))?;
        }
        std::fs::rename(&tmp, out).map_err(ctx(format!("renaming into {}", out.display())))?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(DlibImported {
        dim: net.dim(),
        side: net.side(),
        residual_blocks: net.num_blocks(),
    })
}
