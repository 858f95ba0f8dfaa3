//! Hybrid retrieval: lexical (BM25) rankings of texts and their reciprocal-rank fusion with
//! dense (encoder) rankings. Rankings are positions in a corpus of texts, best first.

use crate::error::Result;
use crate::index::lexical::{reciprocal_rank_fusion, LexicalIndex};

/// The RRF constant of the original paper: score(id) = Σ 1 / (RRF_K + rank).
pub const RRF_K: f64 = 60.0;

/// BM25 over a corpus of texts (each text's id is its position).
#[derive(Debug)]
pub struct Bm25 {
    index: LexicalIndex,
}

impl Bm25 {
    /// Index `texts` in RAM.
    pub fn new(texts: &[&str]) -> Result<Self> {
        let index = LexicalIndex::build(texts.iter().enumerate().map(|(i, t)| (i as u64, *t)))?;
        Ok(Bm25 { index })
    }

    /// The `depth` best positions for the text `query`, leaving out position `skip` (the
    /// query's own text when it is in the corpus).
    pub fn ranking(&self, query: &str, skip: Option<usize>, depth: usize) -> Result<Vec<usize>> {
        let hits = self.index.search(query, depth + skip.is_some() as usize)?;
        Ok(hits
            .into_iter()
            .map(|(i, _)| i as usize)
            .filter(|&i| Some(i) != skip)
            .take(depth)
            .collect())
    }
}

/// The fusion of a dense and a lexical ranking of one query (RRF with [`RRF_K`]).
pub fn fuse(dense: &[usize], lexical: &[usize]) -> Vec<usize> {
    let lists = [
        dense.iter().map(|&i| i as u64).collect(),
        lexical.iter().map(|&i| i as u64).collect(),
    ];
    reciprocal_rank_fusion(&lists, RRF_K)
        .into_iter()
        .map(|i| i as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_skips_the_query_and_fusion_ranks_agreement_first() {
        let texts = [
            "where are you living",
            "where are you going",
            "how to cook rice",
        ];
        let b = Bm25::new(&texts).unwrap();
        let r = b.ranking(texts[0], Some(0), 5).unwrap();
        assert_eq!(r[0], 1, "{r:?}");
        assert!(!r.contains(&0));
        // dense [2, 1], lexical [1]: 1 -> 1/62 + 1/61, 2 -> 1/61, so 1 first, then 2.
        assert_eq!(fuse(&[2, 1], &[1]), vec![1, 2]);
    }
}
