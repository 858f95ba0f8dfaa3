//! A trained image encoder on disk: `config.json` (how to rebuild and use it) + `model.safetensors`.

use super::cnn::{Arch, ImageEncoder};
use super::dlib::{face_chip, DlibResNet, Grey, Rect, Rgb, ShapePredictor};
use super::dlib_detect::MmodDetector;
use super::dlib_faces::{check_photo_size, face_chips, FaceChip};
use super::ensemble::{Ensemble, EnsembleBy, EnsembleConfig, MemberConfig};
use crate::error::{Error, Result};
use crate::fsutil;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use super::encoder_dir::{CONFIG_FILE, WEIGHTS_FILE};
/// Format tag of image encoder configs.
pub const IMAGE_FORMAT: &str = "twindex-image-encoder";

/// How raw pixels become network input. Queries are preprocessed exactly like training.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Preprocess {
    /// Input height the network expects (images of another size are resized).
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Channels (1 = greyscale).
    pub channels: usize,
    /// Multiplier applied to 0..255 pixels (1/255 maps to `[0,1]`).
    pub scale: f32,
    /// Invert pixels (255 - p) before scaling: MNIST digits are white on black, so a
    /// black-on-white query image must be inverted to look like the training data.
    #[serde(default)]
    pub invert: bool,
    /// Background value (0..255, before inversion) used to pad an image resized to the input
    /// size with its aspect ratio kept: 0 for black backgrounds, 255 for paper.
    #[serde(default)]
    pub pad: u8,
    /// Per-image standardisation after scaling: subtract the image's mean and divide by its
    /// standard deviation (evens out lighting; faces).
    #[serde(default)]
    pub standardize: bool,
    /// Query image files whose border is bright are inverted to match the training data (the
    /// MNIST encoders: white digits on black). Encoders trained on image folders set this off:
    /// their files are read exactly as the training files were.
    #[serde(default = "default_true")]
    pub auto_invert: bool,
    /// Embed each image and its mirror image and average the two (then renormalise): an
    /// embedding that does not care which way a face is turned. Training is unaffected.
    #[serde(default)]
    pub mirror_average: bool,
    /// Align faces before embedding (the `dlib-resnet` encoder): landmarks found inside a
    /// fixed box of the image, then the face rotated and scaled onto dlib's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_align: Option<FaceAlign>,
    /// Ink on paper ([`crate::corpus::image_file::ink_normalise`]): paper made pure white by
    /// Otsu's threshold, ink stretched, the image cropped to the ink before resizing
    /// (signature scans from different scanners and writers compare alike). Default off.
    #[serde(default)]
    pub ink: bool,
}

/// How face images are aligned. With a `detector` the encoder takes photos: dlib's MMOD
/// detector finds the faces and the landmark predictor starts from each box found (enrolment
/// needs exactly one face; a query answers for each). Without one the images are expected to
/// be face crops framed alike (as the ORL faces and passport photos are), and the landmark
/// predictor starts from the same `face_box` in each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaceAlign {
    /// The landmark predictor file (dlib format), relative to the model directory.
    pub landmarks: String,
    /// The box the face is expected in, as fractions of the image width and height:
    /// left, top, right, bottom (unused with a detector).
    pub face_box: [f64; 4],
    /// dlib's MMOD face detector file, relative to the model directory: faces are found in
    /// photos rather than expected in `face_box`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
    /// Times a photo is upsampled before detection (face_recognition's
    /// `number_of_times_to_upsample`; 0 finds faces of about 80 px and more, 1 of about 40).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub upsample: u32,
    /// Margin around the template face in the chip, as a fraction of its size (dlib: 0.25).
    pub padding: f64,
    /// The model directory (set when the model is loaded; not stored).
    #[serde(skip)]
    pub model_dir: Option<PathBuf>,
}

/// A dlib model file loaded once per process and path.
fn cached<T: Send + Sync + 'static>(
    path: PathBuf,
    load: impl FnOnce(&Path) -> Result<T>,
) -> Result<std::sync::Arc<T>> {
    type Cache = Mutex<HashMap<PathBuf, std::sync::Arc<dyn std::any::Any + Send + Sync>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .expect("model file cache");
    if let Some(p) = cache.get(&path) {
        if let Ok(t) = p.clone().downcast::<T>() {
            return Ok(t);
        }
    }
    let t = std::sync::Arc::new(load(&path)?);
    cache.insert(path, t.clone());
    Ok(t)
}

impl FaceAlign {
    fn model_file(&self, name: &str) -> Result<PathBuf> {
        let dir = self.model_dir.as_ref().ok_or_else(|| {
            Error::Msg("a face-aligning encoder must be loaded from its directory".into())
        })?;
        Ok(dir.join(name))
    }

    /// The landmark predictor, loaded once per process and file.
    fn predictor(&self) -> Result<std::sync::Arc<ShapePredictor>> {
        cached(self.model_file(&self.landmarks)?, ShapePredictor::load)
    }

    /// Every face of a decoded photo with its aligned `size x size` chip of `channels` bytes a
    /// pixel, best detection first (a detecting encoder; `name` names the photo in errors).
    pub fn photo_faces(
        &self,
        img: &image::RgbImage,
        name: &Path,
        size: usize,
        channels: usize,
    ) -> Result<Vec<FaceChip>> {
        let file = self.detector.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: this face encoder takes face crops, not photos (it has no detector)",
                name.display()
            ))
        })?;
        let det = cached(self.model_file(file)?, MmodDetector::load)?;
        let sp = self.predictor()?;
        let rgb = Rgb {
            pixels: img.as_raw(),
            width: img.width() as usize,
            height: img.height() as usize,
        };
        check_photo_size(rgb, self.upsample, name)?;
        face_chips(&det, &sp, rgb, self.upsample, size, channels, self.padding)
    }

    /// The chip of the one face of an enrolment photo: a photo with no face or several is
    /// refused, naming the file and how many faces were found.
    pub fn one_face(
        &self,
        img: &image::RgbImage,
        name: &Path,
        size: usize,
        channels: usize,
    ) -> Result<Vec<u8>> {
        let mut faces = self.photo_faces(img, name, size, channels)?;
        match faces.len() {
            1 => Ok(faces.pop().expect("one face").chip),
            0 => Err(Error::format(
                name,
                format!(
                    "no face found in this {}x{} photo (the detector finds faces of about {} px and more); an enrolment photo must show exactly one face",
                    img.width(),
                    img.height(),
                    80 >> self.upsample.min(2)
                ),
            )),
            n => Err(Error::format(
                name,
                format!("{n} faces found; an enrolment photo must show exactly one face"),
            )),
        }
    }

    /// Read `path` and return its aligned `size x size` greyscale face chip.
    pub fn load_chip(&self, path: &Path, size: usize) -> Result<Vec<u8>> {
        self.chip_of(crate::corpus::image_file::read_grey(path)?, path, size)
    }

    /// The aligned `size x size` chip of a decoded image (`path` names it in errors).
    pub fn chip_of(&self, g: image::GrayImage, path: &Path, size: usize) -> Result<Vec<u8>> {
        let sp = self.predictor()?;
        let (w, h) = (g.width() as usize, g.height() as usize);
        if w < 8 || h < 8 {
            return Err(Error::format(
                path,
                format!("a {w}x{h} image is too small to hold a face"),
            ));
        }
        let [l, t, r, b] = self.face_box;
        let rect = Rect {
            left: (l * w as f64).round() as i64,
            top: (t * h as f64).round() as i64,
            right: (r * w as f64).round() as i64,
            bottom: (b * h as f64).round() as i64,
        };
        let img = Grey {
            pixels: g.as_raw(),
            width: w,
            height: h,
        };
        let parts = sp.predict(img, rect);
        face_chip(img, &parts, size, self.padding)
    }
}

/// Read folder `items` with `pre` (resized, padded; see [`Preprocess::load_file`]) into an
/// [`crate::corpus::ImageSet`] whose labels index `classes`.
pub fn load_set(
    items: &[crate::corpus::folder::FolderItem],
    classes: &[String],
    pre: &Preprocess,
) -> Result<crate::corpus::ImageSet> {
    crate::corpus::folder::load_set_with(items, classes, pre.height, pre.width, |p| {
        pre.load_file(p)
    })
}

fn default_true() -> bool {
    true
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// An image whose every value is alike holds nothing to compare: refused, naming it.
fn refuse_blank(raw: &[u8], width: u32, height: u32, name: &Path) -> Result<()> {
    match raw.first() {
        Some(&v) if raw.iter().all(|&p| p == v) => Err(Error::format(
            name,
            format!("image is blank ({width}x{height}, every pixel {v}): nothing to compare"),
        )),
        _ => Ok(()),
    }
}

impl Preprocess {
    /// Read an image file (PNG, PGM/PNM, JPEG) as the 0..255 pixels this preprocessing
    /// expects: greyscale, resized with the aspect ratio kept and padded with `pad`. Inversion,
    /// scaling and standardisation happen later, in [`ImageModel::input_tensor`], the same for
    /// training batches and queries.
    pub fn load_file(&self, path: &Path) -> Result<Vec<u8>> {
        if self.detects_faces() {
            return self.load_query_file(path);
        }
        if let Some(fa) = &self.face_align {
            return fa.load_chip(path, self.height);
        }
        if self.channels != 1 {
            return Err(Error::InvalidArgument(format!(
                "{}: only greyscale encoders read image files (this one has {} channels)",
                path.display(),
                self.channels
            )));
        }
        let g = crate::corpus::image_file::read_grey(path)?;
        let g = if self.ink {
            crate::corpus::image_file::ink_normalise(g)
        } else {
            g
        };
        Ok(crate::corpus::image_file::fit_grey(
            g,
            self.width,
            self.height,
            self.pad,
        ))
    }

    /// A query or enrolment image from its encoded bytes (PNG, PGM, JPEG), as
    /// [`Preprocess::load_file`] reads files, then inverted when `auto_invert` is on and the
    /// border is bright (dark-on-light digits for encoders trained on light-on-dark ones). A
    /// blank image (every pixel alike) is refused: it holds nothing to compare. `name` is what
    /// errors call the image.
    pub fn load_query_bytes(&self, bytes: &[u8], name: &Path) -> Result<Vec<u8>> {
        if let Some(fa) = self.photo_align() {
            let img = Self::decode_photo(bytes, name)?;
            return fa.one_face(&img, name, self.height, self.channels);
        }
        let g = crate::corpus::image_file::decode_grey(bytes, name)?;
        refuse_blank(g.as_raw(), g.width(), g.height(), name)?;
        let mut px = if let Some(fa) = &self.face_align {
            fa.chip_of(g, name, self.height)?
        } else {
            if self.channels != 1 {
                return Err(Error::InvalidArgument(format!(
                    "{}: only greyscale encoders read image files (this one has {} channels)",
                    name.display(),
                    self.channels
                )));
            }
            let g = if self.ink {
                crate::corpus::image_file::ink_normalise(g)
            } else {
                g
            };
            crate::corpus::image_file::fit_grey(g, self.width, self.height, self.pad)
        };
        if self.auto_invert {
            let (w, h) = (self.width, self.height);
            let border: f64 = (0..w)
                .flat_map(|x| [px[x], px[(h - 1) * w + x]])
                .chain((0..h).flat_map(|y| [px[y * w], px[y * w + w - 1]]))
                .map(|v| v as f64)
                .sum::<f64>()
                / (2 * (w + h)) as f64;
            if border > 127.0 {
                px.iter_mut().for_each(|v| *v = 255 - *v);
            }
        }
        Ok(px)
    }

    /// Whether this encoder finds faces in photos (a face detector is part of it): a query
    /// photo then has an answer for each face ([`Preprocess::photo_faces`]).
    pub fn detects_faces(&self) -> bool {
        self.photo_align().is_some()
    }

    /// The face alignment when it finds faces in photos (it carries a detector).
    fn photo_align(&self) -> Option<&FaceAlign> {
        self.face_align.as_ref().filter(|fa| fa.detector.is_some())
    }

    /// Every face of a photo (encoded bytes) with its chip, ready for
    /// [`ImageModel::embed_pixels`], best detection first; `None` when the encoder does not
    /// find faces ([`Preprocess::detects_faces`]).
    pub fn photo_faces(&self, bytes: &[u8], name: &Path) -> Result<Option<Vec<FaceChip>>> {
        match self.photo_align() {
            Some(fa) => {
                let img = Self::decode_photo(bytes, name)?;
                fa.photo_faces(&img, name, self.height, self.channels)
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    /// A photo decoded as RGB; a blank one (every value alike) is refused.
    fn decode_photo(bytes: &[u8], name: &Path) -> Result<image::RgbImage> {
        let img = crate::corpus::image_file::decode_rgb(bytes, name)?;
        refuse_blank(img.as_raw(), img.width(), img.height(), name)?;
        Ok(img)
    }

    /// [`Preprocess::load_query_bytes`] of a file.
    pub fn load_query_file(&self, path: &Path) -> Result<Vec<u8>> {
        self.load_query_bytes(&fsutil::read_regular(path)?, path)
    }

    /// Turn one image's 0..255 pixels into network input in `out` (same length).
    pub fn apply(&self, pixels: &[u8], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(pixels) {
            let v = if self.invert { 255 - x } else { x };
            *o = v as f32 * self.scale;
        }
        if self.standardize {
            standardize(out);
        }
    }
}

/// Subtract the mean and divide by the standard deviation (floored) of `v`, in place.
pub fn standardize(v: &mut [f32]) {
    let n = v.len().max(1) as f32;
    let mean = v.iter().sum::<f32>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    let inv = 1.0 / var.sqrt().max(1e-3);
    v.iter_mut().for_each(|x| *x = (*x - mean) * inv);
}

/// How the encoder was trained (for the record; not needed to run it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub corpus: String,
    pub loss: String,
    pub miner: String,
    pub margin: f32,
    pub epochs: usize,
    /// The epoch whose weights were kept (model selection on a dev split), if not the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_epoch: Option<usize>,
    pub batch: usize,
    pub lr: f64,
    /// Learning-rate multiplier applied after each epoch (1: none).
    #[serde(default = "one")]
    pub lr_decay: f64,
    /// Learning-rate schedule: `constant` (the default, and what older records mean) or
    /// `cosine`.
    #[serde(default = "constant")]
    pub schedule: String,
    /// Epochs of linear learning-rate warm-up from 0.
    #[serde(default)]
    pub warmup_epochs: usize,
    pub seed: u64,
    #[serde(default)]
    pub squared: bool,
    /// The command line that trained it (what `twindex train` was run with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default)]
    pub history: Vec<serde_json::Value>,
}

fn one() -> f64 {
    1.0
}

fn constant() -> String {
    "constant".into()
}

impl Default for TrainingRecord {
    fn default() -> Self {
        TrainingRecord {
            corpus: String::new(),
            loss: String::new(),
            miner: String::new(),
            margin: 0.0,
            epochs: 0,
            selected_epoch: None,
            batch: 0,
            lr: 0.0,
            lr_decay: one(),
            schedule: constant(),
            warmup_epochs: 0,
            seed: 0,
            squared: false,
            command: None,
            history: Vec::new(),
        }
    }
}

/// Everything needed to rebuild and use an image encoder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageModelConfig {
    /// Always [`IMAGE_FORMAT`].
    pub format: String,
    /// Bumped on incompatible changes.
    pub format_version: u32,
    pub arch: Arch,
    pub preprocess: Preprocess,
    /// Embedding dimension.
    pub dim: usize,
    /// Whether embeddings are L2-normalised.
    pub normalized: bool,
    /// The distance the encoder was trained for (`l2`).
    pub metric: crate::metric::Metric,
    /// Default duplicate threshold on that distance (`distance <= threshold` means duplicate).
    pub threshold: f32,
    /// Class names by label id, when known (MNIST: "0".."9").
    #[serde(default)]
    pub class_names: Vec<String>,
    /// How `threshold` was chosen and what it measured (an `eval::ThresholdReport` as JSON).
    #[serde(default)]
    pub calibration: Option<crate::calibration::EncoderCalibration>,
    #[serde(default)]
    pub training: TrainingRecord,
    /// Present when the encoder is an ensemble of towers ([`super::ensemble`]): then `arch` is
    /// its members' network, `dim` the sum of theirs, and the embeddings are unit length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleConfig>,
}

impl ImageModelConfig {
    /// The network as people read it: `cnn`, or `ensemble of 3 cnn` for an ensemble.
    pub fn arch_label(&self) -> String {
        match &self.ensemble {
            Some(e) => format!("ensemble of {} {}", e.members.len(), self.arch.name()),
            None => self.arch.name().to_string(),
        }
    }

    /// A config for `arch` on `h x w x c` images with the default preprocessing.
    pub fn new(arch: Arch, height: usize, width: usize, channels: usize) -> Self {
        ImageModelConfig {
            format: IMAGE_FORMAT.into(),
            format_version: 1,
            arch,
            preprocess: Preprocess {
                height,
                width,
                channels,
                scale: 1.0 / 255.0,
                invert: false,
                pad: 0,
                standardize: false,
                auto_invert: true,
                mirror_average: false,
                face_align: None,
                ink: false,
            },
            dim: arch.dim(),
            normalized: arch.normalized(),
            metric: crate::metric::Metric::L2,
            threshold: 0.5,
            class_names: Vec::new(),
            calibration: None,
            training: TrainingRecord::default(),
            ensemble: None,
        }
    }
}

/// A loaded (or freshly initialised) image encoder.
pub struct ImageModel {
    pub config: ImageModelConfig,
    pub encoder: ImageEncoder,
    /// The variables (present when built for training).
    pub varmap: Option<VarMap>,
    /// Where it was loaded from, if anywhere.
    pub dir: Option<PathBuf>,
}

impl ImageModel {
    /// A freshly initialised, trainable encoder; the initial weights depend only on `seed`.
    pub fn new_trainable(config: ImageModelConfig, seed: u64) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = super::seeded::seeded_var_builder(&varmap, seed);
        let p = &config.preprocess;
        let encoder = ImageEncoder::new(vb, config.arch, p.height, p.width, p.channels)?;
        Ok(ImageModel {
            config,
            encoder,
            varmap: Some(varmap),
            dir: None,
        })
    }

    /// Load `config.json` + `model.safetensors` from `dir`, checking format and weight shapes.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        if !cfg_path.exists() {
            return Err(Error::io(
                &cfg_path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model config here: expected a model directory made by `twindex train`",
                ),
            ));
        }
        // A sentence-transformers folder (a text model) where an image encoder is expected: say
        // so, rather than that its valid config.json lacks `format`.
        if dir.join("tokenizer.json").exists() || dir.join("modules.json").exists() {
            return Err(Error::format(
                &cfg_path,
                "a text model (sentence-transformers folder), not an image encoder: use it with --text, --pairs or a text index, or give an image encoder made by `twindex train image`",
            ));
        }
        let mut config: ImageModelConfig = fsutil::read_json(&cfg_path)?;
        if let Some(fa) = &mut config.preprocess.face_align {
            fa.model_dir = Some(dir.to_path_buf());
            let files = [
                (Some(&fa.landmarks), "landmark predictor"),
                (fa.detector.as_ref(), "face detector"),
            ];
            for (file, what) in files {
                let Some(file) = file else { continue };
                let p = dir.join(file);
                if !p.exists() {
                    return Err(Error::io(
                        &p,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("the encoder's {what} is missing from its directory"),
                        ),
                    ));
                }
            }
        }
        if config.format != IMAGE_FORMAT || config.format_version != 1 {
            return Err(Error::corrupt(
                &cfg_path,
                format!(
                    "format {:?} version {}: expected {IMAGE_FORMAT:?} version 1",
                    config.format, config.format_version
                ),
            ));
        }
        let wpath = dir.join(WEIGHTS_FILE);
        if config.arch == Arch::DlibResnet {
            let t = candle_core::safetensors::load(&wpath, &Device::Cpu).map_err(|e| {
                Error::corrupt(&wpath, format!("not a readable safetensors file: {e}"))
            })?;
            let net = DlibResNet::from_tensors(&t).map_err(|e| {
                Error::corrupt(
                    &wpath,
                    format!("weights do not fit a dlib-resnet network: {e}"),
                )
            })?;
            let p = &config.preprocess;
            if (p.height, p.width) != (net.side(), net.side())
                || !matches!(p.channels, 1 | 3)
                || config.dim != net.dim()
            {
                return Err(Error::corrupt(
                    &cfg_path,
                    format!(
                        "config says {}x{}x{} inputs and {} dimensions; the weights are for {s}x{s} chips (1 or 3 channels) and {}",
                        p.height, p.width, p.channels, config.dim, net.dim(), s = net.side()
                    ),
                ));
            }
            return Ok(ImageModel {
                config,
                encoder: ImageEncoder::dlib(net),
                varmap: None,
                dir: Some(dir.to_path_buf()),
            });
        }
        let bytes = std::fs::read(&wpath).map_err(|e| Error::io(&wpath, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
            .map_err(|e| Error::corrupt(&wpath, format!("not a readable safetensors file: {e}")))?;
        let p = &config.preprocess;
        if let Some(ens) = &config.ensemble {
            ens.validate()
                .map_err(|e| Error::corrupt(&cfg_path, format!("ensemble: {e}")))?;
            if config.dim != ens.dim() || !config.normalized {
                return Err(Error::corrupt(
                    &cfg_path,
                    format!(
                        "an ensemble's dim must be its members' sum ({}) and its embeddings normalised; the config says dim {}, normalized {}",
                        ens.dim(),
                        config.dim,
                        config.normalized
                    ),
                ));
            }
            let e = Ensemble::new(vb, ens, p.height, p.width, p.channels).map_err(|e| {
                Error::corrupt(&wpath, format!("weights do not fit the ensemble: {e}"))
            })?;
            return Ok(ImageModel {
                encoder: ImageEncoder::ensemble(ens.members[0].arch, e),
                config,
                varmap: None,
                dir: Some(dir.to_path_buf()),
            });
        }
        let encoder =
            ImageEncoder::new(vb, config.arch, p.height, p.width, p.channels).map_err(|e| {
                Error::corrupt(
                    &wpath,
                    format!("weights do not fit a {} network: {e}", config.arch.name()),
                )
            })?;
        Ok(ImageModel {
            config,
            encoder,
            varmap: None,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// One encoder of `members` (trainable models of the same preprocessing; their weights
    /// are shared, not copied), embedding as [`super::ensemble`] describes with these `weights`
    /// (one per member, positive). Each member's threshold and training record are kept in the
    /// config, with `classes[i]`, the classes member `i` was trained on when not all. The
    /// ensemble's own threshold starts at the members' weighted mean: calibrate it.
    pub fn ensemble_of(
        members: &[&ImageModel],
        by: EnsembleBy,
        weights: &[f32],
        classes: Vec<Vec<String>>,
    ) -> Result<ImageModel> {
        let first = members.first().ok_or_else(|| {
            Error::InvalidArgument("an ensemble needs at least one member".into())
        })?;
        if weights.len() != members.len() || classes.len() != members.len() {
            return Err(Error::InvalidArgument(format!(
                "{} members but {} weights and {} class lists",
                members.len(),
                weights.len(),
                classes.len()
            )));
        }
        let mut config = first.config.clone();
        let varmap = VarMap::new();
        let mut specs = Vec::with_capacity(members.len());
        for (i, (m, cls)) in members.iter().zip(classes).enumerate() {
            if m.config.preprocess != config.preprocess {
                return Err(Error::InvalidArgument(format!(
                    "member {i} reads its input differently from member 0 (preprocessing {:?} vs {:?})",
                    m.config.preprocess, config.preprocess
                )));
            }
            if m.config.ensemble.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "member {i} is itself an ensemble"
                )));
            }
            let vm = m.varmap.as_ref().ok_or_else(|| {
                Error::InvalidArgument(format!("member {i} has no trainable weights to save"))
            })?;
            let mut data = varmap.data().lock().expect("varmap");
            for (name, var) in vm.data().lock().expect("varmap").iter() {
                data.insert(format!("{}.{name}", EnsembleConfig::prefix(i)), var.clone());
            }
            specs.push(MemberConfig {
                arch: m.config.arch,
                dim: m.config.dim,
                weight: weights[i],
                threshold: m.config.threshold,
                classes: cls,
                training: m.config.training.clone(),
            });
        }
        let ens = EnsembleConfig { by, members: specs };
        ens.validate().map_err(Error::InvalidArgument)?;
        let e =
            Ensemble::from_members(members.iter().map(|m| m.encoder.clone()).collect(), weights);
        let wsum: f32 = weights.iter().sum();
        config.threshold = members
            .iter()
            .zip(weights)
            .map(|(m, w)| m.config.threshold * w)
            .sum::<f32>()
            / wsum;
        config.dim = ens.dim();
        config.normalized = true;
        config.calibration = None;
        config.ensemble = Some(ens);
        Ok(ImageModel {
            encoder: ImageEncoder::ensemble(first.config.arch, e),
            config,
            varmap: Some(varmap),
            dir: None,
        })
    }

    /// Member `i` of an ensemble as an encoder of its own (its network, dimension and
    /// threshold; the ensemble's preprocessing), e.g. to compare it with the ensemble.
    pub fn member(&self, i: usize) -> Result<ImageModel> {
        let (Some(ens), Some(net)) = (&self.config.ensemble, self.encoder.as_ensemble()) else {
            return Err(Error::InvalidArgument(
                "this encoder is not an ensemble: it has no members".into(),
            ));
        };
        let (Some(spec), Some(enc)) = (ens.members.get(i), net.member(i)) else {
            return Err(Error::InvalidArgument(format!(
                "member {i}: the ensemble has {} members (0..{})",
                ens.members.len(),
                ens.members.len().saturating_sub(1)
            )));
        };
        let varmap = self.varmap.as_ref().map(|vm| {
            let out = VarMap::new();
            let prefix = format!("{}.", EnsembleConfig::prefix(i));
            let mut data = out.data().lock().expect("varmap");
            for (name, var) in vm.data().lock().expect("varmap").iter() {
                if let Some(rest) = name.strip_prefix(&prefix) {
                    data.insert(rest.to_string(), var.clone());
                }
            }
            drop(data);
            out
        });
        let mut config = self.config.clone();
        config.arch = spec.arch;
        config.dim = spec.dim;
        config.normalized = spec.arch.normalized();
        config.threshold = spec.threshold;
        config.calibration = None;
        config.training = spec.training.clone();
        config.ensemble = None;
        Ok(ImageModel {
            config,
            encoder: enc.clone(),
            varmap,
            dir: None,
        })
    }

    /// Save config and weights into `dir` (created if needed), each file written atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        super::encoder_dir::save_weights(self.varmap.as_ref(), dir)?;
        // A face-aligning encoder carries its landmark predictor.
        if let Some(fa) = &self.config.preprocess.face_align {
            let src = fa
                .model_dir
                .as_ref()
                .map(|d| d.join(&fa.landmarks))
                .ok_or_else(|| Error::Msg("face alignment without a landmark file".into()))?;
            let dst = dir.join(&fa.landmarks);
            if src != dst {
                let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
                fsutil::atomic_write(&dst, &bytes)?;
            }
        }
        super::encoder_dir::save_config(&self.config, dir)
    }

    /// Embed a batch of preprocessed inputs `[B, H, W, C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.encoder.forward(x)?)
    }

    /// [`ImageModel::forward`] for training (`train`: batch normalisation on the batch's
    /// statistics, updating the running ones; see [`ImageEncoder::forward_t`]).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.encoder.forward_t(x, train)?)
    }

    /// Turn raw 0..255 pixels of `n` images (each `H*W*C`, already at the model's size) into
    /// the network's input tensor.
    pub fn input_tensor(&self, pixels: &[u8], n: usize) -> Result<Tensor> {
        let p = &self.config.preprocess;
        let per = p.height * p.width * p.channels;
        if pixels.len() != n * per {
            return Err(Error::dim(n * per, pixels.len(), "image pixels"));
        }
        let mut v = vec![0f32; pixels.len()];
        if per > 0 {
            for (o, px) in v.chunks_mut(per).zip(pixels.chunks(per)) {
                p.apply(px, o);
            }
        }
        Ok(Tensor::from_vec(
            v,
            (n, p.height, p.width, p.channels),
            &Device::Cpu,
        )?)
    }

    /// Embed `n` images of raw pixels, `batch` at a time; returns `n * dim` floats.
    pub fn embed_pixels(&self, pixels: &[u8], n: usize, batch: usize) -> Result<Vec<f32>> {
        let p = &self.config.preprocess;
        let per = p.height * p.width * p.channels;
        if pixels.len() != n * per {
            return Err(Error::Shape(format!(
                "{n} images of the encoder's input size {}x{}x{} are {} values, got {}: the \
                 images are another size than the encoder expects (preprocess them to {}x{})",
                p.height,
                p.width,
                p.channels,
                n * per,
                pixels.len(),
                p.height,
                p.width
            )));
        }
        let mut out = Vec::with_capacity(n * self.config.dim);
        // The face ResNet's first convolution unfolds 150x150 chips into 3 MB of patches each
        // (candle's im2col): small batches keep that in cache and the memory bounded.
        let batch = if self.config.arch == Arch::DlibResnet {
            batch.clamp(1, 8)
        } else {
            batch.max(1)
        };
        let mut i = 0;
        while i < n {
            let m = batch.min(n - i);
            let x = self.input_tensor(&pixels[i * per..(i + m) * per], m)?;
            let e = self.forward(&x)?;
            let mut v = e.flatten_all()?.to_vec1::<f32>()?;
            if p.mirror_average {
                let em = self.forward(&x.flip(&[2])?.contiguous()?)?;
                let vm = em.flatten_all()?.to_vec1::<f32>()?;
                v.iter_mut().zip(&vm).for_each(|(a, b)| *a = 0.5 * (*a + b));
                if self.config.normalized {
                    for row in v.chunks_mut(self.config.dim) {
                        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                        row.iter_mut().for_each(|x| *x /= n);
                    }
                }
            }
            out.extend(v);
            i += m;
        }
        Ok(out)
    }

    /// The files that make up the encoder in `dir`: config, weights and, for a face-aligning
    /// encoder, its landmark predictor.
    pub fn files(dir: &Path) -> Result<Vec<String>> {
        let mut v = vec![CONFIG_FILE.to_string(), WEIGHTS_FILE.to_string()];
        let cfg_path = dir.join(CONFIG_FILE);
        let config: ImageModelConfig = fsutil::read_json(&cfg_path)?;
        if let Some(fa) = config.preprocess.face_align {
            for (what, f) in std::iter::once(("landmarks", fa.landmarks))
                .chain(fa.detector.map(|d| ("detector", d)))
            {
                if f.contains('/') || f.contains("..") {
                    return Err(Error::corrupt(
                        &cfg_path,
                        format!("{what} file {f:?} must be a plain file name"),
                    ));
                }
                v.push(f);
            }
        }
        Ok(v)
    }

    /// sha256 over the encoder's files: names this exact encoder in index manifests.
    pub fn content_hash(dir: &Path) -> Result<String> {
        let mut h = Sha256::new();
        for f in Self::files(dir)? {
            let p = dir.join(f);
            let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            h.update(&b);
        }
        Ok(format!("{:x}", h.finalize()))
    }
}
