//! Image-folder corpora (faces, signatures) for `train image` and `eval`: preprocessing from
//! the command line, dev-class hold-out, the ORL and signature protocols.

use super::common;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use twindex::eval::protocol::{self, Aggregate, Scored};
use twindex::model::Preprocess;
use twindex::train::Progress;

/// The evaluation protocols of image folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// ORL/AT&T faces: 4 subject-disjoint folds, one-shot identification of unseen people.
    Orl,
    /// SVC2004 signatures: train on writers 1-20, calibrate and test on 21-30 (5 references,
    /// genuine vs skilled forgeries).
    Signatures,
    /// SVC2004 online signatures (pen trajectories): `train sequence` and `eval` with
    /// `--test-writers` (default 21-30) and `--scorer twin|dtw|fusion`.
    #[value(name = "signatures-online")]
    SignaturesOnline,
}

/// How image files become network input (image-folder corpora).
#[derive(Debug, Clone, Args)]
pub struct FolderArgs {
    /// Input size HxW for image folders (images are resized keeping their aspect ratio and
    /// padded). Default: 56x46 for ORL-like faces, 64x128 with --protocol signatures.
    #[arg(long)]
    pub size: Option<String>,
    /// Column of labels.tsv holding the class (image folders with a labels.tsv).
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Dark-on-light images (ink on paper): invert so the background is 0.
    #[arg(long)]
    pub invert: bool,
    /// Background value 0..255 used to pad resized images (default 255 with --invert, else 0).
    #[arg(long)]
    pub pad: Option<u8>,
    /// Standardise each image (zero mean, unit variance): evens out lighting.
    #[arg(long)]
    pub standardize: bool,
    /// Embed each image and its mirror image and average them (faces; not signatures).
    #[arg(long)]
    pub mirror_average: bool,
    /// Align faces as the face-aligning encoder in DIR does (e.g. one made by `twindex import
    /// dlib-face`): its landmark predictor, face box and template; the input becomes the
    /// aligned HxH chip (--size must be square). The landmark file is copied into the model.
    #[arg(long, value_name = "DIR")]
    pub align_faces: Option<PathBuf>,
    /// `--protocol orl`: only these folds (0-3, comma-separated), for quick trials; the
    /// protocol's figures need all four.
    #[arg(long, value_delimiter = ',')]
    pub folds: Vec<usize>,
    #[command(flatten)]
    pub signatures: twindex::eval::signatures::SignatureArgs,
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .with_context(|| format!("--size {s:?}: expected HxW, e.g. 56x46"))?;
    Ok((
        h.trim()
            .parse()
            .with_context(|| format!("--size {s:?}: bad height"))?,
        w.trim()
            .parse()
            .with_context(|| format!("--size {s:?}: bad width"))?,
    ))
}

/// The preprocessing for a folder corpus.
pub fn folder_preprocess(a: &FolderArgs, protocol: Option<Protocol>) -> Result<Preprocess> {
    let opts = protocol::FolderOptions {
        size: a.size.as_deref().map(parse_size).transpose()?,
        invert: a.invert,
        pad: a.pad,
        standardize: a.standardize,
        mirror_average: a.mirror_average,
        align_faces: a.align_faces.clone(),
    };
    let sigs = protocol == Some(Protocol::Signatures);
    Ok(protocol::folder_preprocess(&opts, sigs)?)
}

/// This process's command line, program name as `twindex` (for the training record).
pub fn command_line() -> String {
    std::iter::once("twindex".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints a run's progress on stderr: lines as they come (clearing the bar), one progress bar
/// per label, quiet lines only where no bar shows (stderr not a terminal).
pub fn progress() -> impl Fn(Progress) + Sync {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar: Mutex<Option<(String, indicatif::ProgressBar)>> = Mutex::new(None);
    move |p| {
        let mut cur = bar.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Progress::Line(s) => {
                if let Some((_, b)) = cur.take() {
                    b.finish_and_clear();
                }
                eprintln!("{s}");
            }
            Progress::Quiet(s) if !tty => eprintln!("{s}"),
            Progress::Quiet(_) => {}
            Progress::Bar {
                label,
                len,
                pos,
                prefix,
            } => {
                let b = match cur.take() {
                    Some((l, b)) if l == label => b,
                    _ => common::bar(len, &label),
                };
                b.set_position(pos);
                if let Some(x) = prefix {
                    b.set_prefix(x);
                }
                *cur = Some((label, b));
            }
        }
    }
}

/// `twindex eval --protocol P`: with `model` (a trained encoder; for ORL a folder of
/// `fold-0..fold-3` encoders) or, with `raw`, raw pixels at `fa`'s size as the baseline.
pub fn eval_protocol(
    p: Protocol,
    corpus: &str,
    model: Option<&Path>,
    raw: bool,
    fa: &FolderArgs,
    agg: Aggregate,
    test_writers: &[usize],
) -> Result<serde_json::Value> {
    if p == Protocol::SignaturesOnline {
        bail!(
            "--protocol signatures-online is evaluated by the online scorers, not an image encoder"
        )
    }
    let with = if raw {
        Scored::RawPixels(folder_preprocess(fa, Some(p))?)
    } else {
        let name = if p == Protocol::Orl {
            "orl"
        } else {
            "signatures"
        };
        Scored::Encoder(
            model.with_context(|| format!("--protocol {name} needs --model DIR (or --raw)"))?,
        )
    };
    let (corpus, on) = (Path::new(corpus), progress());
    Ok(match p {
        Protocol::Orl => serde_json::to_value(protocol::evaluate_orl(
            corpus,
            &fa.label_column,
            &fa.folds,
            &with,
            fa.mirror_average,
            &on,
        )?)?,
        _ => {
            let (train_writers, dev_writers) = fa.signatures.eval_writers()?;
            let run = twindex::eval::signatures::SignatureEvalRun {
                corpus,
                with: &with,
                aggregate: agg,
                test_writers: test_writers.to_vec(),
                dev_writers,
                train_writers,
            };
            serde_json::to_value(twindex::eval::signatures::evaluate_signature_corpus(
                &run, &on,
            )?)?
        }
    })
}

/// The shipped encoder for a protocol, if present.
/// For ORL that is dlib's pretrained face descriptor where it has been imported into
/// `corpora/encoders/dlib-face` (`twindex import dlib-face --out corpora/encoders/dlib-face`),
/// else the shipped fold encoders trained here.
pub fn default_protocol_model(p: Protocol) -> Option<PathBuf> {
    let dlib = common::repo_root().join("corpora/encoders/dlib-face");
    if p == Protocol::Orl && dlib.join(twindex::model::image::CONFIG_FILE).exists() {
        return Some(dlib);
    }
    let d = common::repo_root().join(match p {
        Protocol::Orl => "corpora/encoders/orl-faces",
        Protocol::Signatures => "corpora/encoders/signatures",
        Protocol::SignaturesOnline => "corpora/encoders/signatures-online",
    });
    d.exists().then_some(d)
}

/// The corpus a protocol reads by default.
pub fn default_protocol_corpus(p: Protocol) -> PathBuf {
    let root = common::repo_root();
    match p {
        Protocol::Orl => {
            let local = root.join("corpora/orl-faces");
            if local.exists() {
                local
            } else {
                root.join("../shared/corpora/orl-faces")
            }
        }
        Protocol::Signatures => root.join("../shared/corpora/signatures-svc2004"),
        Protocol::SignaturesOnline => super::pen_signatures::default_corpus(),
    }
}
