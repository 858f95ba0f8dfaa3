//! BM25 keyword search over item texts with tantivy (the only file that uses tantivy): the
//! lexical baseline that learned encoders are measured against, and one half of hybrid search.

use crate::error::{Error, Result};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value, FAST, INDEXED, STORED, TEXT};
use tantivy::{doc, Index, IndexReader, IndexWriter, TantivyDocument};

fn terr(e: tantivy::TantivyError) -> Error {
    Error::Msg(format!("tantivy: {e}"))
}

/// An in-memory BM25 index of texts, each with a caller-given u64 id.
pub struct LexicalIndex {
    index: Index,
    reader: IndexReader,
    id: Field,
    text: Field,
}

impl std::fmt::Debug for LexicalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LexicalIndex").finish_non_exhaustive()
    }
}

impl LexicalIndex {
    /// Index `(id, text)` pairs in RAM (tantivy's default tokenizer: lower-cased words).
    pub fn build<'a>(docs: impl IntoIterator<Item = (u64, &'a str)>) -> Result<Self> {
        let mut sb = Schema::builder();
        let id = sb.add_u64_field("id", INDEXED | STORED | FAST);
        let text = sb.add_text_field("text", TEXT);
        let index = Index::create_in_ram(sb.build());
        let mut w: IndexWriter = index.writer(50_000_000).map_err(terr)?;
        let mut n = 0usize;
        for (i, t) in docs {
            w.add_document(doc!(id => i, text => t)).map_err(terr)?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::Empty("no texts to index for BM25".into()));
        }
        w.commit().map_err(terr)?;
        let reader = index.reader().map_err(terr)?;
        Ok(LexicalIndex {
            index,
            reader,
            id,
            text,
        })
    }

    /// The `k` best `(id, bm25 score)` for free text `query` (parsed leniently: punctuation
    /// and operators in questions never make it fail; an empty query finds nothing).
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<(u64, f32)>> {
        let parser = QueryParser::for_index(&self.index, vec![self.text]);
        // Keep words only, so characters such as ':' '"' '(' are not read as query syntax.
        let cleaned: String = query
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        if cleaned.trim().is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let (q, _) = parser.parse_query_lenient(&cleaned);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&q, &TopDocs::with_limit(k).order_by_score())
            .map_err(terr)?;
        top.into_iter()
            .map(|(score, addr)| {
                let d: TantivyDocument = searcher.doc(addr).map_err(terr)?;
                let id = d
                    .get_first(self.id)
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| Error::Msg("tantivy: document without id".into()))?;
                Ok((id, score))
            })
            .collect()
    }
}

/// Reciprocal-rank fusion of ranked id lists: score(id) = sum over lists of 1 / (k0 + rank),
/// rank from 1 (k0 = 60 in the original paper). Returns ids by fused score, best first.
pub fn reciprocal_rank_fusion(lists: &[Vec<u64>], k0: f64) -> Vec<u64> {
    let mut score: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
    for list in lists {
        for (r, &id) in list.iter().enumerate() {
            *score.entry(id).or_insert(0.0) += 1.0 / (k0 + (r + 1) as f64);
        }
    }
    let mut v: Vec<(u64, f64)> = score.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().map(|(id, _)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_finds_word_overlap_and_rrf_fuses() {
        let docs = [
            (10u64, "Where are you living?"),
            (11, "Where are you going?"),
            (12, "What is your age?"),
            (13, "How do I cook rice: a guide (quick)"),
        ];
        let ix = LexicalIndex::build(docs.iter().map(|&(i, t)| (i, t))).unwrap();
        let hits = ix.search("where are you living", 2).unwrap();
        assert_eq!(hits[0].0, 10, "{hits:?}");
        assert_eq!(hits.len(), 2);
        // Query syntax characters are plain text.
        assert_eq!(ix.search("cook rice: (quick)?", 1).unwrap()[0].0, 13);
        assert!(ix.search("?!", 5).unwrap().is_empty());
        // RRF: 1/(60+1) + 1/(60+2) for id 2 beats 1/(60+1) for id 1 alone... ids 1 and 2:
        // list A [1, 2], list B [2, 3]: 1 -> 1/61, 2 -> 1/62 + 1/61, 3 -> 1/62.
        assert_eq!(
            reciprocal_rank_fusion(&[vec![1, 2], vec![2, 3]], 60.0),
            vec![2, 1, 3]
        );
        assert!(LexicalIndex::build(std::iter::empty()).is_err());
    }
}
