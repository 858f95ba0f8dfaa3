//! twindex half of the text-encoding speed comparison (`benches/peers/compare_encode.sh`):
//! encodes the first N questions of a pair TSV (q1 then q2 of each row, header skipped; the
//! same list as `benches/peers/st_encode.py`) with batch B on T threads and prints process
//! CPU-seconds and wall-seconds per 1,000 questions.
//!
//! ```text
//! cargo run --release --example encode_speed -- --threads 1 --backend bf16 --json
//! ```
//!
//! Arguments (all optional): `--model DIR` (default ../shared/models/all-MiniLM-L6-v2),
//! `--tsv FILE` (default ../shared/corpora/pairs/qqp-10k.test.tsv), `--n 2000`, `--batch 32`,
//! `--threads 1`, `--backend candle|f32|bf16` (default: TWINDEX_TEXT_BACKEND, else the
//! library default), `--repeat 1` (timed runs; the figure reported is their median), `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use twindex::model::{TextBackend, TextEncoder};
use twindex::timing::Stopwatch;

struct Args {
    model: PathBuf,
    tsv: PathBuf,
    n: usize,
    batch: usize,
    threads: usize,
    backend: Option<TextBackend>,
    repeat: usize,
    json: bool,
}

fn parse() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        model: root.join("shared/models/all-MiniLM-L6-v2"),
        tsv: root.join("shared/corpora/pairs/qqp-10k.test.tsv"),
        n: 2000,
        batch: 32,
        threads: 1,
        backend: None,
        repeat: 1,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--json" {
            a.json = true;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--model" => a.model = v.into(),
            "--tsv" => a.tsv = v.into(),
            "--n" => a.n = num(&v)?,
            "--batch" => a.batch = num(&v)?,
            "--threads" => a.threads = num(&v)?,
            "--repeat" => a.repeat = num(&v)?.max(1),
            "--backend" => a.backend = Some(v.parse().map_err(|e| format!("{e}"))?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(a)
}

fn run(a: &Args) -> Result<serde_json::Value, String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()
        .map_err(|e| e.to_string())?;
    let tsv = std::fs::read_to_string(&a.tsv).map_err(|e| format!("{}: {e}", a.tsv.display()))?;
    let questions: Vec<&str> = tsv
        .lines()
        .skip(1)
        .flat_map(|l| l.split('\t').take(2))
        .take(a.n)
        .collect();
    if questions.len() < a.n {
        return Err(format!(
            "{}: only {} questions, wanted {}",
            a.tsv.display(),
            questions.len(),
            a.n
        ));
    }
    let mut enc = TextEncoder::load(&a.model).map_err(|e| format!("{e:#}"))?;
    if let Some(b) = a.backend {
        enc.set_backend(b).map_err(|e| format!("{e:#}"))?;
    }
    enc.encode(&questions[..64.min(a.n)], a.batch)
        .map_err(|e| format!("{e:#}"))?; // warm-up, as on the peer side
    let mut runs = Vec::new();
    for _ in 0..a.repeat {
        let sw = Stopwatch::start();
        let emb = enc
            .encode(&questions, a.batch)
            .map_err(|e| format!("{e:#}"))?;
        let (cpu, wall) = (sw.cpu(), sw.wall());
        if emb.len() != a.n * enc.dim() || emb.iter().any(|v| !v.is_finite()) {
            return Err("bad embeddings".into());
        }
        runs.push((cpu * 1000.0 / a.n as f64, wall * 1000.0 / a.n as f64));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let cpu = median(runs.iter().map(|r| r.0).collect());
    let wall = median(runs.iter().map(|r| r.1).collect());
    Ok(serde_json::json!({
        "peer": "twindex",
        "backend": format!("{:?}", enc.backend()),
        "threads": a.threads,
        "batch": a.batch,
        "n": a.n,
        "repeat": a.repeat,
        "cpu_s_per_1k": cpu,
        "wall_s_per_1k": wall,
        "runs_cpu_s_per_1k": runs.iter().map(|r| r.0).collect::<Vec<_>>(),
    }))
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("encode_speed: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(v) if a.json => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!(
                "twindex {} threads {}: {:.2} CPU-s / 1k questions, {:.2} wall-s / 1k",
                v["backend"].as_str().unwrap_or("?"),
                a.threads,
                v["cpu_s_per_1k"].as_f64().unwrap_or(f64::NAN),
                v["wall_s_per_1k"].as_f64().unwrap_or(f64::NAN)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("encode_speed: {e}");
            ExitCode::FAILURE
        }
    }
}
