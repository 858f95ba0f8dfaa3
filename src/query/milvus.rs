//! Milvus as a remote store behind the [`Searcher`](super::Searcher): push an index or
//! embedding parts into a collection, search it, enrol and delete. The ONLY user of
//! milvus-sdk-rust (its v1 gRPC API: it can set the HNSW parameters, the search `ef` and a
//! collection's description, which Milvus 2.3's REST API cannot).
//!
//! A twindex collection has the fields `id int64` (primary key, ours), `label varchar`,
//! `source varchar` and `vector float_vector[dim]`, an HNSW index with the source index's `M`
//! and `efConstruction`, session consistency (a client sees its own writes), and a description
//! `twindex:{json}` ([`CollectionMeta`]) naming the encoder (kind, sha256, where its files
//! are), the metric and the calibrated threshold. Pushing another encoder's vectors into it is
//! refused. Scores come back in Milvus' convention and are turned into twindex distances here
//! ([`Remote::distance`]), so the duplicate rule (`distance <= threshold`) is the local one.
//!
//! The client is async (tonic); each [`Remote`] owns a one-thread tokio runtime and blocks on
//! it, so it can be called from plain threads and from a server's blocking pool alike.

use crate::error::{Error, Result};
use crate::index::parquet::{PartMeta, PartRows};
use crate::index::{EncoderRecord, Metric};
use milvus::client::Client;
use milvus::data::FieldColumn;
use milvus::index::{IndexParams, IndexType, MetricType};
use milvus::options::CreateCollectionOptions;
use milvus::proto::common::ConsistencyLevel;
use milvus::query::{QueryOptions, SearchOptions as MilvusSearch};
use milvus::schema::{CollectionSchema, CollectionSchemaBuilder, FieldSchema};
use milvus::value::{Value as MValue, ValueVec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The scheme of a Milvus address on the command line: `milvus://HOST:PORT[/COLLECTION]`.
pub const SCHEME: &str = "milvus://";

/// Prefix of a twindex collection's description.
pub const DESCRIPTION_PREFIX: &str = "twindex:";

/// Longest label stored (bytes; Milvus varchar needs a bound).
pub const MAX_LABEL: usize = 1024;
/// Longest source text stored (bytes; Milvus' varchar limit). Longer texts are cut at a
/// character boundary.
pub const MAX_SOURCE: usize = 65_535;

/// How long one call to Milvus may take before it is abandoned.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for Milvus to answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed Milvus address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilvusUri {
    /// `http://HOST:PORT`.
    pub endpoint: String,
    /// The collection, when the address names one.
    pub collection: Option<String>,
}

impl MilvusUri {
    /// The collection to use: the one given apart (`--collection`) or the one the address
    /// names; both must agree, and one is needed.
    pub fn collection_or(&self, given: Option<&str>) -> Result<String> {
        match (given, &self.collection) {
            (Some(c), None) => Ok(c.to_string()),
            (None, Some(c)) => Ok(c.clone()),
            (Some(c), Some(d)) if c == d => Ok(c.to_string()),
            (Some(c), Some(d)) => Err(Error::Msg(format!(
                "--collection {c} and the collection {d} in --milvus differ"
            ))),
            (None, None) => Err(Error::Msg(
                "name the collection: --collection NAME or --milvus milvus://HOST:PORT/NAME".into(),
            )),
        }
    }

    /// Parse `milvus://HOST:PORT[/COLLECTION]`, `http://HOST:PORT` or `HOST:PORT` (port
    /// default 19530).
    pub fn parse(uri: &str) -> Result<MilvusUri> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "Milvus address {uri:?}: {why} (expected milvus://HOST:PORT[/COLLECTION])"
            ))
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .or_else(|| uri.strip_prefix("http://"))
            .unwrap_or(uri);
        if rest.contains("://") {
            return Err(bad("unknown scheme"));
        }
        let (hostport, coll) = match rest.split_once('/') {
            Some((h, c)) => (h, (!c.is_empty()).then(|| c.to_string())),
            None => (rest, None),
        };
        if hostport.is_empty() {
            return Err(bad("no host"));
        }
        let hostport = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            let (h, p) = hostport.rsplit_once(':').expect("checked");
            if h.is_empty() {
                return Err(bad("no host"));
            }
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))?;
            hostport.to_string()
        } else {
            format!("{hostport}:19530")
        };
        if let Some(c) = &coll {
            check_collection_name(c)?;
        }
        Ok(MilvusUri {
            endpoint: format!("http://{hostport}"),
            collection: coll,
        })
    }
}

/// Milvus' rule for collection names: a letter or underscore, then letters, digits and
/// underscores, at most 255.
pub fn check_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "collection name {name:?}: Milvus wants a letter or _ first, then letters, digits or _ (at most 255)"
        )))
    }
}

/// HNSW parameters of a collection's index.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswSpec {
    pub m: usize,
    pub ef_construction: usize,
    /// The default search breadth (raised to k when smaller, as Milvus requires).
    pub ef_search: usize,
}

impl Default for HnswSpec {
    fn default() -> Self {
        HnswSpec {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

/// What twindex records in a collection's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// The twindex version that created the collection.
    pub twindex: String,
    /// The encoder record (kind, sha256, dim, where its files are).
    pub encoder: EncoderRecord,
    pub dim: usize,
    /// `l2`, `cosine` or `dot`.
    pub metric: Metric,
    pub normalize: bool,
    /// The duplicate threshold (a twindex distance).
    pub threshold: Option<f32>,
    pub hnsw: HnswSpec,
}

impl CollectionMeta {
    /// From a part's metadata, with the HNSW parameters it carries (or the defaults).
    pub fn from_part(m: &PartMeta) -> CollectionMeta {
        let mut hnsw = HnswSpec::default();
        if let Some(h) = &m.hnsw {
            let get =
                |k: &str, d: usize| h.get(k).and_then(Value::as_u64).map_or(d, |v| v as usize);
            hnsw = HnswSpec {
                m: get("m", hnsw.m),
                ef_construction: get("ef_construction", hnsw.ef_construction),
                ef_search: get("ef_search", hnsw.ef_search),
            };
        }
        CollectionMeta {
            twindex: env!("CARGO_PKG_VERSION").to_string(),
            encoder: m.encoder.clone(),
            dim: m.dim,
            metric: m.metric,
            normalize: m.normalize,
            threshold: m.threshold,
            hnsw,
        }
    }

    /// The encoder's sha256 ("" for raw vectors).
    pub fn encoder_sha256(&self) -> &str {
        self.encoder.sha256().unwrap_or("")
    }
}

/// One neighbour from Milvus, with the twindex distance.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteHit {
    pub id: u64,
    pub label: String,
    pub source: String,
    pub distance: f32,
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub collection: String,
    /// Whether this push created the collection.
    pub created: bool,
    pub rows: usize,
    /// Rows in the collection after the push.
    pub total_rows: usize,
    /// Seconds spent inserting (client encode + RPCs).
    pub insert_seconds: f64,
    /// Seconds from the first insert until the collection was flushed, indexed and loaded.
    pub seconds: f64,
    /// `rows / insert_seconds`.
    pub insert_vectors_per_second: f64,
    /// `rows / seconds`: until searchable with its HNSW index.
    pub vectors_per_second: f64,
    /// Source texts cut to Milvus' varchar limit.
    pub truncated_sources: usize,
}

/// A connection to one twindex collection.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    client: Client,
    endpoint: String,
    collection: String,
    meta: CollectionMeta,
    metric: Metric,
    /// When this client last inserted or deleted: searches soon after are strongly consistent,
    /// so a client always sees its own writes (Milvus 2.3 reports no timestamp for a delete,
    /// so session consistency alone misses deletes).
    last_write: std::sync::Mutex<Option<Instant>>,
}

/// How long after its own write a client's searches and queries are strongly consistent
/// (Milvus' default bounded staleness is well inside this).
const READ_YOUR_WRITES: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("endpoint", &self.endpoint)
            .field("collection", &self.collection)
            .finish()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Msg(format!("cannot start the Milvus client's runtime: {e}")))
}

/// Milvus' error, shortened to its first line.
fn merr(what: &str, endpoint: &str, e: milvus::error::Error) -> Error {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or("").trim();
    Error::Msg(format!("Milvus at {endpoint}: {what}: {first}"))
}

async fn connect_client(endpoint: &str) -> Result<Client> {
    let fut = Client::with_timeout(endpoint.to_string(), RPC_TIMEOUT, None, None);
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Error::Msg(format!(
            "cannot reach Milvus at {endpoint} ({}); is it running?",
            e.to_string().lines().next().unwrap_or("").trim()
        ))),
        Err(_) => Err(Error::Msg(format!(
            "cannot reach Milvus at {endpoint}: no answer in {} s; is it running?",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Read a collection's twindex description; `Ok(None)` when the collection does not exist.
async fn read_meta(client: &Client, endpoint: &str, name: &str) -> Result<Option<CollectionMeta>> {
    let exists = client
        .has_collection(name)
        .await
        .map_err(|e| merr("has_collection", endpoint, e))?;
    if !exists {
        return Ok(None);
    }
    let d = client
        .describe_collection(name)
        .await
        .map_err(|e| merr("describe_collection", endpoint, e))?;
    let desc = d.schema.description;
    let json = desc.strip_prefix(DESCRIPTION_PREFIX).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "Milvus collection {name:?} at {endpoint} was not made by twindex (its description does not start with {DESCRIPTION_PREFIX:?}); twindex neither searches nor writes it"
        ))
    })?;
    let meta: CollectionMeta = serde_json::from_str(json).map_err(|e| {
        Error::InvalidArgument(format!(
            "Milvus collection {name:?} at {endpoint}: unreadable twindex description ({e})"
        ))
    })?;
    Ok(Some(meta))
}

fn milvus_metric(m: Metric) -> MetricType {
    match m {
        Metric::L2 => MetricType::L2,
        Metric::Cosine => MetricType::COSINE,
        Metric::Dot => MetricType::IP,
    }
}

fn schema_for(name: &str, meta: &CollectionMeta) -> Result<CollectionSchema> {
    let desc = format!(
        "{DESCRIPTION_PREFIX}{}",
        serde_json::to_string(meta).map_err(|e| Error::Msg(e.to_string()))?
    );
    CollectionSchemaBuilder::new(name, &desc)
        .add_field(FieldSchema::new_primary_int64(
            "id",
            "twindex item id",
            false,
        ))
        .add_field(FieldSchema::new_varchar("label", "label", MAX_LABEL as i32))
        .add_field(FieldSchema::new_varchar(
            "source",
            "text or source",
            MAX_SOURCE as i32,
        ))
        .add_field(FieldSchema::new_float_vector(
            "vector",
            "embedding",
            meta.dim as i64,
        ))
        .build()
        .map_err(|e| Error::Msg(format!("collection schema: {e}")))
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// A Milvus boolean expression for `label == value` (quotes and backslashes escaped).
pub fn label_expr(label: &str) -> String {
    let mut s = String::from("label == \"");
    for c in label.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

fn ids_expr(ids: &[i64]) -> String {
    let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    format!("id in [{}]", list.join(", "))
}

/// Options of [`push`].
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Rows per insert call. Default 5,000 (about 8 MB of 384-d vectors).
    pub batch: usize,
    /// Shards (DML channels) of a new collection; `None`: Milvus' default. More: inserts
    /// spread over more data nodes (a cluster's ingest rate), more streams to keep.
    pub shards: Option<i32>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            batch: 5000,
            shards: None,
        }
    }
}

/// Push rows into `collection`: created with `meta` (schema, HNSW index, description) when it
/// does not exist; when it does, its description must name the same encoder, dimension and
/// metric, and none of the pushed ids may be in it already. `parts` yields the rows part by part.
/// On a failure in a collection this push created, the collection is dropped (and the error
/// says so); in an existing one, the error says how many rows had been inserted.
pub fn push(
    uri: &MilvusUri,
    collection: &str,
    meta: &CollectionMeta,
    parts: &mut dyn Iterator<Item = Result<PartRows>>,
    opts: &PushOptions,
    progress: &dyn Fn(usize),
) -> Result<PushReport> {
    check_collection_name(collection)?;
    let rt = runtime()?;
    let endpoint = uri.endpoint.as_str();
    rt.block_on(async {
        let client = connect_client(endpoint).await?;
        let existing = read_meta(&client, endpoint, collection).await?;
        let created = existing.is_none();
        let schema = schema_for(collection, meta)?;
        if let Some(have) = &existing {
            check_same_encoder(collection, have, meta)?;
        } else {
            client
                .create_collection(
                    schema.clone(),
                    Some(
                        CreateCollectionOptions::with_consistency_level(ConsistencyLevel::Session)
                            .shard_num(opts.shards.unwrap_or(0)),
                    ),
                )
                .await
                .map_err(|e| merr(&format!("create collection {collection:?}"), endpoint, e))?;
        }
        let t0 = Instant::now();
        let mut inserted = 0usize;
        let mut insert_seconds = 0.0;
        let mut truncated = 0usize;
        let res: Result<()> = async {
            for part in &mut *parts {
                let rows = part?;
                if rows.dim != meta.dim {
                    return Err(Error::dim(meta.dim, rows.dim, format!("vectors pushed into {collection:?}")));
                }
                for start in (0..rows.len()).step_by(opts.batch.max(1)) {
                    let end = (start + opts.batch.max(1)).min(rows.len());
                    let ids: Vec<i64> = rows.ids[start..end].to_vec();
                    if !created {
                        let found = client
                            .query(collection, &ids_expr(&ids), &QueryOptions::default().output_fields(vec!["id".into()]))
                            .await
                            .map_err(|e| merr("query existing ids", endpoint, e))?;
                        let dup = found.first().map_or(0, |c| c.len());
                        if dup > 0 {
                            return Err(Error::InvalidArgument(format!(
                                "Milvus collection {collection:?} already holds {dup} of the ids {}..{} being pushed; push each part once",
                                ids[0],
                                ids[ids.len() - 1]
                            )));
                        }
                    }
                    let t = Instant::now();
                    let cols = columns(&schema, &rows, start, end, &mut truncated)?;
                    client
                        .insert(collection, cols, None)
                        .await
                        .map_err(|e| merr("insert", endpoint, e))?;
                    insert_seconds += t.elapsed().as_secs_f64();
                    inserted += end - start;
                    progress(inserted);
                }
            }
            client.flush(collection).await.map_err(|e| merr("flush", endpoint, e))?;
            if created {
                let params = IndexParams::new(
                    "vector_hnsw".into(),
                    IndexType::HNSW,
                    milvus_metric(meta.metric),
                    HashMap::from([
                        ("M".to_owned(), meta.hnsw.m.to_string()),
                        ("efConstruction".to_owned(), meta.hnsw.ef_construction.to_string()),
                    ]),
                );
                client
                    .create_index(collection, "vector", params)
                    .await
                    .map_err(|e| merr("create the HNSW index", endpoint, e))?;
                client
                    .load_collection(collection, None)
                    .await
                    .map_err(|e| merr("load", endpoint, e))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = res {
            if created {
                let dropped = client.drop_collection(collection).await.is_ok();
                return Err(Error::Msg(format!(
                    "{e}; {}",
                    if dropped {
                        format!("the collection {collection:?} this push created was dropped again: nothing is left behind")
                    } else {
                        format!("the collection {collection:?} this push created could not be dropped: drop it by hand")
                    }
                )));
            }
            return Err(Error::Msg(format!(
                "{e}; {inserted} rows of this push had been inserted into {collection:?} before the failure"
            )));
        }
        let total = count(&client, endpoint, collection).await?;
        let seconds = t0.elapsed().as_secs_f64();
        Ok(PushReport {
            collection: collection.to_string(),
            created,
            rows: inserted,
            total_rows: total,
            insert_seconds,
            seconds,
            insert_vectors_per_second: inserted as f64 / insert_seconds.max(1e-9),
            vectors_per_second: inserted as f64 / seconds.max(1e-9),
            truncated_sources: truncated,
        })
    })
}

fn check_same_encoder(
    collection: &str,
    have: &CollectionMeta,
    want: &CollectionMeta,
) -> Result<()> {
    if have.encoder_sha256() != want.encoder_sha256() {
        return Err(Error::InvalidArgument(format!(
            "Milvus collection {collection:?} holds vectors of another encoder (sha256 {}…, pushing {}…): refused; push into a new collection",
            &have.encoder_sha256().get(..12).unwrap_or(have.encoder_sha256()),
            &want.encoder_sha256().get(..12).unwrap_or(want.encoder_sha256()),
        )));
    }
    if have.dim != want.dim {
        return Err(Error::dim(
            have.dim,
            want.dim,
            format!("vectors pushed into {collection:?}"),
        ));
    }
    if have.metric != want.metric {
        return Err(Error::InvalidArgument(format!(
            "Milvus collection {collection:?} uses the metric {}, the pushed vectors {}",
            have.metric, want.metric
        )));
    }
    Ok(())
}

fn columns(
    schema: &CollectionSchema,
    rows: &PartRows,
    start: usize,
    end: usize,
    truncated: &mut usize,
) -> Result<Vec<FieldColumn>> {
    let field = |n: &str| schema.get_field(n).expect("twindex schema field");
    let mut labels = Vec::with_capacity(end - start);
    let mut sources = Vec::with_capacity(end - start);
    for i in start..end {
        let l = &rows.labels[i];
        if l.len() > MAX_LABEL {
            return Err(Error::InvalidArgument(format!(
                "item {}: label of {} bytes; Milvus collections made by twindex take labels up to {MAX_LABEL}",
                rows.ids[i],
                l.len()
            )));
        }
        labels.push(l.clone());
        let (s, cut_) = cut(&rows.texts[i], MAX_SOURCE);
        *truncated += cut_ as usize;
        sources.push(s.to_string());
    }
    Ok(vec![
        FieldColumn::new(field("id"), rows.ids[start..end].to_vec()),
        FieldColumn::new(field("label"), labels),
        FieldColumn::new(field("source"), sources),
        FieldColumn::new(
            field("vector"),
            rows.vectors[start * rows.dim..end * rows.dim].to_vec(),
        ),
    ])
}

async fn count(client: &Client, endpoint: &str, collection: &str) -> Result<usize> {
    client
        .count(collection)
        .await
        .map(|n| n.max(0) as usize)
        .map_err(|e| merr("count", endpoint, e))
}

/// Drop a collection that twindex made (its description says so); others are refused.
pub fn drop_collection(uri: &MilvusUri, collection: &str) -> Result<bool> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = connect_client(&uri.endpoint).await?;
        match read_meta(&client, &uri.endpoint, collection).await? {
            None => Ok(false),
            Some(_) => {
                client
                    .drop_collection(collection)
                    .await
                    .map_err(|e| merr("drop", &uri.endpoint, e))?;
                Ok(true)
            }
        }
    })
}

impl Remote {
    /// Connect to a twindex collection (it must exist and carry a twindex description).
    pub fn open(uri: &MilvusUri, collection: &str) -> Result<Remote> {
        check_collection_name(collection)?;
        let rt = runtime()?;
        let endpoint = uri.endpoint.clone();
        let (client, meta) = rt.block_on(async {
            let client = connect_client(&endpoint).await?;
            let meta = read_meta(&client, &endpoint, collection).await?.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "Milvus at {endpoint} has no collection {collection:?}; push one with `twindex index push`"
                ))
            })?;
            Ok::<_, Error>((client, meta))
        })?;
        let metric = meta.metric;
        Ok(Remote {
            rt,
            client,
            endpoint,
            collection: collection.to_string(),
            meta,
            metric,
            last_write: std::sync::Mutex::new(None),
        })
    }

    fn wrote(&self) {
        *self.last_write.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// `Some(Strong)` shortly after this client's own write, else the collection's default.
    fn consistency(&self) -> Option<i32> {
        let last = *self.last_write.lock().unwrap_or_else(|p| p.into_inner());
        last.filter(|t| t.elapsed() < READ_YOUR_WRITES)
            .map(|_| ConsistencyLevel::Strong as i32)
    }

    /// `milvus://HOST:PORT/COLLECTION`.
    pub fn uri(&self) -> String {
        format!(
            "{SCHEME}{}/{}",
            self.endpoint.trim_start_matches("http://"),
            self.collection
        )
    }

    /// The collection's twindex description.
    pub fn meta(&self) -> &CollectionMeta {
        &self.meta
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// A twindex distance from a Milvus score: `1 − score` for COSINE and IP (so that
    /// similarity = score), `sqrt(score)` for L2 (Milvus returns the squared distance).
    pub fn distance(&self, score: f32) -> f32 {
        match self.metric {
            Metric::L2 => score.max(0.0).sqrt(),
            Metric::Cosine | Metric::Dot => 1.0 - score,
        }
    }

    /// The `k` nearest items of each vector (one RPC for all), with an optional label filter.
    pub fn search_many(
        &self,
        vectors: &[Vec<f32>],
        k: usize,
        ef: Option<usize>,
        label: Option<&str>,
    ) -> Result<Vec<Vec<RemoteHit>>> {
        if vectors.is_empty() {
            return Ok(Vec::new());
        }
        let ef = ef.unwrap_or(self.meta.hnsw.ef_search).max(k);
        let mut opts = MilvusSearch::new()
            .limit(k)
            .output_fields(vec!["label".into(), "source".into()])
            .add_param("anns_field", "vector")
            .add_param("metric_type", milvus_metric(self.metric).to_string())
            .add_param("ef", ef.to_string());
        if let Some(l) = label {
            opts = opts.filter(label_expr(l));
        }
        if let Some(c) = self.consistency() {
            opts = opts.consistency_level(c);
        }
        let data: Vec<MValue> = vectors
            .iter()
            .map(|v| MValue::FloatArray(v.as_slice().into()))
            .collect();
        let res = self
            .rt
            .block_on(
                self.client
                    .search(self.collection.as_str(), data, Some(opts)),
            )
            .map_err(|e| merr("search", &self.endpoint, e))?;
        res.into_iter()
            .map(|r| {
                let col = |n: &str| r.field.iter().find(|f| f.name == n);
                let (labels, sources) = (col("label"), col("source"));
                (0..r.id.len())
                    .map(|i| {
                        let id = match &r.id[i] {
                            MValue::Long(x) => *x as u64,
                            other => {
                                return Err(Error::Msg(format!(
                                    "Milvus returned a non-integer id {other:?}"
                                )))
                            }
                        };
                        let s = |c: Option<&FieldColumn>| match c.and_then(|c| c.get(i)) {
                            Some(MValue::String(s)) => s.into_owned(),
                            _ => String::new(),
                        };
                        Ok(RemoteHit {
                            id,
                            label: s(labels),
                            source: s(sources),
                            distance: self.distance(r.score[i]),
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Stored vectors of items: `(id, label, vector)` for `id in ids` (missing ids absent).
    pub fn get(&self, ids: &[u64]) -> Result<Vec<(u64, String, Vec<f32>)>> {
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        self.fetch(&ids_expr(&ids))
    }

    /// Every item enrolled as `label`: `(id, label, vector)` (at most 16,384, Milvus' limit).
    pub fn references(&self, label: &str) -> Result<Vec<(u64, String, Vec<f32>)>> {
        self.fetch(&label_expr(label))
    }

    /// The `fields` of the rows matching `expr` (at most 16,384, Milvus' limit), read with
    /// this client's consistency.
    fn query_fields(&self, expr: &str, fields: &[&str]) -> Result<Vec<FieldColumn>> {
        let mut opts = QueryOptions::default()
            .output_fields(fields.iter().map(|f| f.to_string()).collect())
            .limit(16_384);
        if let Some(c) = self.consistency() {
            opts = opts.consistency_level(c);
        }
        self.rt
            .block_on(self.client.query(self.collection.as_str(), expr, &opts))
            .map_err(|e| merr("query", &self.endpoint, e))
    }

    fn fetch(&self, expr: &str) -> Result<Vec<(u64, String, Vec<f32>)>> {
        let cols = self.query_fields(expr, &["id", "label", "vector"])?;
        let col = |n: &str| cols.iter().find(|c| c.name == n);
        let (Some(ids), Some(labels), Some(vecs)) = (col("id"), col("label"), col("vector")) else {
            return Ok(Vec::new());
        };
        let (ValueVec::Long(ids), ValueVec::String(labels), ValueVec::Float(vecs)) =
            (&ids.value, &labels.value, &vecs.value)
        else {
            return Err(Error::Msg(
                "Milvus returned columns of unexpected types".into(),
            ));
        };
        let dim = self.meta.dim;
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                (
                    id as u64,
                    labels[i].clone(),
                    vecs[i * dim..(i + 1) * dim].to_vec(),
                )
            })
            .collect())
    }

    /// Insert rows (ids chosen by the caller; see [`Remote::next_id`]).
    pub fn insert(&self, rows: &PartRows) -> Result<()> {
        if rows.dim != self.meta.dim {
            return Err(Error::dim(self.meta.dim, rows.dim, "vectors added"));
        }
        let schema = schema_for(&self.collection, &self.meta)?;
        let mut truncated = 0;
        let cols = columns(&schema, rows, 0, rows.len(), &mut truncated)?;
        self.rt
            .block_on(self.client.insert(self.collection.as_str(), cols, None))
            .map_err(|e| merr("insert", &self.endpoint, e))?;
        self.wrote();
        Ok(())
    }

    /// One more than the largest id in the collection (0 when empty). Milvus 2.3 has no
    /// max(): ids pushed by twindex are dense from 0, so the search starts at the count and
    /// walks past whatever lies above it (deletions leave the count below the largest id).
    pub fn next_id(&self) -> Result<u64> {
        let mut probe = self.count()? as i64;
        loop {
            let found = self.fetch_ids(&format!("id >= {probe}"))?;
            match found.iter().copied().max() {
                None => return Ok(probe as u64),
                Some(m) => probe = m + 1,
            }
        }
    }

    fn fetch_ids(&self, expr: &str) -> Result<Vec<i64>> {
        let cols = self.query_fields(expr, &["id"])?;
        Ok(
            match cols.iter().find(|c| c.name == "id").map(|c| &c.value) {
                Some(ValueVec::Long(v)) => v.clone(),
                _ => Vec::new(),
            },
        )
    }

    /// Delete items by id.
    pub fn delete(&self, ids: &[u64]) -> Result<()> {
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let found = self.fetch_ids(&ids_expr(&ids))?;
        if let Some(missing) = ids.iter().find(|i| !found.contains(i)) {
            return Err(Error::UnknownId(*missing as u64));
        }
        let opts = milvus::mutate::DeleteOptions::with_filter(ids_expr(&ids));
        self.rt
            .block_on(self.client.delete(self.collection.as_str(), &opts))
            .map_err(|e| merr("delete", &self.endpoint, e))?;
        self.wrote();
        Ok(())
    }

    /// Rows in the collection.
    pub fn count(&self) -> Result<usize> {
        self.rt
            .block_on(count(&self.client, &self.endpoint, &self.collection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_bad_ones_are_named() {
        let u = MilvusUri::parse("milvus://127.0.0.1:19530/glosses").unwrap();
        assert_eq!(u.endpoint, "http://127.0.0.1:19530");
        assert_eq!(u.collection.as_deref(), Some("glosses"));
        let u = MilvusUri::parse("localhost").unwrap();
        assert_eq!(u.endpoint, "http://localhost:19530");
        assert_eq!(u.collection, None);
        for bad in [
            "milvus://",
            "milvus://h:port/c",
            "ftp://h:1",
            "milvus://h:1/9bad",
            "milvus://:1",
        ] {
            let e = MilvusUri::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains(bad) || e.contains("collection name"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn label_expressions_escape_quotes() {
        assert_eq!(label_expr("ann"), r#"label == "ann""#);
        assert_eq!(label_expr(r#"a"b\c"#), r#"label == "a\"b\\c""#);
    }

    #[test]
    fn long_sources_are_cut_on_a_character_boundary() {
        let s = "é".repeat(40_000); // 80,000 bytes
        let (c, was) = cut(&s, MAX_SOURCE);
        assert!(was && c.len() <= MAX_SOURCE && c.len() >= MAX_SOURCE - 1);
        assert_eq!(cut("short", MAX_SOURCE), ("short", false));
    }
}
