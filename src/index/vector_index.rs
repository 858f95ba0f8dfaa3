//! The trait every vector index implements (exact flat scan, our HNSW graph, hnsw_rs), and the
//! search result type.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cmp::Ordering;

use super::metric::{check_rows, check_vector, Metric};

/// One search result: the id of a stored vector and its distance to the query (see
/// [`Metric`] for what the distance means; convert to a similarity with
/// [`Metric::similarity`]). A [`VectorIndex`] reports slot numbers (0-based insertion order);
/// the persistent [`Index`](super::Index) reports item ids.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: u64,
    pub distance: f32,
}

/// A progress callback: called with the number of vectors processed so far. May be called from
/// several threads at once.
pub type Progress<'a> = dyn Fn(usize) + Sync + 'a;

/// A predicate on slot numbers: `true` keeps the slot in the results.
pub type SlotFilter<'a> = dyn Fn(usize) -> bool + Sync + 'a;

/// A searchable collection of fixed-dimension vectors, addressed by slot (0, 1, 2, ... in
/// insertion order).
pub trait VectorIndex: Send + Sync {
    /// Short name of the engine (`"flat"`, `"hnsw"`, `"hnsw_rs"`).
    fn name(&self) -> &'static str;

    /// The metric searches use.
    fn metric(&self) -> Metric;

    /// The dimension of every vector.
    fn dim(&self) -> usize;

    /// Number of stored vectors (slots).
    fn len(&self) -> usize;

    /// Whether nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append `vectors` (row-major, `dim` floats a row); they get the next slots. Rows must be
    /// finite. `progress` receives the number of rows of this call inserted so far.
    fn add(&mut self, vectors: &[f32], progress: &Progress) -> Result<()>;

    /// The `k` nearest stored vectors to `query`, nearest first. `ef` is the search breadth for
    /// approximate engines (raised to `k` when smaller; ignored by exact ones).
    fn search(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        self.search_filtered(query, k, ef, &|_| true)
    }

    /// As [`VectorIndex::search`], returning only slots for which `keep` is true.
    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &SlotFilter,
    ) -> Result<Vec<Hit>>;

    /// The stored vector of `slot` (normalised for cosine), or `None` past the end.
    fn vector(&self, slot: usize) -> Option<&[f32]>;

    /// Approximate heap memory held, in bytes.
    fn memory_bytes(&self) -> usize;
}

/// Check a query's dimension and values and prepare it for `metric` (a normalised copy for
/// cosine, the slice itself otherwise).
pub(crate) fn prepare_query<'a>(
    metric: Metric,
    dim: usize,
    query: &'a [f32],
) -> Result<Cow<'a, [f32]>> {
    check_vector(query, dim, "query")?;
    if metric.normalizes() {
        let mut q = query.to_vec();
        metric.prepare(&mut q);
        Ok(Cow::Owned(q))
    } else {
        Ok(Cow::Borrowed(query))
    }
}

/// A candidate during search: ordering key and slot, ordered by key then slot (a total order,
/// NaN-safe).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub key: f32,
    pub slot: u32,
}

impl PartialEq for Scored {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        self.key.total_cmp(&o.key).then(self.slot.cmp(&o.slot))
    }
}

/// [`Scored`] in reverse order, for min-heaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nearest(pub Scored);

impl PartialOrd for Nearest {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Nearest {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.cmp(&self.0)
    }
}

/// Append `vectors` (rows of `dim`) to `data`, prepared for `metric` (normalised for cosine),
/// after checking that they are finite whole rows and that the slots still fit in a `u32`
/// (`u32::MAX` itself is reserved). Returns the number of rows appended.
pub(crate) fn append_rows(
    data: &mut Vec<f32>,
    vectors: &[f32],
    dim: usize,
    metric: Metric,
) -> Result<usize> {
    let rows = check_rows(vectors, dim, "vectors")?;
    if data.len() / dim + rows >= u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "an index holds fewer than {} vectors",
            u32::MAX
        )));
    }
    let start = data.len();
    data.extend_from_slice(vectors);
    if metric.normalizes() {
        data[start..]
            .chunks_mut(dim)
            .for_each(|v| metric.prepare(v));
    }
    Ok(rows)
}
