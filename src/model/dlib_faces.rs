//! dlib's whole face pipeline on a photo, as face_recognition runs it: the MMOD CNN detector
//! finds the faces, the 5-point predictor places the landmarks in each box (on dlib's grey,
//! the mean of the three channels), the face is cut out as a 150x150 RGB chip and dlib's ResNet
//! gives its 128-d descriptor. The result per face: box, detection score, landmarks, descriptor.

use super::dlib::{face_chip_rgb, DlibResNet, Grey, Rect, Rgb, ShapePredictor};
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
        let area = img.width * img.height;
        let scaled = area << (2 * self.upsample.min(8));
        if scaled > MAX_FACE_PHOTO_PIXELS {
            return Err(Error::format(
                name,
                format!(
                    "a {}x{} photo{} is more than the face detector takes ({MAX_FACE_PHOTO_PIXELS} pixels); make it smaller",
                    img.width,
                    img.height,
                    if self.upsample > 0 { " upsampled" } else { "" }
                ),
            ));
        }
        let found = self.detector.detect(img, self.upsample)?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let grey = dlib_grey(img);
        let g = Grey {
            pixels: &grey,
            width: img.width,
            height: img.height,
        };
        let side = self.net.side();
        let mut chips = Vec::with_capacity(found.len() * side * side * 3);
        let mut faces = Vec::with_capacity(found.len());
        for d in &found {
            let parts = self.landmarks.predict(g, d.rect);
            chips.extend(face_chip_rgb(img, &parts, side, 0.25)?);
            faces.push(Face {
                rect: d.rect,
                score: d.score,
                parts,
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
