//! Clustering quality of embeddings, as pytorch-metric-learning's `AccuracyCalculator` reports
//! it: k-means of the embeddings into as many clusters as there are labels, then the
//! normalised and the adjusted mutual information (NMI, AMI; scikit-learn's definitions,
//! arithmetic-mean normalisation) of the clusters against the labels.
//!
//! PML's k-means is faiss's, from a random start. Here it is deterministic: the first centre is
//! item 0, each next one the item farthest from its nearest centre so far (the first such item
//! on a tie), then Lloyd's iterations until no assignment changes (ties to the lower centre; a
//! centre left without items stays where it was). The PML oracle runs scikit-learn's `KMeans`
//! from the same start (`benches/peers/pml_oracle.py`).

use crate::error::{Error, Result};

/// Squared Euclidean distance of two f64 rows.
fn sq(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Cluster the `n = points.len() / dim` rows of `points` into `k` clusters (deterministic, see
/// the module docs); at most `max_iter` Lloyd iterations. Returns each row's cluster.
pub fn kmeans_deterministic(
    points: &[f32],
    dim: usize,
    k: usize,
    max_iter: usize,
) -> Result<Vec<usize>> {
    if dim == 0 || !points.len().is_multiple_of(dim) {
        return Err(Error::InvalidArgument(format!(
            "kmeans: {} values are not rows of dimension {dim}",
            points.len()
        )));
    }
    let n = points.len() / dim;
    if k == 0 || k > n {
        return Err(Error::InvalidArgument(format!(
            "kmeans: {k} clusters of {n} points (need 1..={n})"
        )));
    }
    let x: Vec<f64> = points.iter().map(|&v| v as f64).collect();
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let mut centres: Vec<Vec<f64>> = vec![row(0).to_vec()];
    let mut nearest: Vec<f64> = (0..n).map(|i| sq(row(i), row(0))).collect();
    while centres.len() < k {
        let mut far = 0;
        for i in 1..n {
            if nearest[i] > nearest[far] {
                far = i;
            }
        }
        centres.push(row(far).to_vec());
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(sq(row(i), row(far)));
        }
    }
    let mut assign = vec![usize::MAX; n];
    for _ in 0..max_iter.max(1) {
        let mut changed = false;
        for (i, a) in assign.iter_mut().enumerate() {
            let mut best = 0;
            let mut best_d = f64::INFINITY;
            for (c, centre) in centres.iter().enumerate() {
                let d = sq(row(i), centre);
                if d < best_d {
                    best_d = d;
                    best = c;
                }
            }
            if *a != best {
                *a = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0f64; dim]; k];
        let mut counts = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            counts[a] += 1;
            for (s, v) in sums[a].iter_mut().zip(row(i)) {
                *s += v;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                centres[c] = sums[c].iter().map(|s| s / counts[c] as f64).collect();
            }
        }
    }
    Ok(assign)
}

/// The contingency table of two labelings (dense ids from 0), with its row and column sums.
struct Contingency {
    n: usize,
    table: Vec<Vec<usize>>,
    a: Vec<usize>,
    b: Vec<usize>,
}

fn contingency(truth: &[u32], pred: &[usize]) -> Result<Contingency> {
    if truth.len() != pred.len() || truth.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mutual information: {} labels and {} cluster ids (need the same, non-zero count)",
            truth.len(),
            pred.len()
        )));
    }
    let dense = |v: Vec<usize>| -> (Vec<usize>, usize) {
        let mut ids: Vec<usize> = v.clone();
        ids.sort_unstable();
        ids.dedup();
        let out = v.iter().map(|x| ids.binary_search(x).unwrap()).collect();
        (out, ids.len())
    };
    let (t, nt) = dense(truth.iter().map(|&l| l as usize).collect());
    let (p, np) = dense(pred.to_vec());
    let mut table = vec![vec![0usize; np]; nt];
    for (&i, &j) in t.iter().zip(&p) {
        table[i][j] += 1;
    }
    let a = table.iter().map(|r| r.iter().sum()).collect();
    let b = (0..np).map(|j| table.iter().map(|r| r[j]).sum()).collect();
    Ok(Contingency {
        n: truth.len(),
        table,
        a,
        b,
    })
}

fn entropy(counts: &[usize], n: usize) -> f64 {
    let n = n as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

fn mutual_info(c: &Contingency) -> f64 {
    let n = c.n as f64;
    let mut mi = 0.0;
    for (i, r) in c.table.iter().enumerate() {
        for (j, &nij) in r.iter().enumerate() {
            if nij > 0 {
                let nij = nij as f64;
                mi += nij / n * (n * nij / (c.a[i] as f64 * c.b[j] as f64)).ln();
            }
        }
    }
    mi.max(0.0)
}

/// Normalised mutual information of a clustering `pred` against labels `truth`
/// (scikit-learn's `normalized_mutual_info_score`: MI / mean(H(truth), H(pred))); 1 when both
/// are a single class.
pub fn nmi(truth: &[u32], pred: &[usize]) -> Result<f64> {
    let c = contingency(truth, pred)?;
    if c.a.len() == c.b.len() && c.a.len() <= 1 {
        return Ok(1.0);
    }
    let mi = mutual_info(&c);
    let norm = 0.5 * (entropy(&c.a, c.n) + entropy(&c.b, c.n));
    Ok(if norm > 0.0 { mi / norm } else { 0.0 })
}

/// The mutual information two labelings with these class sizes have in expectation under
/// random assignment (Vinh, Epps and Bailey 2010; scikit-learn's `expected_mutual_information`).
fn expected_mutual_info(c: &Contingency) -> f64 {
    let n = c.n;
    // ln k! for k = 0..=n.
    let mut lf = vec![0f64; n + 1];
    for k in 1..=n {
        lf[k] = lf[k - 1] + (k as f64).ln();
    }
    let nf = n as f64;
    let mut emi = 0.0;
    for &ai in &c.a {
        for &bj in &c.b {
            let lo = (ai + bj).saturating_sub(n).max(1);
            let hi = ai.min(bj);
            for nij in lo..=hi {
                let x = nij as f64;
                let term = x / nf * (nf * x / (ai as f64 * bj as f64)).ln();
                let lp = lf[ai] + lf[bj] + lf[n - ai] + lf[n - bj]
                    - lf[n]
                    - lf[nij]
                    - lf[ai - nij]
                    - lf[bj - nij]
                    - lf[n + nij - ai - bj];
                emi += term * lp.exp();
            }
        }
    }
    emi
}

/// Adjusted mutual information of a clustering `pred` against labels `truth` (scikit-learn's
/// `adjusted_mutual_info_score`, arithmetic mean: (MI - E\[MI\]) / (mean(H(truth), H(pred)) -
/// E\[MI\])); 1 when both are a single class or identical up to renaming.
pub fn ami(truth: &[u32], pred: &[usize]) -> Result<f64> {
    let c = contingency(truth, pred)?;
    let (nt, np) = (c.a.len(), c.b.len());
    if nt == np && (nt <= 1 || nt == c.n) {
        return Ok(1.0);
    }
    let mi = mutual_info(&c);
    let emi = expected_mutual_info(&c);
    let norm = 0.5 * (entropy(&c.a, c.n) + entropy(&c.b, c.n));
    let mut denom = norm - emi;
    // As scikit-learn: keep the denominator away from 0 with its sign.
    let eps = f64::EPSILON;
    denom = if denom < 0.0 {
        denom.min(-eps)
    } else {
        denom.max(eps)
    };
    Ok((mi - emi) / denom)
}

/// NMI and AMI of k-means clusters of `emb` (`n` rows of `dim`) against `labels`, with as many
/// clusters as distinct labels (as PML's `AccuracyCalculator`).
pub fn cluster_scores(emb: &[f32], dim: usize, labels: &[u32]) -> Result<(f64, f64)> {
    let mut distinct = labels.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let clusters = kmeans_deterministic(emb, dim, distinct.len(), 300)?;
    Ok((nmi(labels, &clusters)?, ami(labels, &clusters)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Oracle by hand: truth [0,0,1,1], clusters [0,0,0,1]. Contingency [[2,0],[1,1]], a = (2,2),
    /// b = (3,1), N = 4. MI = 2/4 ln(4*2/(2*3)) + 1/4 ln(4/(2*3)) + 1/4 ln(4/(2*1))
    /// = 0.5 ln(4/3) + 0.25 ln(2/3) + 0.25 ln 2 = 0.143841 - 0.101366 + 0.173287 = 0.215762;
    /// H(truth) = ln 2 = 0.693147, H(pred) = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.562335;
    /// NMI = 0.215762 / 0.627741 = 0.343711.
    /// E[MI]: only nij = 1 or 2 in cell (i, j=0) (b0 = 3): for a=2, b=3: nij from 1 to 2:
    /// P(1) = C(2,1)C(2,2)/C(4,3) = 2/4 = 0.5, term 1/4 ln(4/6); P(2) = C(2,2)C(2,1)/C(4,3) = 0.5,
    /// term 2/4 ln(8/6); per row: 0.5 (0.25 ln(2/3) + 0.5 ln(4/3)) = 0.5 (-0.101366 + 0.143841)
    /// = 0.021237, two rows: 0.042475. Cell (i, j=1) (b1 = 1): nij = 1 with P = C(2,1)C(2,0)/C(4,1)
    /// = 0.5, term 1/4 ln(4/2) = 0.173287, times 0.5 = 0.086643, two rows: 0.173287.
    /// E[MI] = 0.215762 (the same as MI here): AMI = (MI - E[MI]) / (mean H - E[MI]) = 0.
    #[test]
    fn nmi_and_ami_match_hand_computation() {
        let t = [0u32, 0, 1, 1];
        let p = [0usize, 0, 0, 1];
        let n = nmi(&t, &p).unwrap();
        assert!((n - 0.343711).abs() < 1e-6, "nmi {n}");
        let a = ami(&t, &p).unwrap();
        assert!(a.abs() < 1e-9, "ami {a}");
        assert_eq!(nmi(&t, &[5, 5, 7, 7]).unwrap(), 1.0);
        assert!((ami(&t, &[5, 5, 7, 7]).unwrap() - 1.0).abs() < 1e-12);
        assert!(nmi(&t, &[0, 1]).is_err());
    }

    /// Two far blobs: k-means finds them whatever the order of the points.
    #[test]
    fn kmeans_separates_blobs() {
        let pts = [0.0f32, 0.1, 10.0, 0.2, 10.1, 9.9];
        let c = kmeans_deterministic(&pts, 1, 2, 100).unwrap();
        assert_eq!(c, vec![0, 0, 1, 0, 1, 1]);
        assert!(kmeans_deterministic(&pts, 1, 7, 100).is_err());
        assert!(kmeans_deterministic(&pts, 4, 2, 100).is_err());
    }
}
