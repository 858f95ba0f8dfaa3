//! dlib's whole face pipeline on a photo, as face_recognition runs it: the MMOD CNN detector
//! finds the faces, the 5-point predictor places the landmarks in each box (on dlib's grey,
//! the mean of the three channels), the face is cut out as a 150x150 RGB chip and dlib's ResNet
//! gives its 128-d descriptor. The result per face: box, detection score, landmarks, descriptor.

use super::dlib::{face_chip, face_chip_rgb, DlibResNet, Grey, Rect, Rgb, ShapePredictor};
use super::dlib_detect::{MmodDetector, DETECTOR};
use super::dlib_import::{LANDMARKS, RESNET};
use crate::error::{Error, Result};
use candle_core::{Device, Module, Tensor};
use std::path::Path;

/// The largest photo the face pipeline takes, in pixels (24 megapixels, e.g. 6000x4000, after
/// upsampling): the detector's tiled pyramid and its first layer's output grow with the area.
/// Larger photos are refused with an error naming the file.
pub const MAX_FACE_PHOTO_PIXELS: usize = 24_000_000;

/// One face in a photo.
#[derive(Debug, Clone)]
pub struct Face {
    /// dlib's inclusive box (left, top, right, bottom) in photo pixels.
    pub rect: Rect,
    /// The detector's score (greater: surer; dlib reports faces scoring above 0).
    pub score: f32,
    /// The 5 landmarks (x, y).
    pub parts: Vec<[i64; 2]>,
    /// dlib's 128-d face descriptor (same person: Euclidean distance <= 0.6).
    pub descriptor: Vec<f32>,
}

/// The three dlib models of the pipeline.
pub struct FacePipeline {
    pub detector: MmodDetector,
    pub landmarks: ShapePredictor,
    pub net: DlibResNet,
    /// Times the photo is upsampled before detection (face_recognition's
    /// `number_of_times_to_upsample`; 0 finds faces of about 80 px and more, 1 of about 40).
    pub upsample: u32,
}

/// dlib's grey value of an RGB pixel: the mean of the three channels, truncated.
pub fn dlib_grey(img: Rgb) -> Vec<u8> {
    img.pixels
        .chunks_exact(3)
        .map(|p| ((p[0] as u32 + p[1] as u32 + p[2] as u32) / 3) as u8)
        .collect()
}

/// A face found in a photo and cut out for the descriptor, not yet embedded.
#[derive(Debug, Clone)]
pub struct FaceChip {
    /// dlib's inclusive box (left, top, right, bottom) in photo pixels.
    pub rect: Rect,
    /// The detector's score.
    pub score: f32,
    /// The 5 landmarks (x, y).
    pub parts: Vec<[i64; 2]>,
    /// The aligned `side x side` chip, `channels` bytes a pixel (RGB, or dlib's grey).
    pub chip: Vec<u8>,
}

/// Refuse a photo larger than [`MAX_FACE_PHOTO_PIXELS`] once upsampled `upsample` times.
pub fn check_photo_size(img: Rgb, upsample: u32, name: &Path) -> Result<()> {
    let scaled = (img.width * img.height) << (2 * upsample.min(8));
    if scaled > MAX_FACE_PHOTO_PIXELS {
        return Err(Error::format(
            name,
            format!(
                "a {}x{} photo{} is more than the face detector takes ({MAX_FACE_PHOTO_PIXELS} pixels); make it smaller",
                img.width,
                img.height,
                if upsample > 0 { " upsampled" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Every face of a photo as face_recognition finds and frames it, best detection first: the
/// MMOD detector (`upsample` times upsampled), the 5 landmarks on dlib's grey and the aligned
/// `side x side` chip with dlib's `padding`, in colour (`channels` 3) or dlib's grey (1).
/// The caller checks the photo's size ([`check_photo_size`]).
pub fn face_chips(
    detector: &MmodDetector,
    landmarks: &ShapePredictor,
    img: Rgb,
    upsample: u32,
    side: usize,
    channels: usize,
    padding: f64,
) -> Result<Vec<FaceChip>> {
    let found = detector.detect(img, upsample)?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let grey = dlib_grey(img);
    let g = Grey {
        pixels: &grey,
        width: img.width,
        height: img.height,
    };
    found
        .iter()
        .map(|d| {
            let parts = landmarks.predict(g, d.rect);
            let chip = if channels == 3 {
                face_chip_rgb(img, &parts, side, padding)?
            } else {
                face_chip(g, &parts, side, padding)?
            };
            Ok(FaceChip {
                rect: d.rect,
                score: d.score,
                parts,
                chip,
            })
        })
        .collect()
}

impl FacePipeline {
    /// Load dlib's detector, predictor and ResNet from a folder holding dlib's files
    /// (`mmod_human_face_detector.dat`, `shape_predictor_5_face_landmarks.dat`,
    /// `dlib_face_recognition_resnet_model_v1.dat`).
    pub fn load(dir: &Path, upsample: u32) -> Result<Self> {
        let need = |f: &str| {
            let p = dir.join(f);
            if p.exists() {
                Ok(p)
            } else {
                Err(Error::Msg(format!(
                    "{}: not found (bash benches/peers/fetch_dlib_models.sh fetches dlib's models into corpora/dlib-models)",
                    p.display()
                )))
            }
        };
        let landmarks = ShapePredictor::load(&need(LANDMARKS)?)?;
        if landmarks.num_parts() != 5 {
            return Err(Error::Msg(format!(
                "{}: a {}-point predictor; the face chip needs the 5-point one",
                dir.join(LANDMARKS).display(),
                landmarks.num_parts()
            )));
        }
        Ok(FacePipeline {
            detector: MmodDetector::load(&need(DETECTOR)?)?,
            landmarks,
            net: DlibResNet::load_dat(&need(RESNET)?)?,
            upsample,
        })
    }

    /// Every face in a photo, best detection first. `name` names the photo in errors.
    pub fn faces(&self, img: Rgb, name: &Path) -> Result<Vec<Face>> {
        check_photo_size(img, self.upsample, name)?;
        let side = self.net.side();
        let found = face_chips(
            &self.detector,
            &self.landmarks,
            img,
            self.upsample,
            side,
            3,
            0.25,
        )?;
        let mut chips = Vec::with_capacity(found.len() * side * side * 3);
        let mut faces = Vec::with_capacity(found.len());
        for f in found {
            chips.extend(f.chip);
            faces.push(Face {
                rect: f.rect,
                score: f.score,
                parts: f.parts,
                descriptor: Vec::new(),
            });
        }
        let dim = self.net.dim();
        for (i, chunk) in chips.chunks(8 * side * side * 3).enumerate() {
            let n = chunk.len() / (side * side * 3);
            let x = Tensor::from_slice(chunk, (n, side, side, 3), &Device::Cpu)?
                .to_dtype(candle_core::DType::F32)?;
            let e = self.net.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            for (j, d) in e.chunks(dim).enumerate() {
                faces[i * 8 + j].descriptor = d.to_vec();
            }
        }
        Ok(faces)
    }

    /// [`FacePipeline::faces`] of an image file (PNG, JPEG, PGM; read as RGB).
    pub fn faces_in_file(&self, path: &Path) -> Result<Vec<Face>> {
        let bytes = crate::fsutil::read_regular(path)?;
        let img = crate::corpus::image_file::decode_rgb(&bytes, path)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        self.faces(
            Rgb {
                pixels: img.as_raw(),
                width: w,
                height: h,
            },
            path,
        )
    }
}
