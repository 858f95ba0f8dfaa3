//! Dynamic time warping between feature sequences, banded (Sakoe-Chiba): the classic online
//! signature matcher, used as a baseline scorer and as a second opinion beside the sequence
//! twin.

use crate::error::{Error, Result};

/// DTW distance between `a` (`n x c`, time-major) and `b` (`m x c`) with a Sakoe-Chiba band:
/// point `i` of `a` may only be matched with points `j` of `b` where
/// `|i * m / n - j| <= band` (the band follows the diagonal when lengths differ). The local
/// cost is the Euclidean distance between the two points' features; the steps are
/// `(i-1, j)`, `(i, j-1)`, `(i-1, j-1)`; the result is the total cost of the cheapest path from
/// `(0, 0)` to `(n-1, m-1)`. `band >= max(n, m)` is unconstrained DTW.
pub fn dtw_banded(a: &[f32], b: &[f32], c: usize, band: usize) -> Result<f32> {
    if c == 0
        || !a.len().is_multiple_of(c)
        || !b.len().is_multiple_of(c)
        || a.is_empty()
        || b.is_empty()
    {
        return Err(Error::Shape(format!(
            "dtw: sequences of {} and {} values are not non-empty multiples of {c} features",
            a.len(),
            b.len()
        )));
    }
    let (n, m) = (a.len() / c, b.len() / c);
    let cost = |i: usize, j: usize| -> f32 {
        a[i * c..(i + 1) * c]
            .iter()
            .zip(&b[j * c..(j + 1) * c])
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt()
    };
    // Columns of row i allowed by the band around the diagonal j = i * m / n.
    let range = |i: usize| {
        let centre = (i * m) as f64 / n as f64;
        let lo = (centre - band as f64).ceil().max(0.0) as usize;
        let hi = ((centre + band as f64).floor() as usize).min(m - 1);
        (lo, hi)
    };
    let inf = f32::INFINITY;
    let mut prev = vec![inf; m];
    let mut cur = vec![inf; m];
    for i in 0..n {
        let (lo, hi) = range(i);
        cur.fill(inf);
        for j in lo..=hi {
            let best = if i == 0 && j == 0 {
                0.0
            } else {
                let up = if i > 0 { prev[j] } else { inf };
                let left = if j > 0 { cur[j - 1] } else { inf };
                let diag = if i > 0 && j > 0 { prev[j - 1] } else { inf };
                up.min(left).min(diag)
            };
            cur[j] = best + cost(i, j);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let d = prev[m - 1];
    if !d.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "dtw: band {band} leaves no path between sequences of {n} and {m} points"
        )));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unconstrained DTW of two 1-d sequences, the cumulative table written out by hand.
    #[test]
    fn hand_computed_unbanded() {
        // a = [0, 1, 2], b = [0, 2]; local cost |a_i - b_j|:
        //        b=0  b=2
        //  a=0    0    2
        //  a=1    1    1
        //  a=2    2    0
        // cumulative D: row0 = [0, 2]; row1 = [0+1=1, min(2,1,0)+1=1]; row2 = [1+2=3,
        // min(D10=1, D11=1, D20=3)+0 = 1]. DTW = 1.
        let d = dtw_banded(&[0.0, 1.0, 2.0], &[0.0, 2.0], 1, 10).unwrap();
        assert_eq!(d, 1.0);
    }
}
