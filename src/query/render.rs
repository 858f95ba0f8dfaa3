//! How answers and figures read for a person: the neighbour table of a query (`query`, `demo`)
//! and an index's figures (`index stats`). The CLI prints these strings; JSON is the types'
//! own serialisation.

use super::searcher::{Answer, FaceAnswer, FaceVerification, QueryHit, Reply, Stats};
use std::fmt::Write;

/// A readable table of `hits` for the query `what`, decided at `thr` (none: no decision).
pub fn hits_table(what: &str, thr: Option<f32>, hits: &[QueryHit]) -> String {
    let mut out = match thr {
        Some(t) => format!(
            "query {what}: {} neighbours (duplicate if distance <= {t:.4})\n",
            hits.len()
        ),
        None => format!(
            "query {what}: {} neighbours (no threshold calibrated: no duplicate decision; run `twindex calibrate` or pass --threshold)\n",
            hits.len()
        ),
    };
    out += &format!(
        "{:>4}  {:>8}  {:<8}  {:>9}  {:>10}  {:<9}  source",
        "rank", "id", "label", "distance", "similarity", "duplicate"
    );
    for (r, h) in hits.iter().enumerate() {
        let dup = match (thr, h.duplicate) {
            (None, _) => "-",
            (_, true) => "yes",
            (_, false) => "no",
        };
        let _ = write!(
            out,
            "\n{:>4}  {:>8}  {:<8}  {:>9.4}  {:>10.4}  {:<9}  {}",
            r + 1,
            h.id,
            h.label,
            h.distance,
            h.similarity,
            dup,
            super::shorten(&h.source, 120)
        );
    }
    out
}

impl Answer {
    /// The JSON of `query --json` for this answer to `what`.
    pub fn to_json(&self, what: &str) -> serde_json::Value {
        let mut j = serde_json::json!({
            "query": what,
            "threshold": self.threshold,
            "results": self.results,
        });
        if let Some(id) = &self.identity {
            j["identity"] = serde_json::json!(id);
        }
        if self.threshold.is_none() {
            j["note"] = "no threshold calibrated: no neighbour is called a duplicate".into();
        }
        j
    }

    /// The neighbour table of this answer to `what`, and the identity when there is one.
    pub fn table(&self, what: &str) -> String {
        let mut t = hits_table(what, self.threshold, &self.results);
        if let Some(id) = &self.identity {
            t += &format!("\nidentity: {id}");
        }
        t
    }
}

/// The `query --json` of a photo with one answer per face: `faces` (each its `box`, `score`,
/// `threshold`, `results` and `identity`), and `results` / `identity` of the first face (the
/// best detection) for readers of one answer; with no face, empty `results` and a `note`.
pub fn faces_json(what: &str, faces: &[FaceAnswer]) -> serde_json::Value {
    let mut j = serde_json::json!({ "query": what, "faces": faces });
    match faces.first() {
        Some(f) => {
            j["threshold"] = serde_json::json!(f.answer.threshold);
            j["results"] = serde_json::json!(f.answer.results);
            if let Some(id) = &f.answer.identity {
                j["identity"] = serde_json::json!(id);
            }
        }
        None => {
            j["results"] = serde_json::json!([]);
            j["note"] = "no face found in the photo".into();
        }
    }
    j
}

impl Reply {
    /// The JSON of `query --json` (and the server's query answer) for this reply to `what`.
    pub fn to_json(&self, what: &str) -> serde_json::Value {
        match self {
            Reply::One(a) => a.to_json(what),
            Reply::Faces(f) => faces_json(what, f),
        }
    }

    /// The table `query` prints for this reply to `what`.
    pub fn table(&self, what: &str) -> String {
        match self {
            Reply::One(a) => a.table(what),
            Reply::Faces(f) => faces_table(what, f),
        }
    }
}

/// The neighbour table of each face of a photo, the box and score above each.
pub fn faces_table(what: &str, faces: &[FaceAnswer]) -> String {
    if faces.is_empty() {
        return format!("query {what}: no face found");
    }
    let mut out = format!("query {what}: {} face(s)", faces.len());
    for (i, f) in faces.iter().enumerate() {
        let _ = write!(
            out,
            "\nface {} at {}\n{}",
            i + 1,
            f.face,
            f.answer.table(&format!("{what} face {}", i + 1))
        );
    }
    out
}

/// The JSON of a claim checked on each face of a photo (`verify --json`, the server's
/// `/verify`): `label`, `accepted` (by any face), `decision` and the `faces`.
pub fn face_verdicts_json(label: &str, faces: &[FaceVerification]) -> serde_json::Value {
    let accepted = faces.iter().any(|f| f.verification.accepted);
    serde_json::json!({
        "label": label,
        "accepted": accepted,
        "decision": if accepted { "accept" } else { "reject" },
        "faces": faces,
    })
}

/// `verify`'s line for each face of a photo (a line saying none was found when none was).
pub fn face_verdicts(file: &str, faces: &[FaceVerification]) -> String {
    if faces.is_empty() {
        return format!("{file}: no face found: REJECTED");
    }
    let lines: Vec<String> = faces
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "{file} face {} at {}: {}",
                i + 1,
                f.face,
                f.verification.verdict()
            )
        })
        .collect();
    lines.join("\n")
}

impl Stats {
    /// `index stats` for a person, one figure a line; `labels`: distinct labels.
    pub fn summary(&self, labels: usize) -> String {
        let mut s = format!("index      {}\n", self.dir);
        s += &format!("items      {} ({} slots)\n", self.items, self.slots);
        s += &format!(
            "vectors    {} dims, {}, {}\n",
            self.dim, self.metric, self.backend
        );
        if let Some(r) = self.rerank {
            s += &format!(
                "quantized  {} (the walk), best {r} re-scored on the f32 vectors\n",
                self.quantize
            );
        }
        s += &format!("encoder    {}\n", self.encoder);
        s += &match self.threshold {
            Some(t) => format!("threshold  distance <= {t:.4}\n"),
            None => "threshold  none calibrated\n".to_string(),
        };
        s += &format!("labels     {labels}\n");
        s + &format!(
            "log        {} write(s), {} bytes (generation {})",
            self.log_records, self.log_bytes, self.generation
        )
    }
}
