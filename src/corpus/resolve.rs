//! Names users give for corpora and shipped encoders, resolved to paths: `mnist` (the shipped
//! `corpora/mnist`), a folder of IDX files, or a folder of images; the shipped default encoders.

use super::idx::{load_idx_corpus, IdxCorpusPaths, TrainTest};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The repository root: the build-time manifest dir when it still exists, else the cwd.
pub fn repo_root() -> PathBuf {
    let m = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if m.join("corpora").exists() {
        m
    } else {
        PathBuf::from(".")
    }
}

/// Resolve a corpus name: `mnist` means the shipped `corpora/mnist` (falling back to
/// `../shared/corpora/mnist`); anything else is a folder path, which must exist.
pub fn corpus_dir(name: &str) -> Result<PathBuf> {
    if name == "mnist" {
        for cand in [
            repo_root().join("corpora/mnist"),
            PathBuf::from("corpora/mnist"),
            repo_root().join("../shared/corpora/mnist"),
        ] {
            if cand.join("train-labels-idx1-ubyte.gz").exists() {
                return Ok(cand);
            }
        }
        return Err(Error::Msg(
            "corpus `mnist`: corpora/mnist not found (expected the shipped copy beside Cargo.toml)"
                .into(),
        ));
    }
    let p = PathBuf::from(name);
    if !p.exists() {
        return Err(Error::Msg(format!(
            "corpus {name}: no such folder (expected `mnist` or a folder of IDX files)"
        )));
    }
    Ok(p)
}

/// Load an MNIST-style (IDX train + t10k) corpus by name; returns its folder and the data.
pub fn load_corpus(name: &str) -> Result<(PathBuf, TrainTest)> {
    let dir = corpus_dir(name)?;
    let data = load_idx_corpus(&dir)
        .map_err(|e| Error::Msg(format!("loading corpus {}: {e}", dir.display())))?;
    Ok((dir, data))
}

/// Whether `corpus` names a folder of images (a folder without IDX files), not an IDX corpus.
pub fn is_image_folder(corpus: &str) -> bool {
    let p = Path::new(corpus);
    if corpus == "mnist" || !p.is_dir() {
        return false;
    }
    let idx = std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("idx"))
        })
        .unwrap_or(false);
    !idx
}

/// The training images file of an IDX corpus folder (what item sources name), relative to
/// the working directory when inside it: shorter, and stable across clones.
pub fn images_file(dir: &Path) -> PathBuf {
    let p = IdxCorpusPaths::in_dir(dir)
        .map(|p| p.train_images)
        .unwrap_or_else(|_| dir.to_path_buf());
    shown(&p)
}

/// `p` as shown to a user: relative to the working directory when inside it (shorter, and the
/// same on every clone), else as it is.
pub fn shown(p: &Path) -> PathBuf {
    match std::env::current_dir() {
        Ok(cwd) => p
            .strip_prefix(&cwd)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.to_path_buf()),
        Err(_) => p.to_path_buf(),
    }
}

/// The shipped default image encoder (`corpora/encoders/mnist-cnn`).
pub fn default_image_model() -> Result<PathBuf> {
    let p = repo_root().join("corpora/encoders/mnist-cnn");
    if !p.join("config.json").exists() {
        return Err(Error::Msg(format!(
            "the shipped encoder {} is missing: pass --model DIR (a directory made by `twindex train`)",
            p.display()
        )));
    }
    Ok(p)
}

/// The default text model: all-MiniLM-L6-v2 in ../shared.
pub fn default_text_model() -> Result<PathBuf> {
    let p = repo_root().join("../shared/models/all-MiniLM-L6-v2");
    if !p.join("config.json").exists() {
        return Err(Error::Msg(format!(
            "no text model given and {} is absent: pass --model DIR (a sentence-transformers folder)",
            p.display()
        )));
    }
    Ok(p)
}

/// The evaluation protocols of `train image`, `train sequence` and `eval --protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

impl Protocol {
    /// The corpus the protocol reads by default (ORL: the shipped copy when present).
    pub fn default_corpus(self) -> PathBuf {
        let root = repo_root();
        match self {
            Protocol::Orl if root.join("corpora/orl-faces").exists() => {
                root.join("corpora/orl-faces")
            }
            Protocol::Orl => root.join("../shared/corpora/orl-faces"),
            Protocol::Signatures => root.join("../shared/corpora/signatures-svc2004"),
            Protocol::SignaturesOnline => root.join("../shared/corpora/signatures-svc2004-online"),
        }
    }

    /// The shipped encoder of the protocol, if present. For ORL that is dlib's pretrained face
    /// descriptor where it has been imported into `corpora/encoders/dlib-face` (`twindex import
    /// dlib-face --out corpora/encoders/dlib-face`), else the fold encoders trained here.
    pub fn default_model(self) -> Option<PathBuf> {
        let root = repo_root();
        let dlib = root.join("corpora/encoders/dlib-face");
        if self == Protocol::Orl && dlib.join("config.json").exists() {
            return Some(dlib);
        }
        let d = root.join(match self {
            Protocol::Orl => "corpora/encoders/orl-faces",
            Protocol::Signatures => "corpora/encoders/signatures",
            Protocol::SignaturesOnline => "corpora/encoders/signatures-online",
        });
        // ORL's shipped encoders are a folder of fold-F encoders, so its folder is enough.
        let ok = match self {
            Protocol::SignaturesOnline => d.join("config.json").exists(),
            _ => d.exists(),
        };
        ok.then_some(d)
    }

    /// `corpus` as given, or the protocol's default when the user left the `mnist` default.
    pub fn corpus_or_default(self, corpus: &str) -> PathBuf {
        match corpus {
            "mnist" => self.default_corpus(),
            c => PathBuf::from(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_is_named_and_mnist_is_not_an_image_folder() {
        let e = corpus_dir("/no/such/corpus").unwrap_err().to_string();
        assert_eq!(
            e,
            "corpus /no/such/corpus: no such folder (expected `mnist` or a folder of IDX files)"
        );
        assert!(!is_image_folder("mnist"));
        assert!(!is_image_folder("/no/such/corpus"));
        let tmp = std::env::temp_dir().join(format!("twindex-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        assert!(is_image_folder(tmp.to_str().unwrap()));
        std::fs::write(tmp.join("train-images-idx3-ubyte"), b"").unwrap();
        assert!(!is_image_folder(tmp.to_str().unwrap()));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
