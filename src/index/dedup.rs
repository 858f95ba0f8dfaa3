//! Near-duplicate detection results: pairs within a distance threshold, grouped into clusters
//! (connected components, by union-find).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Two items closer than the threshold; `a < b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DupPair {
    pub a: u64,
    pub b: u64,
    pub distance: f32,
}

/// The outcome of [`super::Index::dedup`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dedup {
    /// Pairs at distance <= this were reported.
    pub threshold_distance: f32,
    /// Every pair found, sorted by `(a, b)`.
    pub pairs: Vec<DupPair>,
    /// Groups of two or more items linked by pairs (transitively). Each group is sorted; groups
    /// are sorted by their first id.
    pub clusters: Vec<Vec<u64>>,
}

/// Disjoint sets over `0..n` with path halving and union by size.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    /// `n` singleton sets.
    pub fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    /// The representative of `x`'s set.
    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Merge the sets of `a` and `b`; true if they were different.
    pub fn union(&mut self, a: usize, b: usize) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra] < self.size[rb] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb] = ra;
        self.size[ra] += self.size[rb];
        true
    }
}

/// The connected components (of size >= 2) of the graph whose edges are `pairs`.
pub fn clusters(pairs: &[DupPair]) -> Vec<Vec<u64>> {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut ids: Vec<u64> = Vec::new();
    let mut slot = |id: u64, ids: &mut Vec<u64>| {
        *index.entry(id).or_insert_with(|| {
            ids.push(id);
            ids.len() - 1
        })
    };
    let edges: Vec<(usize, usize)> = pairs
        .iter()
        .map(|p| (slot(p.a, &mut ids), slot(p.b, &mut ids)))
        .collect();
    let mut uf = UnionFind::new(ids.len());
    for (a, b) in edges {
        uf.union(a, b);
    }
    let mut groups: HashMap<usize, Vec<u64>> = HashMap::new();
    for (i, &id) in ids.iter().enumerate() {
        groups.entry(uf.find(i)).or_default().push(id);
    }
    let mut out: Vec<Vec<u64>> = groups
        .into_values()
        .filter(|g| g.len() >= 2)
        .map(|mut g| {
            g.sort_unstable();
            g
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: u64, b: u64) -> DupPair {
        DupPair {
            a,
            b,
            distance: 0.0,
        }
    }

    #[test]
    fn components_by_hand() {
        // Edges 1-2, 2-3 (chain), 10-11, 7-7 (self loop: no cluster of one).
        let c = clusters(&[p(2, 3), p(10, 11), p(1, 2), p(7, 7)]);
        assert_eq!(c, vec![vec![1, 2, 3], vec![10, 11]]);
        assert!(clusters(&[]).is_empty());
    }
}
