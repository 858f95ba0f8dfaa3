//! Hard negatives mined from an index (what sentence-transformers' `mine_hard_negatives` does
//! with a throw-away search, done by the index the user already has): for each duplicate
//! (anchor, positive) pair of a pairs file, the index's nearest items to the anchor at ranks
//! `A..B` are the candidates; known positives (the anchor and every text of its duplicate group
//! in the pairs file, the positive included) and candidates too close to be safe negatives
//! (above an absolute or relative margin of the positive's similarity: NV-Retriever's "95%"
//! rule is a relative margin of 0.05) are dropped; the nearest survivors become the row's
//! negatives. Rows are written as the (anchor, positive, negative_1, ...) TSV that
//! `train text --loss mnrl` reads ([`crate::corpus::pairs::read_pairs_tsv`]). The index's items
//! must carry their texts as sources (built with `--text`, without `--id-column`).

use crate::corpus::pairs::{duplicate_groups, TextPair};
use crate::error::{Error, Result};
use crate::timing::Stopwatch;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::searcher::{Encoder, Query, SearchOptions, Searcher};

/// Candidate ranks `first..=last` (1-based; the anchor itself, when indexed, is not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ranks {
    pub first: usize,
    pub last: usize,
}

impl std::str::FromStr for Ranks {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("ranks {s:?}: expected A..B with 1 <= A <= B (e.g. 1..30)");
        let (a, b) = s.split_once("..").ok_or_else(bad)?;
        let (first, last) = (
            a.trim().parse::<usize>().map_err(|_| bad())?,
            b.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if first == 0 || first > last || last > 10_000 {
            return Err(bad());
        }
        Ok(Ranks { first, last })
    }
}

/// How negatives are chosen. Also the flags of `twindex mine-negatives`.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct MineOptions {
    /// Candidate ranks A..B: the A-th to B-th nearest items to the anchor (1-based, both
    /// included, the anchor itself not counted). Starting later skips the likeliest unlabelled
    /// duplicates.
    #[arg(long, default_value = "1..30")]
    pub ranks: Ranks,
    /// Negatives per row (the nearest survivors); pairs with fewer survivors are left out.
    #[arg(long, default_value_t = 1)]
    pub negatives: usize,
    /// Drop a candidate whose similarity to the anchor is above the positive's minus this.
    #[arg(long)]
    pub absolute_margin: Option<f32>,
    /// Drop a candidate whose similarity is above the positive's minus this fraction of its
    /// magnitude (0.05 is NV-Retriever's 95% rule).
    #[arg(long)]
    pub relative_margin: Option<f32>,
    /// Search breadth (default: the index's, at least B + 1).
    #[arg(long)]
    pub ef: Option<usize>,
}

impl Default for MineOptions {
    fn default() -> Self {
        MineOptions {
            ranks: Ranks { first: 1, last: 30 },
            negatives: 1,
            absolute_margin: None,
            relative_margin: None,
            ef: None,
        }
    }
}

impl MineOptions {
    /// Whether a candidate of similarity `s` is a safe negative for a positive of similarity
    /// `positive` (sentence-transformers' rules: `s <= positive - absolute` and
    /// `s <= positive - |positive| * relative`).
    pub fn safe(&self, s: f32, positive: f32) -> bool {
        self.absolute_margin.is_none_or(|m| s <= positive - m)
            && self
                .relative_margin
                .is_none_or(|m| s <= positive - positive.abs() * m)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: Option<f32>, hi: f32| m.is_some_and(|m| !(0.0..=hi).contains(&m));
        let window = self.ranks.last + 1 - self.ranks.first;
        if self.negatives == 0
            || self.negatives > window
            || bad(self.absolute_margin, 2.0)
            || bad(self.relative_margin, 1.0)
        {
            return Err(Error::InvalidArgument(format!(
                "--negatives must be 1 to the {window} ranks of --ranks {}..{}, --absolute-margin in [0, 2], --relative-margin in [0, 1] (got {}, {:?}, {:?})",
                self.ranks.first, self.ranks.last, self.negatives, self.absolute_margin, self.relative_margin
            )));
        }
        Ok(())
    }
}

/// One mined row: a duplicate pair and its hard negatives, nearest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinedRow {
    pub anchor: String,
    pub positive: String,
    pub negatives: Vec<String>,
}

/// What mining did.
#[derive(Debug, Clone, Serialize)]
pub struct MineReport {
    /// Duplicate pairs of the pairs file (one row each at most).
    pub pairs: usize,
    /// Rows with all their negatives.
    pub rows: usize,
    /// Pairs left out: fewer than `negatives` safe candidates within the ranks.
    pub short: usize,
    /// Anchors found among their own nearest items (0: the index holds other texts, or its
    /// items' sources are not the texts, e.g. built with `--id-column`).
    pub anchors_indexed: usize,
    /// Candidates within the ranks dropped as known positives (the anchor's duplicate group).
    pub dropped_positives: usize,
    /// Candidates within the ranks dropped by the margin.
    pub dropped_margin: usize,
    /// Mean similarity of anchor and positive, and of anchor and a kept negative.
    pub mean_positive_similarity: f64,
    pub mean_negative_similarity: f64,
    pub indexed: usize,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub options: MineOptions,
}

impl std::fmt::Display for MineReport {
    /// Two lines for a person.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} rows of {} negative(s) from ranks {}..{} of {} indexed items, for {} duplicate pairs ({} left out: too few safe candidates)",
            self.rows,
            self.options.negatives,
            self.options.ranks.first,
            self.options.ranks.last,
            self.indexed,
            self.pairs,
            self.short
        )?;
        write!(
            f,
            "{} of the anchors are indexed; within the ranks {} known positives and {} candidates within the margin dropped; mean similarity: positive {:.4}, negative {:.4}; {:.1} s ({:.1} CPU-s)",
            self.anchors_indexed,
            self.dropped_positives,
            self.dropped_margin,
            self.mean_positive_similarity,
            self.mean_negative_similarity,
            self.wall_seconds,
            self.cpu_seconds
        )
    }
}

/// Mine hard negatives for the duplicate pairs of `pairs` from the text index `s`.
pub fn mine_negatives(
    s: &Searcher,
    pairs: &[TextPair],
    o: &MineOptions,
) -> Result<(Vec<MinedRow>, MineReport)> {
    o.validate()?;
    if !matches!(s.encoder(), Encoder::Text(_)) {
        return Err(Error::InvalidArgument(format!(
            "index {}: its encoder is {}; negatives are mined from an index of texts (index build --text with a text model)",
            s.dir().display(),
            s.encoder().kind()
        )));
    }
    let sw = Stopwatch::start();
    let dups: Vec<&TextPair> = pairs.iter().filter(|p| p.duplicate).collect();
    if dups.is_empty() {
        return Err(Error::Empty(
            "the pairs hold no duplicate pair to mine negatives for".into(),
        ));
    }
    // Texts compare trimmed: `index build --text` trims each line.
    let (texts, labels) = duplicate_groups(pairs);
    let group: HashMap<&str, u32> = texts.iter().map(|t| t.trim()).zip(labels).collect();
    let known_positive = |anchor: &str, t: &str| {
        let (a, t) = (anchor.trim(), t.trim());
        t == a || group.get(t) == group.get(a)
    };

    let queries: Vec<Query> = dups
        .iter()
        .flat_map(|p| [Query::Text(&p.a), Query::Text(&p.b)])
        .collect();
    let vs = s.embed_many(&queries)?;
    let metric = s.metric();
    let anchors: Vec<Vec<f32>> = vs.iter().step_by(2).cloned().collect();
    // The window, the anchor itself and a few more: an index may hold a text more than once.
    let k = o.ranks.last + 1 + 8;
    let opts = SearchOptions {
        k,
        ef: o.ef,
        threshold: None,
        label: None,
    };
    let answers = s.search_vectors(&anchors, &opts)?;

    let (mut rows, mut short, mut dropped_pos, mut dropped_margin) = (Vec::new(), 0, 0, 0);
    let mut anchors_indexed = 0;
    let (mut pos_sum, mut neg_sum, mut neg_n) = (0f64, 0f64, 0usize);
    for ((p, v), answer) in dups.iter().zip(vs.chunks(2)).zip(&answers) {
        let positive = metric.similarity(metric.distance(&v[0], &v[1]));
        pos_sum += positive as f64;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut negatives = Vec::with_capacity(o.negatives);
        let anchor = p.a.trim();
        anchors_indexed += answer.results.iter().any(|h| h.source.trim() == anchor) as usize;
        let ranked = answer.results.iter().filter(|h| h.source.trim() != anchor);
        for h in ranked
            .skip(o.ranks.first - 1)
            .take(o.ranks.last + 1 - o.ranks.first)
        {
            if known_positive(&p.a, &h.source) {
                dropped_pos += 1;
            } else if !o.safe(h.similarity, positive) {
                dropped_margin += 1;
            } else if negatives.len() < o.negatives && seen.insert(h.source.trim()) {
                neg_sum += h.similarity as f64;
                neg_n += 1;
                negatives.push(h.source.clone());
            }
        }
        if negatives.len() < o.negatives {
            short += 1;
            continue;
        }
        rows.push(MinedRow {
            anchor: p.a.clone(),
            positive: p.b.clone(),
            negatives,
        });
    }
    if rows.is_empty() {
        return Err(Error::Empty(format!(
            "no duplicate pair has {} safe negative(s) within ranks {}..{} of the {} indexed items: widen --ranks or loosen the margin",
            o.negatives, o.ranks.first, o.ranks.last, s.len()
        )));
    }
    let report = MineReport {
        pairs: dups.len(),
        anchors_indexed,
        rows: rows.len(),
        short,
        dropped_positives: dropped_pos,
        dropped_margin,
        mean_positive_similarity: pos_sum / dups.len() as f64,
        mean_negative_similarity: neg_sum / neg_n.max(1) as f64,
        indexed: s.len(),
        wall_seconds: sw.wall(),
        cpu_seconds: sw.cpu(),
        options: o.clone(),
    };
    Ok((rows, report))
}

/// Write mined rows to a new TSV (`anchor`, `positive`, `negative_1`, ...; tabs and line
/// breaks inside a text become spaces). `path` must not exist; the file appears whole or not
/// at all, and never over a file that appeared meanwhile.
pub fn write_negatives(rows: &[MinedRow], path: &Path) -> Result<()> {
    let n = rows.first().map_or(0, |r| r.negatives.len());
    let clean = |t: &str| t.replace(['\t', '\n', '\r'], " ");
    crate::fsutil::atomic_write_new(path, "--out", |w| {
        let names = (1..=n).map(|i| format!("\tnegative_{i}"));
        writeln!(w, "anchor\tpositive{}", names.collect::<String>())?;
        for r in rows {
            write!(w, "{}\t{}", clean(&r.anchor), clean(&r.positive))?;
            for t in &r.negatives {
                write!(w, "\t{}", clean(t))?;
            }
            writeln!(w)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_parse_and_margins_follow_sentence_transformers() {
        assert_eq!("3..50".parse::<Ranks>(), Ok(Ranks { first: 3, last: 50 }));
        for bad in ["0..5", "5..3", "7", "a..b"] {
            assert!(bad.parse::<Ranks>().is_err(), "{bad}");
        }
        let o = MineOptions {
            relative_margin: Some(0.05),
            ..MineOptions::default()
        };
        // 95% of the positive's 0.8 is 0.76.
        assert!(o.safe(0.76, 0.8) && !o.safe(0.761, 0.8));
        let o = MineOptions {
            absolute_margin: Some(0.1),
            ..MineOptions::default()
        };
        assert!(o.safe(0.69, 0.8) && !o.safe(0.71, 0.8));
        assert!(MineOptions::default().safe(0.99, 0.5));
        // More negatives than ranks is refused, naming the flags.
        let o = MineOptions {
            ranks: Ranks { first: 2, last: 3 },
            negatives: 3,
            ..MineOptions::default()
        };
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("--negatives must be 1 to the 2 ranks"), "{e}");
        // A negative positive similarity: the threshold is lower still (-0.2 - 0.01).
        let o = MineOptions {
            relative_margin: Some(0.05),
            ..MineOptions::default()
        };
        assert!(o.safe(-0.211, -0.2) && !o.safe(-0.209, -0.2));
    }
}
