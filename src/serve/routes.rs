//! HTTP routes -> [`Searcher`] calls (after text-embeddings-inference's `http/server.rs`).
//! Handlers parse and check the request ([`super::request`]), send texts and images through the
//! index's batching queue, run searches and writes on the blocking pool, and translate the
//! answer (or the library's error) to JSON.

use super::error::ApiError;
use super::metrics::Metrics;
use super::queue::{EmbedQueue, Refused};
use super::request::{parse_json, AddRequest, Content, QueryRequest, VerifyRequest};
use super::{openapi, Limits};
use crate::index::Item;
use crate::query::{Answer, Searcher};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The search page (no CDN, no build step).
const PAGE: &str = include_str!("page.html");

/// One served index.
pub struct IndexHandle {
    pub name: String,
    pub searcher: Arc<Searcher>,
    /// The batching queue in front of its encoder (`None` for an index of raw vectors).
    pub queue: Option<EmbedQueue>,
    pub writable: bool,
}

/// What every handler shares.
pub struct AppState {
    pub indexes: BTreeMap<String, IndexHandle>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// sha256 of the bearer token, when one is required.
    pub token_digest: Option<[u8; 32]>,
    /// Set on SIGTERM/SIGINT: `/readyz` answers 503 and new embeds are refused.
    pub shutting_down: AtomicBool,
}

impl AppState {
    fn index(&self, name: &str) -> Result<&IndexHandle, ApiError> {
        self.indexes.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.indexes.keys().map(String::as_str).collect();
            ApiError::not_found(
                "unknown_index",
                format!(
                    "no index named {:?} is served (served: {})",
                    crate::query::shorten(name, 64),
                    names.join(", ")
                ),
            )
        })
    }
}

type St = State<Arc<AppState>>;

/// The router: the JSON API under `/v1` (behind the token when one is set), health, metrics,
/// the OpenAPI document and the page.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/indexes", get(list_indexes))
        .route("/v1/indexes/{name}", get(index_info))
        .route("/v1/indexes/{name}/query", post(query))
        .route("/v1/indexes/{name}/items", post(add_items))
        .route("/v1/indexes/{name}/items/{id}", delete(delete_item))
        .route("/v1/indexes/{name}/verify", post(verify))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_doc))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

// ---- middleware ----

/// Count and time every answer by route (the matched pattern, never the raw path).
async fn record(State(st): St, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let t = Instant::now();
    let r = next.run(req).await;
    st.metrics.request(
        &route,
        &method,
        r.status().as_u16(),
        t.elapsed().as_secs_f64(),
    );
    r
}

/// Require `Authorization: Bearer TOKEN` when a token is set (compared in constant time, as
/// sha256 digests so that the length leaks nothing either).
async fn auth(State(st): St, req: Request, next: Next) -> Response {
    let Some(want) = &st.token_digest else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Sha256::digest(t.trim().as_bytes()));
    let ok = given.is_some_and(|g| {
        g.iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (send Authorization: Bearer TOKEN)",
        )
        .into_response()
    }
}

// ---- extractors ----

/// A JSON body: content type checked, size limited, read within the request timeout (a body
/// shorter than its `Content-Length`, or a client that stalls, gets 408 and the connection is
/// closed), parsed with errors naming the place.
pub struct JsonBody(pub Value);

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            if !ct.contains("json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("content-type {ct:?}: send application/json"),
                ));
            }
        }
        let limit = state.limits.request_timeout;
        let read = tokio::time::timeout(limit, Bytes::from_request(req, state)).await;
        let read = read.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "body: the request body did not arrive within {} ms (shorter than its \
                     Content-Length?)",
                    limit.as_millis()
                ),
            )
        })?;
        let bytes = read.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "body: the request body is larger than the server's limit".to_string(),
                )
            } else {
                ApiError::new(e.status(), "bad_body", format!("body: {}", e.body_text()))
            }
        })?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

/// Path parameters, refused with a JSON error.
pub struct PathArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| PathArgs(t))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))
    }
}

// ---- helpers ----

/// Run `f` on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// `fut`, or 503 when it takes longer than the request timeout.
async fn timed<T>(
    st: &AppState,
    fut: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(st.limits.request_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::unavailable(
            "timeout",
            format!(
                "not answered within {} ms; try again later",
                st.limits.request_timeout.as_millis()
            ),
            1,
        )),
    }
}

/// The field that carried content `i` of a request (`text`, or `queries[3].text`).
fn field_of(list: Option<&str>, i: usize, c: &Content) -> String {
    match list {
        Some(l) => format!("{l}[{i}].{}", c.field()),
        None => c.field().to_string(),
    }
}

/// The library's messages name the index directory; a client knows the index by its name.
fn scrub(h: &IndexHandle, mut e: ApiError) -> ApiError {
    let dir = h.searcher.dir().display().to_string();
    if !dir.is_empty() {
        e.message = e.message.replace(&dir, &format!("index {}", h.name));
    }
    e
}

/// Embed `contents`: texts and images through the index's batching queue, vectors and ids
/// (checked: dimension, finite, live id) on the blocking pool.
async fn embed(
    st: &AppState,
    h: &IndexHandle,
    contents: Vec<Content>,
    list: Option<&'static str>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let kind = h.searcher.encoder().kind();
    for (i, c) in contents.iter().enumerate() {
        let fits = match c {
            Content::Text(_) => kind == "text",
            Content::Image { .. } => kind == "image",
            Content::Vector(_) | Content::Id(_) => true,
        };
        if !fits {
            let hint = match kind {
                "text" => "it is a text index: query it with a text, a vector or an id",
                "image" => "it is an image index: query it with an image, a vector or an id",
                _ => "it is an index of raw vectors (no encoder): query it with a vector or an id",
            };
            return Err(ApiError::field(
                "invalid_value",
                field_of(list, i, c),
                format!("{} cannot be embedded here; {hint}", c.field()),
            ));
        }
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; contents.len()];
    type Positioned = Vec<(usize, Content)>;
    let (enc, direct): (Positioned, Positioned) = contents
        .into_iter()
        .enumerate()
        .partition(|(_, c)| c.needs_encoder());
    if !direct.is_empty() {
        let s = h.searcher.clone();
        let vs = blocking(move || {
            direct
                .iter()
                .map(|(i, c)| {
                    s.embed(&c.as_query())
                        .map(|v| (*i, v))
                        .map_err(|e| ApiError::from(e).at(field_of(list, *i, c)))
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await?;
        for (i, v) in vs {
            out[i] = Some(v);
        }
    }
    if !enc.is_empty() {
        if st.shutting_down.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable(
                "shutting_down",
                "the server is stopping",
                1,
            ));
        }
        let queue = h
            .queue
            .as_ref()
            .expect("an index with an encoder has a queue");
        let (at, contents): (Vec<usize>, Vec<Content>) = enc.into_iter().unzip();
        let fields: Vec<String> = at
            .iter()
            .zip(&contents)
            .map(|(i, c)| field_of(list, *i, c))
            .collect();
        let rx = queue.submit(contents).map_err(|r| match r {
            Refused::Full => {
                st.metrics.refused(&h.name);
                ApiError::unavailable(
                    "overloaded",
                    "the embedding queue is full; try again shortly",
                    1,
                )
            }
            Refused::Closed => ApiError::unavailable("shutting_down", "the server is stopping", 1),
        })?;
        let vs = rx
            .await
            .map_err(|_| ApiError::internal("the embedding worker stopped"))?
            .map_err(|(p, e)| ApiError::from(e).at(fields[p].clone()))?;
        for (i, v) in at.into_iter().zip(vs) {
            out[i] = Some(v);
        }
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("every content embedded"))
        .collect())
}

/// One answer as `query --json` prints it.
fn answer_json(what: String, a: Answer) -> Value {
    let mut j = json!({
        "query": what,
        "threshold": a.threshold,
        "results": a.results,
    });
    if let Some(id) = a.identity {
        j["identity"] = json!(id);
    }
    j
}

fn index_json(name: &str, h: &IndexHandle) -> Value {
    let s = h.searcher.stats();
    json!({
        "name": name,
        "items": s.items,
        "dim": s.dim,
        "metric": s.metric,
        "encoder": s.encoder,
        "threshold": s.threshold,
        "backend": s.backend,
        "generation": s.generation,
        "labels": h.searcher.labels().ok().map(|l| l.len()),
        "log_records": s.log_records,
        "writable": h.writable,
    })
}

// ---- handlers ----

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(st): St) -> Response {
    if st.shutting_down.load(Ordering::Relaxed) {
        ApiError::unavailable("shutting_down", "the server is stopping", 1).into_response()
    } else {
        Json(json!({"status": "ready", "indexes": st.indexes.keys().collect::<Vec<_>>()}))
            .into_response()
    }
}

async fn metrics(State(st): St) -> Response {
    let sizes: Vec<(String, usize)> = st
        .indexes
        .iter()
        .map(|(n, h)| (n.clone(), h.searcher.len()))
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        st.metrics.render(&sizes),
    )
        .into_response()
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route; see /openapi.json for the API")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on this route; see /openapi.json"),
    )
}

async fn list_indexes(State(st): St) -> Json<Value> {
    let list: Vec<Value> = st.indexes.iter().map(|(n, h)| index_json(n, h)).collect();
    Json(json!({ "indexes": list }))
}

async fn index_info(
    State(st): St,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<Value>, ApiError> {
    let h = st.index(&name)?;
    Ok(Json(index_json(&name, h)))
}

async fn query(
    State(st): St,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let req = QueryRequest::parse(&body, &st.limits)?;
    let h = st.index(&name)?;
    let what: Vec<String> = req
        .queries
        .iter()
        .map(|c| c.as_query().describe())
        .collect();
    let list = req.batch.then_some("queries");
    if h.searcher.detects_faces() {
        return timed(&st, query_photos(h, req.queries, what, req.options, list))
            .await
            .map(|mut js| {
                Json(if req.batch {
                    json!({ "answers": js })
                } else {
                    js.swap_remove(0)
                })
            })
            .map_err(|e| scrub(h, e));
    }
    timed(&st, async {
        let vs = embed(&st, h, req.queries, list).await?;
        let s = h.searcher.clone();
        let opts = req.options;
        let answers = blocking(move || {
            vs.iter()
                .map(|v| s.search_vector(v, &opts).map_err(ApiError::from))
                .collect::<Result<Vec<Answer>, ApiError>>()
        })
        .await?;
        let mut js: Vec<Value> = what
            .into_iter()
            .zip(answers)
            .map(|(w, a)| answer_json(w, a))
            .collect();
        Ok(Json(if req.batch {
            json!({ "answers": js })
        } else {
            js.pop().expect("one answer")
        }))
    })
    .await
    .map_err(|e| scrub(h, e))
}

/// Queries to an index whose encoder finds faces: each photo answered per face (its box,
/// score, neighbours and identity, as `query --json`), other queries as usual; on the
/// blocking pool, since a photo is many embeddings.
async fn query_photos(
    h: &IndexHandle,
    queries: Vec<Content>,
    what: Vec<String>,
    opts: crate::query::SearchOptions,
    list: Option<&'static str>,
) -> Result<Vec<Value>, ApiError> {
    let s = h.searcher.clone();
    blocking(move || {
        queries
            .iter()
            .zip(what)
            .enumerate()
            .map(|(i, (c, w))| {
                let r = s.replies(&[c.as_query()], &opts).map(|r| r[0].to_json(&w));
                r.map_err(|e| ApiError::from(e).at(field_of(list, i, c)))
            })
            .collect()
    })
    .await
}

async fn add_items(
    State(st): St,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let req = AddRequest::parse(&body, &st.limits)?;
    let h = st.index(&name)?;
    if !h.writable {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            format!("index {name:?} is served read-only"),
        ));
    }
    let list = req.batch.then_some("items");
    let items: Vec<Item> = req
        .items
        .iter()
        .map(|it| Item {
            label: it.label.clone(),
            source: it.source.clone().unwrap_or_else(|| match &it.content {
                Content::Text(t) => t.clone(),
                Content::Image { name, .. } => name.clone(),
                Content::Vector(_) => "vector".into(),
                Content::Id(id) => format!("copy of item {id}"),
            }),
            payload: None,
        })
        .collect();
    let contents: Vec<Content> = req.items.into_iter().map(|i| i.content).collect();
    // The timeout covers the wait for the encoder only: once the write is handed to the
    // library it is answered when durable, however long that takes.
    let vs = timed(&st, embed(&st, h, contents, list))
        .await
        .map_err(|e| scrub(h, e))?;
    let s = h.searcher.clone();
    let ids = blocking(move || s.add_vectors(&vs.concat(), items).map_err(ApiError::from))
        .await
        .map_err(|e| scrub(h, e))?;
    Ok(Json(json!({ "ids": ids })))
}

async fn delete_item(
    State(st): St,
    PathArgs((name, id)): PathArgs<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let h = st.index(&name)?;
    let id: u64 = id.parse().map_err(|_| {
        ApiError::field(
            "invalid_value",
            "id",
            format!(
                "{:?} is not an item id (a non-negative integer)",
                crate::query::shorten(&id, 40)
            ),
        )
    })?;
    if !h.writable {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            format!("index {name:?} is served read-only"),
        ));
    }
    let s = h.searcher.clone();
    blocking(move || s.delete(&[id]).map_err(ApiError::from))
        .await
        .map_err(|e| scrub(h, e))?;
    Ok(Json(json!({ "deleted": id })))
}

async fn verify(
    State(st): St,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let req = VerifyRequest::parse(&body, &st.limits)?;
    let h = st.index(&name)?;
    if h.searcher.detects_faces() && matches!(req.content, Content::Image { .. }) {
        let s = h.searcher.clone();
        return timed(&st, async move {
            let label = req.label.clone();
            let faces = blocking(move || {
                let q = req.content.as_query();
                s.verify_faces(&q, &req.label, req.threshold, req.aggregate)
                    .map_err(|e| ApiError::from(e).at("image"))
            })
            .await?
            .unwrap_or_default();
            Ok(Json(crate::query::render::face_verdicts_json(
                &label, &faces,
            )))
        })
        .await
        .map_err(|e| scrub(h, e));
    }
    timed(&st, async {
        let v = embed(&st, h, vec![req.content], None)
            .await?
            .pop()
            .expect("one vector");
        let s = h.searcher.clone();
        let (label, threshold, aggregate) = (req.label, req.threshold, req.aggregate);
        let ver = blocking(move || {
            s.verify_vector(&v, &label, threshold, aggregate)
                .map_err(ApiError::from)
        })
        .await?;
        let mut j = json!(ver);
        j["decision"] = json!(if ver.accepted { "accept" } else { "reject" });
        Ok(Json(j))
    })
    .await
    .map_err(|e| scrub(h, e))
}
