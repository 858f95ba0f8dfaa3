//! The Milvus backend beside the local index, same queries (issue 13's figures).
//!
//! ```text
//! cargo run --release --example milvus_bench -- --local DIR --milvus milvus://127.0.0.1:19530 \
//!     --collection NAME --queries FILE [--k 10] [--efs 10,16,32,64,128] [--out JSON]
//! ```
//!
//! Both sides are opened as [`Searcher`]s. The queries (texts, one a line) are embedded once by
//! the local searcher; then, one query per call on one thread:
//! * exact neighbours from the flat index over the local index's vectors (the oracle);
//! * recall@k of Milvus' answers against them at each ef, and of the local HNSW at its default;
//! * the duplicate decision of the top hit (distance <= the recorded threshold) by Milvus and by
//!   the local index, and how often they agree;
//! * latency p50/p99 of `search_vector` (search + decision) on each side, and of `query`
//!   (embed + search + decision).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;
use twindex::index::FlatIndex;
use twindex::query::milvus::MilvusUri;
use twindex::query::{OpenOptions, Query, SearchOptions, Searcher};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let local_dir = PathBuf::from(arg(&args, "--local").ok_or("--local DIR")?);
    let uri = MilvusUri::parse(&arg(&args, "--milvus").ok_or("--milvus URI")?)?;
    let coll = arg(&args, "--collection").ok_or("--collection NAME")?;
    let qfile = PathBuf::from(arg(&args, "--queries").ok_or("--queries FILE")?);
    let k: usize = arg(&args, "--k").map_or(Ok(10), |s| s.parse())?;
    let efs: Vec<usize> = arg(&args, "--efs")
        .unwrap_or_else(|| "10,16,32,64,128".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let out = arg(&args, "--out").map(PathBuf::from);

    let local = Searcher::open(&local_dir, &OpenOptions::default())?;
    let remote = Searcher::open_milvus(&uri, &coll, &OpenOptions::default())?;
    let texts = twindex::corpus::text::read_lines(&qfile)?;
    let queries: Vec<Query> = texts.iter().map(|t| Query::Text(t)).collect();
    let sw = Instant::now();
    let vs = local.embed_many(&queries)?;
    eprintln!(
        "embedded {} queries in {:.1} s",
        vs.len(),
        sw.elapsed().as_secs_f64()
    );

    // The oracle: exact search over the local index's live vectors.
    let (ids, flat) = {
        let idx = local.index()?;
        let ids: Vec<u64> = idx.ids().collect();
        let mut data = Vec::with_capacity(ids.len() * idx.dim());
        for &id in &ids {
            data.extend_from_slice(idx.get(id)?.vector);
        }
        (
            ids,
            FlatIndex::from_vectors(idx.dim(), idx.metric(), &data)?,
        )
    };
    let sw = Instant::now();
    let exact: Vec<HashSet<u64>> = flat
        .search_batch(&vs.concat(), k)?
        .into_iter()
        .map(|hs| hs.into_iter().map(|h| ids[h.id as usize]).collect())
        .collect();
    eprintln!("exact neighbours in {:.1} s", sw.elapsed().as_secs_f64());
    let recall = |answers: &[Vec<u64>]| -> f64 {
        let hit: usize = answers
            .iter()
            .zip(&exact)
            .map(|(a, e)| a.iter().filter(|id| e.contains(id)).count())
            .sum();
        hit as f64 / (exact.len() * k) as f64
    };

    let threshold_local = local.threshold();
    let threshold_remote = remote.threshold();
    let mut rows = Vec::new();
    let side = |name: &str,
                s: &Searcher,
                ef: Option<usize>|
     -> Result<(serde_json::Value, Vec<bool>), Box<dyn std::error::Error>> {
        let o = SearchOptions {
            k,
            ef,
            ..Default::default()
        };
        // warm-up
        for v in vs.iter().take(20) {
            s.search_vector(v, &o)?;
        }
        let mut lat = Vec::with_capacity(vs.len());
        let mut answers = Vec::with_capacity(vs.len());
        let mut dup = Vec::with_capacity(vs.len());
        for v in &vs {
            let t = Instant::now();
            let a = s.search_vector(v, &o)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            dup.push(a.results.first().is_some_and(|h| h.duplicate));
            answers.push(a.results.iter().map(|h| h.id).collect::<Vec<_>>());
        }
        let r = recall(&answers);
        let j = serde_json::json!({
            "side": name,
            "ef": ef,
            "recall_at_k": r,
            "search_p50_ms": pct(&mut lat, 0.50),
            "search_p99_ms": pct(&mut lat, 0.99),
            "duplicates": dup.iter().filter(|&&d| d).count(),
        });
        eprintln!("{j}");
        Ok((j, dup))
    };
    let (jl, dup_local) = side("local", &local, None)?;
    rows.push(jl);
    let mut agreement = Vec::new();
    for &ef in &efs {
        let (j, dup) = side("milvus", &remote, Some(ef))?;
        let same = dup.iter().zip(&dup_local).filter(|(a, b)| a == b).count();
        agreement.push(serde_json::json!({
            "ef": ef,
            "decisions_identical": same as f64 / dup.len() as f64,
        }));
        rows.push(j);
    }
    // End to end (embed + search + decide), one query per call, at the default ef.
    let mut e2e = Vec::new();
    for (name, s) in [("local", &local), ("milvus", &remote)] {
        let mut lat = Vec::new();
        for q in queries.iter().take(300) {
            let t = Instant::now();
            s.query(
                q,
                &SearchOptions {
                    k,
                    ..Default::default()
                },
            )?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        e2e.push(serde_json::json!({
            "side": name,
            "queries": lat.len(),
            "query_p50_ms": pct(&mut lat, 0.50),
            "query_p99_ms": pct(&mut lat, 0.99),
        }));
    }
    let report = serde_json::json!({
        "local": local_dir.display().to_string(),
        "milvus": remote.dir().display().to_string(),
        "items": ids.len(),
        "queries": vs.len(),
        "k": k,
        "threshold_local": threshold_local,
        "threshold_milvus": threshold_remote,
        "search": rows,
        "top1_decision_agreement": agreement,
        "end_to_end": e2e,
        "threads": 1,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = out {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
