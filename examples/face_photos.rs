//! twindex half of the face-photo comparison (`benches/peers/compare_face_photos.sh`), issue 22's
//! numbers 2 to 5 on dlib's models read by twindex (detector, landmarks, RGB chip, descriptor):
//!
//! - speed: every photo of deepface's pairs file through the whole pipeline, one thread,
//!   photos per CPU-second;
//! - verification: deepface's labelled pairs, each photo's best-scoring face, same person when
//!   the descriptors are within 0.6 (face_recognition's tolerance); a photo without a face
//!   makes its pairs "different";
//! - detection recall at IoU 0.5 on dlib-faces/training.xml (upsample 1), beside the boxes
//!   dlib's CNN and HOG detectors gave (recorded in tests/data/dlib_detect_reference.json);
//! - face_recognition's compare_faces([obama2, obama3, biden], obama) and two_people.jpg.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release --example face_photos -- --json
//! ```
//!
//! Arguments (all optional): `--models DIR` (default corpora/dlib-models), `--photos DIR`
//! (default ../shared/corpora/faces-photos), `--threads 1`, `--json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use twindex::model::dlib::Rect;
use twindex::model::dlib_faces::{Face, FacePipeline};
use twindex::timing::Stopwatch;

fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Intersection over union of two inclusive boxes.
fn iou(a: Rect, b: Rect) -> f64 {
    let w = (a.right.min(b.right) - a.left.max(b.left) + 1).max(0);
    let h = (a.bottom.min(b.bottom) - a.top.max(b.top) + 1).max(0);
    let area = |r: Rect| ((r.right - r.left + 1) * (r.bottom - r.top + 1)) as f64;
    let i = (w * h) as f64;
    i / (area(a) + area(b) - i)
}

/// (found truth boxes, false detections): each truth box matched to at most one detection.
fn recall(truth: &[Rect], found: &[Rect]) -> (usize, usize) {
    let mut used = vec![false; found.len()];
    let mut hit = 0;
    for t in truth {
        let best = (0..found.len())
            .filter(|&i| !used[i])
            .map(|i| (i, iou(*t, found[i])))
            .filter(|&(_, v)| v >= 0.5)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, _)) = best {
            used[i] = true;
            hit += 1;
        }
    }
    (hit, used.iter().filter(|u| !**u).count())
}

fn attr(tag: &str, name: &str) -> Option<i64> {
    let k = format!("{name}='");
    let at = tag.find(&k)? + k.len();
    tag[at..].split('\'').next()?.parse().ok()
}

fn run() -> Result<serde_json::Value, String> {
    let mut models = PathBuf::from("corpora/dlib-models");
    let mut photos = PathBuf::from("../shared/corpora/faces-photos");
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--models" => models = args.next().ok_or("--models DIR")?.into(),
            "--photos" => photos = args.next().ok_or("--photos DIR")?.into(),
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--threads N")?
            }
            "--json" => {}
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| e.to_string())?;
    let e = |e: twindex::Error| e.to_string();
    let pipe = FacePipeline::load(&models, 0).map_err(e)?;

    // Speed and verification on deepface's pairs.
    let csv = std::fs::read_to_string(photos.join("deepface/face-recognition-pivot.csv"))
        .map_err(|e| e.to_string())?;
    let mut pairs = Vec::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let name = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
        pairs.push((name(f[0]), name(f[1]), f[2] == "Yes"));
    }
    let mut files: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.0.clone(), p.1.clone()])
        .collect();
    files.sort();
    files.dedup();
    let sw = Stopwatch::start();
    let mut best: BTreeMap<String, Option<Face>> = BTreeMap::new();
    for f in &files {
        let faces = pipe
            .faces_in_file(&photos.join("deepface").join(f))
            .map_err(e)?;
        best.insert(f.clone(), faces.into_iter().next());
    }
    let (cpu, wall) = (sw.cpu(), sw.wall());
    let no_face: Vec<&String> = best
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    let mut right = 0;
    for (a, b, same) in &pairs {
        let said = match (&best[a], &best[b]) {
            (Some(x), Some(y)) => dist(&x.descriptor, &y.descriptor) <= 0.6,
            _ => false,
        };
        right += (said == *same) as usize;
    }

    let cv = people_cv(&pairs, &best)?;

    // Detection recall on training.xml at upsample 1, beside dlib's recorded boxes.
    let refs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/data/dlib_detect_reference.json")
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let xml = std::fs::read_to_string(photos.join("dlib-faces/training.xml"))
        .map_err(|e| e.to_string())?;
    let mut totals = [[0usize; 2]; 3];
    let mut truth_n = 0;
    for img in xml.split("<image ").skip(1) {
        let file = img
            .split("file='")
            .nth(1)
            .and_then(|s| s.split('\'').next());
        let file = file.ok_or("training.xml: an image without a file")?;
        let truth: Vec<Rect> = img
            .split("<box ")
            .skip(1)
            .filter_map(|b| {
                let (t, l) = (attr(b, "top")?, attr(b, "left")?);
                let (w, h) = (attr(b, "width")?, attr(b, "height")?);
                Some(Rect {
                    left: l,
                    top: t,
                    right: l + w - 1,
                    bottom: t + h - 1,
                })
            })
            .collect();
        truth_n += truth.len();
        let path = photos.join("dlib-faces").join(file);
        let img = image::open(&path).map_err(|e| e.to_string())?.to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let px = img.into_raw();
        let rgb = twindex::model::dlib::Rgb {
            pixels: &px,
            width: w,
            height: h,
        };
        let ours: Vec<Rect> = pipe
            .detector
            .detect(rgb, 1)
            .map_err(e)?
            .iter()
            .map(|d| d.rect)
            .collect();
        let (hit, fa) = recall(&truth, &ours);
        totals[0][0] += hit;
        totals[0][1] += fa;
        let rec = refs
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["path"] == format!("dlib-faces/{file}").as_str())
            })
            .ok_or_else(|| format!("{file}: not in the reference"))?;
        let boxes = |v: &serde_json::Value| -> Vec<Rect> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|b| {
                            let b = if b.get("box").is_some() { &b["box"] } else { b };
                            let g = |i: usize| b[i].as_i64().unwrap_or(0);
                            Rect {
                                left: g(0),
                                top: g(1),
                                right: g(2),
                                bottom: g(3),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        for (k, v) in [(1, &rec["cnn_upsample1"]), (2, &rec["hog_upsample1"])] {
            let (h, f) = recall(&truth, &boxes(v));
            totals[k][0] += h;
            totals[k][1] += f;
        }
    }

    // compare_faces and two_people.
    let fr = photos.join("face_recognition");
    let one = |p: &Path| -> Result<Vec<Face>, String> {
        let f = pipe.faces_in_file(p).map_err(e)?;
        if f.is_empty() {
            return Err(format!("{}: no face found", p.display()));
        }
        Ok(f)
    };
    let obama = one(&fr.join("test_images/obama.jpg"))?;
    let mut compare = Vec::new();
    for f in ["obama2.jpg", "obama3.jpg", "biden.jpg"] {
        let x = one(&fr.join("test_images").join(f))?;
        let d = dist(&x[0].descriptor, &obama[0].descriptor);
        compare.push(serde_json::json!({"photo": f, "distance": d, "same": d <= 0.6}));
    }
    let roll: Vec<(String, Vec<f32>)> = [
        ("obama", "examples/obama.jpg"),
        ("biden", "examples/biden.jpg"),
        ("alex-lacamoire", "examples/alex-lacamoire.png"),
    ]
    .iter()
    .map(|(n, p)| Ok((n.to_string(), one(&fr.join(p))?[0].descriptor.clone())))
    .collect::<Result<_, String>>()?;
    let two = one(&fr.join("examples/two_people.jpg"))?;
    let two: Vec<serde_json::Value> = two
        .iter()
        .map(|f| {
            let (who, d) = roll
                .iter()
                .map(|(n, v)| (n.clone(), dist(v, &f.descriptor)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or_default();
            serde_json::json!({
                "box": [f.rect.left, f.rect.top, f.rect.right, f.rect.bottom],
                "score": f.score,
                "identity": if d <= 0.6 { who } else { "unknown".into() },
                "distance": d,
            })
        })
        .collect();

    Ok(serde_json::json!({
        "threads": threads,
        "photos": files.len(),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "photos_per_cpu_second": files.len() as f64 / cpu,
        "photos_without_face": no_face,
        "pairs": pairs.len(),
        "pair_accuracy_at_0.6": right as f64 / pairs.len() as f64,
        "people_cv": cv,
        "training_xml_boxes": truth_n,
        "training_xml_recall_iou_0.5": {
            "twindex_cnn_upsample1": totals[0][0] as f64 / truth_n as f64,
            "dlib_cnn_upsample1": totals[1][0] as f64 / truth_n as f64,
            "dlib_hog_upsample1": totals[2][0] as f64 / truth_n as f64,
        },
        "training_xml_false_detections": {
            "twindex_cnn_upsample1": totals[0][1],
            "dlib_cnn_upsample1": totals[1][1],
            "dlib_hog_upsample1": totals[2][1],
        },
        "compare_faces_vs_obama": compare,
        "two_people_vs_roll": two,
    }))
}

/// Photos' people: the connected groups of deepface's same-person pairs.
fn people(pairs: &[(String, String, bool)]) -> BTreeMap<String, String> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    fn find(p: &mut BTreeMap<String, String>, x: &str) -> String {
        let up = p.get(x).cloned().unwrap_or_else(|| x.to_string());
        if up == x {
            return up;
        }
        let r = find(p, &up);
        p.insert(x.to_string(), r.clone());
        r
    }
    for (a, b, same) in pairs {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if *same && ra != rb {
            parent.insert(ra, rb);
        }
    }
    let files: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.0.clone(), p.1.clone()])
        .collect();
    files
        .into_iter()
        .map(|f| {
            let r = find(&mut parent, &f);
            (f, r)
        })
        .collect()
}

/// The open-set threshold chosen by cross-validation over people: each person's pairs (a pair
/// belongs to its first photo's person) are scored at the best-F1 threshold calibrated on the
/// pairs that do not show that person at all, so no pair and no person is scored at a
/// threshold chosen on it.
fn people_cv(
    pairs: &[(String, String, bool)],
    best: &BTreeMap<String, Option<Face>>,
) -> Result<serde_json::Value, String> {
    let who = people(pairs);
    let mut folds: Vec<&String> = who.values().collect();
    folds.sort();
    folds.dedup();
    let score = |a: &str, b: &str| match (&best[a], &best[b]) {
        (Some(x), Some(y)) => -dist(&x.descriptor, &y.descriptor),
        _ => f32::NEG_INFINITY,
    };
    let (mut right, mut n, mut thresholds) = (0, 0, Vec::new());
    for p in &folds {
        let touches = |(a, b, _): &&(String, String, bool)| &who[a] == *p || &who[b] == *p;
        let (s, l): (Vec<f32>, Vec<bool>) = pairs
            .iter()
            .filter(|q| !touches(q))
            .map(|(a, b, same)| (score(a, b), *same))
            .unzip();
        let cal = twindex::eval::calibrate::calibrate_best_f1(&s, &l).map_err(|e| e.to_string())?;
        thresholds.push(-cal.threshold);
        for (a, b, same) in pairs.iter().filter(|(a, _, _)| &who[a] == *p) {
            right += (cal.accepts(score(a, b)) == *same) as usize;
            n += 1;
        }
    }
    thresholds.sort_by(f32::total_cmp);
    Ok(serde_json::json!({
        "people": folds.len(),
        "pairs": n,
        "pair_accuracy": right as f64 / n as f64,
        "threshold_min": thresholds.first(),
        "threshold_max": thresholds.last(),
    }))
}

fn main() -> ExitCode {
    match run() {
        Ok(v) => {
            println!("{v:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("face_photos: {e}");
            ExitCode::FAILURE
        }
    }
}
