//! `twindex serve` end to end: the real binary on 127.0.0.1 (a free port), answers equal to the
//! library's `Searcher` for the same queries, adds durable across SIGTERM and SIGKILL, 20+ kinds
//! of malformed requests all answered 4xx with a JSON error naming the field, the bearer token,
//! and the search page in headless Chromium.

use crate::data::vectors;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twindex::index::vecio::{write_npy, Matrix};
use twindex::query::{OpenOptions, Query, SearchOptions, Searcher};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/models/all-MiniLM-L6-v2"
);
pub const QQP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpora/pairs/qqp-10k.tsv"
);

/// Vectors in the raw-vector test index.
const N: usize = 400;
const DIM: usize = 16;
const SEED: u64 = 12;

/// An input from ../shared; a test that calls this is ignored by build.rs where it is absent
/// ([`crate::require_input`]).
fn require(what: &str) {
    crate::require_input(Path::new(what));
}

fn twindex_ok(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_twindex"))
        .args(args)
        .output()
        .expect("run twindex");
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A raw-vector index of N random vectors.
fn vector_index(root: &Path) -> PathBuf {
    let npy = root.join("x.npy");
    write_npy(
        &npy,
        &Matrix {
            rows: N,
            cols: DIM,
            data: vectors(SEED, N, DIM),
        },
    )
    .unwrap();
    let dir = root.join("vec");
    twindex_ok(&[
        "index",
        "build",
        "--vectors",
        npy.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    dir
}

/// A running `twindex serve`, stopped (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_twindex"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start twindex serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                l.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {:?}", log.lock().unwrap());
            }
        };
        let s = Server { child, addr, log };
        let t = Instant::now();
        while s.get("/healthz").0 != 200 {
            assert!(t.elapsed() < Duration::from_secs(30), "no /healthz");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        http(&self.addr, method, path, headers, body)
    }

    /// The address it listens on (`127.0.0.1:PORT`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.call("GET", path, &[], b"")
    }

    /// POST JSON; the status and the parsed answer.
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, _, b) = self.call(
            "POST",
            path,
            &["Content-Type: application/json"],
            body.to_string().as_bytes(),
        );
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    pub fn post_ok(&self, path: &str, body: &Value) -> Value {
        let (s, v) = self.post(path, body);
        assert_eq!(s, 200, "POST {path} {body}: {v}");
        v
    }

    /// SIGTERM; waits for a clean exit and returns the log.
    pub fn stop(mut self) -> Vec<String> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                let log = self.log.lock().unwrap().clone();
                assert!(st.success(), "server exited with {st}: {log:?}");
                return log;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection: status, raw head, body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // A server may answer (413) before reading a large body and close: ignore write errors.
    let _ = s.write_all(&bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..at]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = out[at + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

/// The server's hits equal the library's: same ids in order, same distances.
pub fn assert_same(server: &Value, lib: &twindex::query::Answer, what: &str) {
    let got = server["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {server}"));
    assert_eq!(got.len(), lib.results.len(), "{what}: {server}");
    for (g, w) in got.iter().zip(&lib.results) {
        assert_eq!(g["id"].as_u64(), Some(w.id), "{what}: {server}");
        assert_eq!(g["label"].as_str(), Some(w.label.as_str()), "{what}");
        assert_eq!(g["source"].as_str(), Some(w.source.as_str()), "{what}");
        assert_eq!(g["duplicate"].as_bool(), Some(w.duplicate), "{what}");
        let d = g["distance"].as_f64().unwrap();
        assert!(
            (d - w.distance as f64).abs() < 1e-5,
            "{what}: {d} vs {}",
            w.distance
        );
        assert!(g["similarity"].is_number());
    }
}

#[test]
fn serve_answers_like_the_library_and_keeps_acknowledged_adds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vector_index(tmp.path());
    let spec = format!("vec={}", dir.display());
    let qs = vectors(SEED + 1, 20, DIM);
    let opts = SearchOptions {
        k: 7,
        ..Default::default()
    };
    // The library's answers, before the server takes the writer lock.
    let want: Vec<_> = {
        let s = Searcher::open(&dir, &OpenOptions::default()).unwrap();
        let mut w: Vec<_> = qs
            .chunks(DIM)
            .map(|q| s.query(&Query::Vector(q), &opts).unwrap())
            .collect();
        w.push(s.query(&Query::Id(5), &opts).unwrap());
        w
    };

    let srv = Server::start(&["--index", &spec]);
    for (i, q) in qs.chunks(DIM).enumerate() {
        let got = srv.post_ok("/v1/indexes/vec/query", &json!({"vector": q, "k": 7}));
        assert_same(&got, &want[i], &format!("vector query {i}"));
    }
    let got = srv.post_ok("/v1/indexes/vec/query", &json!({"id": 5, "k": 7}));
    assert_same(&got, &want[20], "id query");
    assert_eq!(got["results"][0]["id"], 5);
    // The batch form: the same answers, in order.
    let batch: Vec<Value> = qs.chunks(DIM).map(|q| json!({ "vector": q })).collect();
    let got = srv.post_ok("/v1/indexes/vec/query", &json!({"queries": batch, "k": 7}));
    let answers = got["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 20);
    for (i, a) in answers.iter().enumerate() {
        assert_same(a, &want[i], &format!("batch query {i}"));
    }

    // Index listing and info.
    let (s, _, b) = srv.get("/v1/indexes");
    assert_eq!(s, 200);
    let list: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(list["indexes"][0]["name"], "vec");
    assert_eq!(list["indexes"][0]["items"], N);
    let (s, _, b) = srv.get("/v1/indexes/vec");
    assert_eq!(s, 200);
    let info: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(info["dim"], DIM);
    assert_eq!(info["encoder"], "vectors");
    assert!(info["metric"].is_string());
    assert_eq!(srv.get("/readyz").0, 200);
    let (s, _, b) = srv.get("/openapi.json");
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_slice(&b).unwrap();
    assert!(doc["paths"]["/v1/indexes/{name}/query"]["post"].is_object());
    assert!(doc["components"]["schemas"]["QueryRequest"]["properties"]["vector"].is_object());

    // Adds: acknowledged ids are found at distance 0; a delete hides its item.
    let new = vectors(SEED + 2, 3, DIM);
    let items: Vec<Value> = new
        .chunks(DIM)
        .enumerate()
        .map(|(i, v)| json!({"vector": v, "label": format!("new{i}")}))
        .collect();
    let ids: Vec<u64> = srv.post_ok("/v1/indexes/vec/items", &json!({ "items": items }))["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let one = srv.post_ok(
        "/v1/indexes/vec/items",
        &json!({"vector": &new[..DIM], "label": "single"}),
    );
    let single = one["ids"][0].as_u64().unwrap();
    for (i, v) in new.chunks(DIM).enumerate() {
        let got = srv.post_ok("/v1/indexes/vec/query", &json!({"vector": v, "k": 2}));
        let top: Vec<u64> = got["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect();
        assert!(
            top.contains(&ids[i]),
            "added item {} not found: {got}",
            ids[i]
        );
    }
    let (s, _, b) = srv.call(
        "DELETE",
        &format!("/v1/indexes/vec/items/{}", ids[2]),
        &[],
        b"",
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, _, _) = srv.call(
        "DELETE",
        &format!("/v1/indexes/vec/items/{}", ids[2]),
        &[],
        b"",
    );
    assert_eq!(s, 404, "deleting twice");
    // Verify: the claimed label's item is at distance 0.
    let v = srv.post_ok(
        "/v1/indexes/vec/verify",
        &json!({"vector": &new[DIM..2 * DIM], "label": "new1", "threshold": 0.01}),
    );
    assert_eq!(v["decision"], "accept", "{v}");
    assert_eq!(v["nearest_id"], ids[1]);
    let v = srv.post_ok(
        "/v1/indexes/vec/verify",
        &json!({"vector": &new[..DIM], "label": "new1", "threshold": 0.01}),
    );
    assert_eq!(v["decision"], "reject", "{v}");
    let (s, _, b) = srv.get("/metrics");
    assert_eq!(s, 200);
    let m = String::from_utf8_lossy(&b);
    assert!(m.contains("twindex_requests_total{route=\"/v1/indexes/{name}/query\",method=\"POST\",status=\"200\"}"), "{m}");
    assert!(m.contains("twindex_request_duration_seconds_bucket"), "{m}");
    assert!(
        m.contains(&format!("twindex_index_items{{index=\"vec\"}} {}", N + 3)),
        "{m}"
    );

    // SIGTERM: a clean stop that closes (checkpoints) the index; everything is there after.
    let log = srv.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("SIGTERM") && l.contains("closed vec")),
        "{log:?}"
    );
    let s = Searcher::open(&dir, &OpenOptions::default()).unwrap();
    assert_eq!(s.stats().items, N + 3);
    assert_eq!(s.stats().log_records, 0, "closed with a checkpoint");
    for &id in &[ids[0], ids[1], single] {
        assert!(s.index().unwrap().get(id).is_ok(), "item {id} lost");
    }
    assert!(
        s.index().unwrap().get(ids[2]).is_err(),
        "deleted item {} is back",
        ids[2]
    );
    drop(s);

    // SIGKILL right after acknowledged adds: every acknowledged id is there after a restart.
    let srv = Server::start(&["--index", &spec]);
    let more = vectors(SEED + 3, 10, DIM);
    let mut acked = Vec::new();
    for v in more.chunks(DIM) {
        acked.push(
            srv.post_ok("/v1/indexes/vec/items", &json!({"vector": v}))["ids"][0]
                .as_u64()
                .unwrap(),
        );
    }
    srv.kill();
    let srv = Server::start(&["--index", &spec]);
    for (id, v) in acked.iter().zip(more.chunks(DIM)) {
        let got = srv.post_ok("/v1/indexes/vec/query", &json!({"vector": v, "k": 1}));
        assert_eq!(
            got["results"][0]["id"].as_u64(),
            Some(*id),
            "acknowledged add lost: {got}"
        );
    }
    srv.stop();
}

#[test]
fn serve_refuses_malformed_requests_with_named_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vector_index(tmp.path());
    let spec = format!("vec={}", dir.display());
    let srv = Server::start(&["--index", &spec, "--max-body-bytes", "65536"]);
    let good = vectors(SEED + 4, 1, DIM);
    let json_h = ["Content-Type: application/json"];
    let q = "/v1/indexes/vec/query";
    let big = format!("{{\"text\": \"{}\"}}", "a".repeat(70_000));
    let vec3 = json!({"vector": [1.0, 2.0, 3.0]}).to_string();
    // 1e39 overflows f32: an infinite component.
    let huge = format!("{{\"vector\": [1e39{}]}}", ", 0".repeat(DIM - 1));
    let many: Vec<Value> = (0..300).map(|_| json!({"id": 1})).collect();
    let many = json!({ "queries": many }).to_string();
    // (method, path, headers, body, status, code, field)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [&'a str],
        String,
        u16,
        &'a str,
        Option<&'a str>,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("POST", q, &json_h, "{\"vector\": [1, 2".into(), 400, "malformed_json", Some("body")),
        ("POST", q, &json_h, "".into(), 400, "malformed_json", Some("body")),
        ("POST", q, &json_h, "[1, 2, 3]".into(), 400, "invalid_type", Some("body")),
        ("POST", q, &json_h, "\"text\"".into(), 400, "invalid_type", Some("body")),
        ("POST", q, &json_h, "{}".into(), 400, "missing_field", Some("body")),
        ("POST", q, &json_h, json!({"vector": good, "k": "ten"}).to_string(), 400, "invalid_type", Some("k")),
        ("POST", q, &json_h, json!({"vector": good, "k": 0}).to_string(), 400, "invalid_value", Some("k")),
        ("POST", q, &json_h, json!({"vector": good, "k": -3}).to_string(), 400, "invalid_type", Some("k")),
        ("POST", q, &json_h, json!({"vector": good, "k": 1e9}).to_string(), 400, "invalid_type", Some("k")),
        ("POST", q, &json_h, json!({"vector": good, "ef": 0}).to_string(), 400, "invalid_value", Some("ef")),
        ("POST", q, &json_h, json!({"vector": good, "threshold": "x"}).to_string(), 400, "invalid_type", Some("threshold")),
        ("POST", q, &json_h, json!({"vector": good, "label": 7}).to_string(), 400, "invalid_type", Some("label")),
        ("POST", q, &json_h, json!({"vector": "1,2,3"}).to_string(), 400, "invalid_type", Some("vector")),
        ("POST", q, &json_h, json!({"vector": [1, "a"]}).to_string(), 400, "invalid_type", Some("vector")),
        ("POST", q, &json_h, vec3.clone(), 400, "dimension_mismatch", Some("vector")),
        ("POST", q, &json_h, json!({"vector": []}).to_string(), 400, "empty", Some("vector")),
        ("POST", q, &json_h, json!({"vector": good, "id": 3}).to_string(), 400, "invalid_value", Some("body")),
        ("POST", q, &json_h, json!({"vector": good, "kk": 3}).to_string(), 400, "unknown_field", Some("kk")),
        ("POST", q, &json_h, json!({"text": "what is this"}).to_string(), 400, "invalid_value", Some("text")),
        ("POST", q, &json_h, json!({"text": "   "}).to_string(), 400, "empty", Some("text")),
        ("POST", q, &json_h, json!({"image": "not base64 !!"}).to_string(), 400, "bad_image", Some("image")),
        ("POST", q, &json_h, json!({"id": 123456789}).to_string(), 404, "unknown_id", Some("id")),
        ("POST", q, &json_h, json!({"id": -1}).to_string(), 400, "invalid_type", Some("id")),
        ("POST", q, &json_h, json!({"queries": []}).to_string(), 400, "empty", Some("queries")),
        ("POST", q, &json_h, json!({"queries": {"id": 1}}).to_string(), 400, "invalid_type", Some("queries")),
        ("POST", q, &json_h, json!({"queries": [{"id": 1}, {"vector": [1.0]}]}).to_string(), 400, "dimension_mismatch", Some("queries[1].vector")),
        ("POST", q, &json_h, json!({"queries": [{"id": 1}, 5]}).to_string(), 400, "invalid_type", Some("queries[1]")),
        ("POST", q, &json_h, many, 400, "too_large", Some("queries")),
        ("POST", q, &json_h, big, 413, "payload_too_large", None),
        ("POST", q, &["Content-Type: text/plain"], json!({"id": 1}).to_string(), 415, "unsupported_media_type", None),
        ("POST", "/v1/indexes/nope/query", &json_h, json!({"id": 1}).to_string(), 404, "unknown_index", None),
        ("POST", "/v1/indexes/..%2F..%2Fetc/query", &json_h, json!({"id": 1}).to_string(), 404, "unknown_index", None),
        ("GET", q, &[], String::new(), 405, "method_not_allowed", None),
        ("GET", "/v2/whatever", &[], String::new(), 404, "not_found", None),
        ("DELETE", "/v1/indexes/vec/items/abc", &[], String::new(), 400, "invalid_value", Some("id")),
        ("DELETE", "/v1/indexes/vec/items/99999999", &[], String::new(), 404, "unknown_id", None),
        ("POST", "/v1/indexes/vec/items", &json_h, json!({"id": 3}).to_string(), 400, "invalid_value", Some("id")),
        ("POST", "/v1/indexes/vec/items", &json_h, json!({"items": [{"vector": good}, {"vector": [1.0, 2.0]}]}).to_string(), 400, "dimension_mismatch", Some("items[1].vector")),
        ("POST", "/v1/indexes/vec/items", &json_h, json!({"vector": good, "label": ["a"]}).to_string(), 400, "invalid_type", Some("label")),
        ("POST", "/v1/indexes/vec/items", &json_h, huge.clone(), 400, "invalid_value", Some("vector")),
        ("POST", "/v1/indexes/vec/verify", &json_h, json!({"vector": good}).to_string(), 400, "missing_field", Some("label")),
        ("POST", "/v1/indexes/vec/verify", &json_h, json!({"vector": good, "label": "nobody", "threshold": 1.0}).to_string(), 400, "invalid_value", None),
        ("POST", "/v1/indexes/vec/verify", &json_h, json!({"vector": good, "label": "x", "aggregate": "max"}).to_string(), 400, "invalid_type", Some("aggregate")),
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for (method, path, headers, body, status, code, field) in &cases {
        let (s, head, b) = srv.call(method, path, headers, body.as_bytes());
        let what = format!("{method} {path} {}", &body[..body.len().min(120)]);
        assert_eq!(s, *status, "{what}: {}", String::from_utf8_lossy(&b));
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{what}: {head}"
        );
        let v: Value =
            serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
        assert_eq!(v["error"]["code"], *code, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(!msg.is_empty(), "{what}: {v}");
        assert!(
            !msg.contains(dir.to_str().unwrap()),
            "{what}: the server's paths stay private: {v}"
        );
        if let Some(f) = field {
            assert_eq!(v["error"]["field"].as_str(), Some(*f), "{what}: {v}");
        }
        kinds.insert((*code, *field));
    }
    assert!(
        kinds.len() >= 20,
        "only {} kinds of malformed request",
        kinds.len()
    );
    // Half a UTF-16 surrogate pair in a string is named as such (serde_json's own words were
    // "unexpected end of hex escape").
    for body in [
        r#"{"id": 1, "label": "\ud800 x"}"#,
        r#"{"id": 1, "label": "\udc00"}"#,
    ] {
        let (s, _, b) = srv.call("POST", q, &json_h, body.as_bytes());
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(s, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("surrogate pair") && msg.contains("column"),
            "{body}: {v}"
        );
    }
    // Raw garbage on the socket: an HTTP 400, and the server goes on.
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.write_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty() || String::from_utf8_lossy(&out).starts_with("HTTP/1.1 4"));
    // Nothing was half-applied: no item was added by the refused adds; still serving.
    let (_, _, b) = srv.get("/v1/indexes/vec");
    let info: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(info["items"], N, "a refused add left items behind");
    let got = srv.post_ok(q, &json!({"vector": good, "k": 3}));
    assert_eq!(got["results"].as_array().unwrap().len(), 3);
    srv.stop();
}

#[test]
fn serve_requires_the_bearer_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vector_index(tmp.path());
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let spec = format!("vec={}", dir.display());
    let srv = Server::start(&[
        "--index",
        &spec,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let body = json!({"id": 1, "k": 2}).to_string();
    let q = "/v1/indexes/vec/query";
    let ct = "Content-Type: application/json";
    for headers in [
        vec![ct],
        vec![ct, "Authorization: Bearer wrong"],
        vec![ct, "Authorization: s3cret-token"],
    ] {
        let (s, head, b) = srv.call("POST", q, &headers, body.as_bytes());
        assert_eq!(s, 401, "{headers:?}");
        assert!(
            head.contains("www-authenticate") || head.contains("WWW-Authenticate"),
            "{head}"
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    assert_eq!(srv.get("/v1/indexes").0, 401);
    assert_eq!(srv.get("/metrics").0, 401);
    assert_eq!(srv.get("/healthz").0, 200);
    let (s, _, b) = srv.call(
        "POST",
        q,
        &[ct, "Authorization: Bearer s3cret-token"],
        body.as_bytes(),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    srv.stop();
}

/// A text file of `n` distinct questions from the QQP pairs, and `m` others not in it.
pub fn questions(n: usize, m: usize) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(QQP).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for line in text.lines().skip(1) {
        for q in line.split('\t').take(2) {
            let q = q.trim();
            if !q.is_empty() && seen.insert(q.to_string()) {
                all.push(q.to_string());
            }
        }
        if all.len() >= n + m {
            break;
        }
    }
    let rest = all.split_off(n);
    (all, rest)
}

#[test]
#[cfg_attr(
    not(all(has_minilm, has_qqp)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and corpora/pairs/qqp-10k.tsv"
)]
fn serve_text_index_batches_concurrent_queries_like_the_library() {
    require(MODEL);
    require(QQP);
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, others) = questions(300, 24);
    let file = tmp.path().join("q.txt");
    std::fs::write(&file, corpus.join("\n")).unwrap();
    let dir = tmp.path().join("qqp");
    twindex_ok(&[
        "index",
        "build",
        "--model",
        MODEL,
        "--text",
        file.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    let opts = SearchOptions {
        k: 5,
        ..Default::default()
    };
    let want: Vec<_> = {
        let s = Searcher::open(&dir, &OpenOptions::default()).unwrap();
        others
            .iter()
            .map(|t| s.query(&Query::Text(t), &opts).unwrap())
            .collect()
    };
    let spec = format!("qqp={}", dir.display());
    let srv = Server::start(&["--index", &spec]);
    // 24 queries from 8 threads at once: the queue embeds them in shared forward passes.
    let addr = srv.addr.clone();
    let got: Vec<(usize, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let (others, addr) = (&others, &addr);
                sc.spawn(move || {
                    (t..others.len())
                        .step_by(8)
                        .map(|i| {
                            let body = json!({"text": others[i], "k": 5}).to_string();
                            let (s, _, b) = http(
                                addr,
                                "POST",
                                "/v1/indexes/qqp/query",
                                &["Content-Type: application/json"],
                                body.as_bytes(),
                            );
                            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
                            (i, serde_json::from_slice(&b).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for (i, g) in &got {
        // Batched and single encodes agree to float rounding: compare ids where distances are
        // not tied, and distances to 1e-4.
        let (gs, ws) = (g["results"].as_array().unwrap(), &want[*i].results);
        assert_eq!(gs.len(), ws.len());
        for (r, (a, b)) in gs.iter().zip(ws).enumerate() {
            let d = a["distance"].as_f64().unwrap();
            assert!(
                (d - b.distance as f64).abs() < 1e-4,
                "query {i} rank {r}: {d} vs {}",
                b.distance
            );
            let tied = ws
                .iter()
                .filter(|w| (w.distance - b.distance).abs() < 1e-4)
                .count()
                > 1;
            if !tied {
                assert_eq!(a["id"].as_u64(), Some(b.id), "query {i} rank {r}: {g}");
            }
        }
    }
    // The batch form with texts, and an add by text found by its own text.
    let qs: Vec<Value> = others[..4].iter().map(|t| json!({ "text": t })).collect();
    let b = srv.post_ok("/v1/indexes/qqp/query", &json!({"queries": qs, "k": 5}));
    assert_eq!(
        b["answers"][3]["results"][0]["id"].as_u64(),
        Some(want[3].results[0].id)
    );
    let text = "How do I serve a twindex index over HTTP?";
    let id = srv.post_ok(
        "/v1/indexes/qqp/items",
        &json!({"text": text, "label": "howto"}),
    )["ids"][0]
        .as_u64()
        .unwrap();
    let top = srv.post_ok("/v1/indexes/qqp/query", &json!({"text": text, "k": 1}));
    assert_eq!(top["results"][0]["id"].as_u64(), Some(id), "{top}");
    assert_eq!(top["results"][0]["source"], text);
    assert_eq!(top["results"][0]["label"], "howto");
    let (s, v) = srv.post("/v1/indexes/qqp/query", &json!({"vector": [0.5, 1.0]}));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("dimension_mismatch"))
    );
    let (_, _, m) = srv.get("/metrics");
    let m = String::from_utf8_lossy(&m).to_string();
    assert!(m.contains("twindex_batch_size_count{index=\"qqp\"}"), "{m}");
    srv.stop();
    let s = Searcher::open(&dir, &OpenOptions::default()).unwrap();
    assert_eq!(s.stats().items, corpus.len() + 1);
    drop(s);

    // A queue of one text: concurrent requests beyond it are refused at once with 503 and
    // Retry-After, the others answered; the server goes on.
    let srv = Server::start(&[
        "--index",
        &spec,
        "--queue-capacity",
        "1",
        "--max-batch",
        "1",
    ]);
    let addr = srv.addr.clone();
    let answers: Vec<(u16, String, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..12)
            .map(|t| {
                let (others, addr) = (&others, &addr);
                sc.spawn(move || {
                    (0..3)
                        .map(|r| {
                            let qs: Vec<Value> = (0..4)
                                .map(|j| json!({ "text": others[(t * 3 + r + j) % others.len()] }))
                                .collect();
                            let body = json!({ "queries": qs }).to_string();
                            let (s, head, b) = http(
                                addr,
                                "POST",
                                "/v1/indexes/qqp/query",
                                &["Content-Type: application/json"],
                                body.as_bytes(),
                            );
                            (s, head, serde_json::from_slice(&b).unwrap_or(Value::Null))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(
        answers.iter().all(|(s, _, _)| *s == 200 || *s == 503),
        "{answers:?}"
    );
    assert!(answers.iter().any(|(s, _, _)| *s == 200));
    assert!(
        !refused.is_empty(),
        "36 concurrent requests against a queue of 1: none refused"
    );
    for (_, head, v) in &refused {
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
        assert_eq!(v["error"]["code"], "overloaded", "{v}");
    }
    let (_, _, m) = srv.get("/metrics");
    let m = String::from_utf8_lossy(&m).to_string();
    assert!(
        m.contains("twindex_queue_refused_total{index=\"qqp\"}"),
        "{m}"
    );
    srv.post_ok("/v1/indexes/qqp/query", &json!({"text": others[0], "k": 1}));
    srv.stop();
}

/// Headless Chromium, when installed (under CI it must be).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|b| dirs.iter().map(move |d| d.join(b)))
        .find(|p| p.is_file())
}

fn chromium_run(bin: &Path, profile: &Path, extra: &[&str], url: &str) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=8000",
            "--window-size=1100,760",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Headless Chromium (the tests that call this are ignored by build.rs's `has_chromium` where it
/// is not on PATH).
fn chromium_bin() -> PathBuf {
    chromium()
        .expect("chromium on PATH (build.rs saw it or CI is set): apt-get install -y chromium")
}

/// `twindex serve` over `specs` (`NAME=DIR`); its page loads nothing from elsewhere.
fn page_server(specs: &[String]) -> Server {
    let mut args = Vec::new();
    for s in specs {
        args.extend(["--index", s.as_str()]);
    }
    let srv = Server::start(&args);
    let (s, head, page) = srv.get("/");
    assert_eq!(s, 200);
    assert!(head.to_ascii_lowercase().contains("text/html"));
    let page = String::from_utf8_lossy(&page);
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    srv
}

#[test]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs chromium on PATH: apt-get install -y chromium"
)]
fn serve_search_page_in_headless_chromium() {
    let bin = chromium_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = vector_index(tmp.path());
    let srv = page_server(&[format!("vec={}", dir.display())]);

    // Load the page, query item 7 by id, read the result rows from the DOM.
    let dom = chromium_run(
        &bin,
        &tmp.path().join("p1"),
        &["--dump-dom"],
        &format!("http://{}/?index=vec&id=7&k=5", srv.addr),
    );
    let rows = dom.matches("class=\"hit").count();
    assert_eq!(rows, 5, "expected 5 result rows in the DOM: {dom}");
    assert!(
        dom.contains("data-id=\"7\""),
        "item 7 is its own nearest neighbour: {dom}"
    );
    assert!(dom.contains("5 neighbours in"), "{dom}");
    srv.stop();
}

#[test]
#[cfg_attr(
    not(all(has_chromium, has_minilm, has_qqp)),
    ignore = "needs chromium on PATH (apt-get install -y chromium) and ../shared's MiniLM and QQP"
)]
fn serve_text_search_page_in_headless_chromium() {
    let bin = chromium_bin();
    require(MODEL);
    require(QQP);
    let tmp = tempfile::tempdir().unwrap();
    let dir = vector_index(tmp.path());
    let (corpus, _) = questions(300, 0);
    let file = tmp.path().join("q.txt");
    std::fs::write(&file, corpus.join("\n")).unwrap();
    let tdir = tmp.path().join("qqp");
    twindex_ok(&[
        "index",
        "build",
        "--model",
        MODEL,
        "--text",
        file.to_str().unwrap(),
        "--out",
        tdir.to_str().unwrap(),
    ]);
    let srv = page_server(&[
        format!("vec={}", dir.display()),
        format!("qqp={}", tdir.display()),
    ]);
    let url = format!(
        "http://{}/?index=qqp&q={}&k=5",
        srv.addr, "How%20can%20I%20learn%20to%20invest%20in%20the%20share%20market%3F"
    );
    let dom = chromium_run(&bin, &tmp.path().join("p2"), &["--dump-dom"], &url);
    assert_eq!(dom.matches("class=\"hit").count(), 5, "{dom}");
    assert!(dom.contains("share market"), "{dom}");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium_run(
        &bin,
        &tmp.path().join("p3"),
        &[&format!("--screenshot={}", shot.display())],
        &url,
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("screenshot: {}", shot.display());
    srv.stop();
}

#[test]
fn serve_finishes_in_flight_requests_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = vector_index(tmp.path());
    let spec = format!("vec={}", dir.display());
    let srv = Server::start(&["--index", &spec]);
    let addr = srv.addr.clone();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let new = vectors(SEED + 5, 400, DIM);
    // 4 clients add items one by one until the server goes away; every 200 is remembered.
    let acked: Vec<(u64, Vec<f32>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let (addr, stop, new) = (&addr, &stop, &new);
                sc.spawn(move || {
                    let mut mine = Vec::new();
                    for v in new.chunks(DIM).skip(t).step_by(4) {
                        let body = json!({ "vector": v }).to_string();
                        let Ok(mut s) = TcpStream::connect(addr) else { break };
                        let req = format!("POST /v1/indexes/vec/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        if s.write_all(req.as_bytes()).is_err() {
                            break;
                        }
                        let mut out = Vec::new();
                        let _ = s.read_to_end(&mut out);
                        let text = String::from_utf8_lossy(&out).to_string();
                        if text.starts_with("HTTP/1.1 200") {
                            let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
                            let j: Value = serde_json::from_str(body).unwrap();
                            mine.push((j["ids"][0].as_u64().unwrap(), v.to_vec()));
                        } else if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        } else {
                            panic!("an add failed before the stop: {text}");
                        }
                    }
                    mine
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let log = Server::stop(srv);
        assert!(
            log.iter()
                .any(|l| l.contains("in-flight requests finished")),
            "{log:?}"
        );
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(!acked.is_empty(), "no add was answered before the stop");
    let s = Searcher::open(&dir, &OpenOptions::default()).unwrap();
    assert_eq!(s.stats().log_records, 0, "closed with a checkpoint");
    let idx = s.index().unwrap();
    for (id, v) in &acked {
        let got = idx
            .get(*id)
            .unwrap_or_else(|_| panic!("acknowledged item {id} lost"));
        let d: f32 = got.vector.iter().zip(v).map(|(a, b)| (a - b).abs()).sum();
        assert!(
            d < 1e-3 || idx.metric().name() != "l2",
            "item {id} holds another vector"
        );
    }
}

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpora/mnist");
const LENET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpora/encoders/mnist-lenet");

/// MNIST test digit `i` as a PGM file's bytes, and its label.
fn digit_pgm(images: &twindex::corpus::idx::IdxArray, labels: &[u32], i: usize) -> (Vec<u8>, u32) {
    let mut b = b"P5\n28 28\n255\n".to_vec();
    b.extend_from_slice(&images.data[i * 784..(i + 1) * 784]);
    (b, labels[i])
}

#[test]
fn serve_image_index_answers_base64_images_like_the_library() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let images =
        twindex::corpus::idx::read_images(&Path::new(MNIST).join("t10k-images-idx3-ubyte.gz"))
            .unwrap();
    let labels =
        twindex::corpus::idx::read_labels(&Path::new(MNIST).join("t10k-labels-idx1-ubyte.gz"))
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("digits");
    for i in 0..80 {
        let (pgm, label) = digit_pgm(&images, &labels, i);
        let d = root.join(label.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{i}.pgm")), pgm).unwrap();
    }
    let dir = tmp.path().join("img");
    twindex_ok(&[
        "index",
        "build",
        "--model",
        LENET,
        "--corpus",
        root.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    let queries: Vec<(Vec<u8>, u32)> = (100..104).map(|i| digit_pgm(&images, &labels, i)).collect();
    let opts = SearchOptions {
        k: 5,
        ..Default::default()
    };
    let want: Vec<_> = {
        let s = Searcher::open(&dir, &OpenOptions::default()).unwrap();
        queries
            .iter()
            .map(|(b, _)| s.query(&Query::ImageBytes(b, "q.pgm"), &opts).unwrap())
            .collect()
    };
    let spec = format!("img={}", dir.display());
    let srv = Server::start(&["--index", &spec]);
    for (i, (b, _)) in queries.iter().enumerate() {
        let got = srv.post_ok(
            "/v1/indexes/img/query",
            &json!({"image": b64(b), "image_name": "q.pgm", "k": 5}),
        );
        assert_same(&got, &want[i], &format!("image query {i}"));
    }
    // The batch form, one entry as a data: URL.
    let qs = json!([{"image": b64(&queries[0].0)}, {"image": format!("data:image/x-portable-graymap;base64,{}", b64(&queries[1].0))}]);
    let got = srv.post_ok("/v1/indexes/img/query", &json!({"queries": qs, "k": 5}));
    assert_same(&got["answers"][0], &want[0], "batch image 0");
    assert_same(&got["answers"][1], &want[1], "batch image 1 (data URL)");
    // Base64 of something that is not an image: 400 naming the field.
    let (s, v) = srv.post(
        "/v1/indexes/img/query",
        &json!({"queries": [{"image": b64(&queries[0].0)}, {"image": b64(b"hello world")}]}),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (400, Some("bad_image"), Some("queries[1].image")),
        "{v}"
    );
    let (s, v) = srv.post("/v1/indexes/img/query", &json!({"text": "a seven"}));
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("text")),
        "{v}"
    );
    // Enrol a new digit under a label, find it, verify it.
    let (b, label) = digit_pgm(&images, &labels, 200);
    let id = srv.post_ok(
        "/v1/indexes/img/items",
        &json!({"image": b64(&b), "image_name": "new.pgm", "label": format!("new{label}")}),
    )["ids"][0]
        .as_u64()
        .unwrap();
    let top = srv.post_ok("/v1/indexes/img/query", &json!({"image": b64(&b), "k": 1}));
    assert_eq!(top["results"][0]["id"].as_u64(), Some(id), "{top}");
    assert_eq!(top["results"][0]["source"], "new.pgm");
    assert!(top["results"][0]["distance"].as_f64().unwrap() < 1e-5);
    let v = srv.post_ok(
        "/v1/indexes/img/verify",
        &json!({"image": b64(&b), "label": format!("new{label}"), "threshold": 0.01}),
    );
    assert_eq!(
        (v["decision"].as_str(), v["nearest_id"].as_u64()),
        (Some("accept"), Some(id)),
        "{v}"
    );
    srv.stop();
}

/// A face roll served: a photo is answered per face (box, score, neighbours, identity) as the
/// library answers it, `/verify` per face, and enrolling a photo of two people is a 400 that
/// names the photo and the count, with nothing added.
#[test]
#[cfg_attr(
    not(has_dlib_detector),
    ignore = "needs dlib's models (bash benches/peers/fetch_dlib_models.sh) and ../shared/corpora/faces-photos"
)]
fn serve_face_roll_answers_each_face_like_the_library() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let tmp = tempfile::tempdir().unwrap();
    let (_, roll) = super::face_photos::roll(tmp.path());
    let photo = super::face_photos::examples().join("examples/two_people.jpg");
    let bytes = std::fs::read(&photo).unwrap();
    let want = {
        let s = Searcher::open(&roll, &OpenOptions::default()).unwrap();
        let opts = SearchOptions {
            k: 3,
            ..Default::default()
        };
        s.query_faces(&Query::ImageBytes(&bytes, "two.jpg"), &opts)
            .unwrap()
            .unwrap()
    };
    assert_eq!(want.len(), 2);
    let srv = Server::start(&["--index", &format!("roll={}", roll.display())]);
    let got = srv.post_ok(
        "/v1/indexes/roll/query",
        &json!({"image": b64(&bytes), "image_name": "two.jpg", "k": 3}),
    );
    let faces = got["faces"].as_array().unwrap();
    assert_eq!(faces.len(), want.len(), "{got}");
    for (g, w) in faces.iter().zip(&want) {
        assert_eq!(g["box"], json!(w.face.rect), "{got}");
        assert_eq!(g["identity"], json!(w.answer.identity), "{got}");
        let ids: Vec<u64> = g["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect();
        let wids: Vec<u64> = w.answer.results.iter().map(|h| h.id).collect();
        assert_eq!(ids, wids, "{got}");
    }
    let v = srv.post_ok(
        "/v1/indexes/roll/verify",
        &json!({"image": b64(&bytes), "label": "biden"}),
    );
    assert_eq!(
        (&v["accepted"], &v["label"]),
        (&json!(true), &json!("biden")),
        "{v}"
    );
    let acc: Vec<bool> = v["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["accepted"].as_bool().unwrap())
        .collect();
    assert_eq!(acc.iter().filter(|a| **a).count(), 1, "{v}");
    let (st, e) = srv.post(
        "/v1/indexes/roll/items",
        &json!({"image": b64(&bytes), "image_name": "two.jpg", "label": "pair"}),
    );
    assert_eq!(st, 400, "{e}");
    let msg = e["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("two.jpg: 2 faces found"), "{e}");
    let (_, _, b) = srv.get("/v1/indexes/roll");
    let idx: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(idx["items"], 3, "{idx}");
    srv.stop();
}
