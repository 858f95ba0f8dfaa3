//! The attendance desk: a roll (an index of people enrolled with one photo each, made with a
//! face-finding encoder) and frames from a camera in; out: who was seen (each person once, with
//! the frames and the best distance), who was not, and the faces nobody on the roll matches.
//! Each face's identity is its nearest enrolled person when within the threshold, as `query`
//! decides it.

use super::searcher::{FaceBox, Query, SearchOptions, Searcher};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A person on the roll who was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub label: String,
    /// The frames the person was seen in, in frame order.
    pub frames: Vec<String>,
    /// The smallest distance of the person's faces to the enrolment.
    pub best_distance: f32,
    /// The frame of that best match.
    pub best_frame: String,
}

/// A face that matches nobody on the roll.
#[derive(Debug, Clone, Serialize)]
pub struct Unknown {
    pub frame: String,
    #[serde(flatten)]
    pub face: FaceBox,
    /// The nearest enrolled person and the distance, for a person to judge.
    pub nearest: Option<String>,
    pub nearest_distance: Option<f32>,
}

/// The run's outcome (`attendance --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Attendance {
    /// People on the roll (distinct labels).
    pub roll: usize,
    pub frames: usize,
    /// Faces found in all frames.
    pub faces: usize,
    /// The identity threshold (a distance).
    pub threshold: f32,
    /// Who was seen, in roll order (label order).
    pub seen: Vec<Seen>,
    /// Who was not, in label order.
    pub absent: Vec<String>,
    /// Faces no enrolled person is within the threshold of, in frame order.
    pub unknown: Vec<Unknown>,
}

/// The image files of a frames folder (PNG, JPEG, PGM/PNM; not its sub-folders), by name.
pub fn frame_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        let ext = p
            .extension()
            .and_then(|x| x.to_str())
            .map(str::to_ascii_lowercase);
        if p.is_file()
            && matches!(
                ext.as_deref(),
                Some("png" | "jpg" | "jpeg" | "pgm" | "pnm" | "ppm")
            )
        {
            v.push(p);
        }
    }
    v.sort();
    if v.is_empty() {
        return Err(Error::Empty(format!(
            "{}: no frames here (PNG, JPEG or PGM files)",
            dir.display()
        )));
    }
    Ok(v)
}

/// Take attendance over `frames` against the roll `s` (an index with a face-finding encoder),
/// deciding at `threshold` (default: the roll's calibrated one). `progress` is told of each
/// frame done.
pub fn take_attendance(
    s: &Searcher,
    frames: &[PathBuf],
    threshold: Option<f32>,
    progress: &dyn Fn(usize),
) -> Result<Attendance> {
    if !s.detects_faces() {
        return Err(Error::InvalidArgument(format!(
            "{}: its encoder does not find faces in photos; enrol the roll with an encoder made by `twindex import dlib-face --detect`",
            s.dir().display()
        )));
    }
    let threshold = threshold.or_else(|| s.threshold()).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: no calibrated threshold; pass --threshold or run `twindex calibrate`",
            s.dir().display()
        ))
    })?;
    s.metric().check_threshold(threshold)?;
    let roll = s.labels()?;
    let opts = SearchOptions {
        k: 1,
        threshold: Some(threshold),
        ..Default::default()
    };
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut faces = 0;
    for (i, f) in frames.iter().enumerate() {
        let name = f.display().to_string();
        let found = s
            .query_faces(&Query::Image(&name), &opts)?
            .unwrap_or_default();
        faces += found.len();
        for fa in found {
            let hit = fa.answer.results.first();
            match super::verify::identified(&fa.answer.results) {
                Some(h) => {
                    let e = seen.entry(h.label.clone()).or_insert_with(|| Seen {
                        label: h.label.clone(),
                        frames: Vec::new(),
                        best_distance: f32::INFINITY,
                        best_frame: String::new(),
                    });
                    if e.frames.last() != Some(&name) {
                        e.frames.push(name.clone());
                    }
                    if h.distance < e.best_distance {
                        e.best_distance = h.distance;
                        e.best_frame = name.clone();
                    }
                }
                None => unknown.push(Unknown {
                    frame: name.clone(),
                    face: fa.face,
                    nearest: hit.map(|h| h.label.clone()),
                    nearest_distance: hit.map(|h| h.distance),
                }),
            }
        }
        progress(i + 1);
    }
    let absent = roll
        .iter()
        .filter(|l| !seen.contains_key(*l))
        .cloned()
        .collect();
    Ok(Attendance {
        roll: roll.len(),
        frames: frames.len(),
        faces,
        threshold,
        seen: seen.into_values().collect(),
        absent,
        unknown,
    })
}

impl Attendance {
    /// The run as a person reads it: who was seen (with frames and best distance), who was
    /// not, and the unknown faces.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "{} frame(s), {} face(s); {} of {} on the roll seen, {} unknown face(s) (same person if distance <= {:.4})\n",
            self.frames,
            self.faces,
            self.seen.len(),
            self.roll,
            self.unknown.len(),
            self.threshold
        );
        out += &format!("{:<16}  {:>9}  {:>6}  frames", "seen", "best", "count");
        for p in &self.seen {
            let _ = write!(
                out,
                "\n{:<16}  {:>9.4}  {:>6}  {}",
                p.label,
                p.best_distance,
                p.frames.len(),
                super::shorten(&p.frames.join(", "), 160)
            );
        }
        let _ = write!(
            out,
            "\nabsent: {}",
            if self.absent.is_empty() {
                "nobody".to_string()
            } else {
                self.absent.join(", ")
            }
        );
        for u in &self.unknown {
            let _ = write!(out, "\nunknown face in {} at {}", u.frame, u.face);
            if let (Some(n), Some(d)) = (&u.nearest, u.nearest_distance) {
                let _ = write!(out, " (nearest {n} at {d:.4})");
            }
        }
        out
    }
}
