//! Request bodies: parsed from JSON field by field, so that every refusal names the field at
//! fault (`"k": invalid type: string "ten", expected usize`), unknown fields are refused (a typo
//! is not silently ignored), and the OpenAPI document is built from the same field tables.

use super::error::ApiError;
use super::Limits;
use crate::query::{Aggregate, Query, SearchOptions};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A JSON type in the field tables (what the OpenAPI document says about a field).
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Str,
    Int,
    Num,
    NumArray,
    /// An array of objects of the named schema.
    Array(&'static str),
    /// One of the listed strings.
    Enum(&'static [&'static str]),
}

/// One field of a request body: its name, type and meaning.
#[derive(Debug, Clone, Copy)]
pub struct FieldDoc {
    pub name: &'static str,
    pub ty: Ty,
    pub doc: &'static str,
}

const fn f(name: &'static str, ty: Ty, doc: &'static str) -> FieldDoc {
    FieldDoc { name, ty, doc }
}

/// What to embed: exactly one of these per query, item or verification.
pub const CONTENT_FIELDS: &[FieldDoc] = &[
    f("text", Ty::Str, "A text (text indexes)."),
    f(
        "image",
        Ty::Str,
        "An image (PNG, PGM, JPEG) as base64, optionally a data: URL (image indexes).",
    ),
    f(
        "image_name",
        Ty::Str,
        "What to call the image in answers and errors.",
    ),
    f(
        "vector",
        Ty::NumArray,
        "A raw vector of the index's dimension.",
    ),
    f("id", Ty::Int, "A stored item: its vector is the query."),
];

/// Search options of `POST /v1/indexes/{name}/query`.
pub const SEARCH_FIELDS: &[FieldDoc] = &[
    f(
        "k",
        Ty::Int,
        "Neighbours to return (default 10, at most 1000).",
    ),
    f(
        "ef",
        Ty::Int,
        "Search breadth (default: the index's). Larger: better recall, slower.",
    ),
    f(
        "threshold",
        Ty::Num,
        "Duplicate threshold as a distance (default: the index's calibrated one).",
    ),
    f("label", Ty::Str, "Only neighbours with this label."),
    f(
        "queries",
        Ty::Array("Content"),
        "Batch form: many queries answered together (instead of one content field).",
    ),
];

/// Fields of one item of `POST /v1/indexes/{name}/items` (besides its content).
pub const ITEM_FIELDS: &[FieldDoc] = &[
    f("label", Ty::Str, "The item's label (default empty)."),
    f(
        "source",
        Ty::Str,
        "Where it came from (default: the text, the image name, or `vector`).",
    ),
];

/// The batch form of `POST /v1/indexes/{name}/items`.
pub const ADD_FIELDS: &[FieldDoc] = &[f(
    "items",
    Ty::Array("NewItem"),
    "Batch form: many items added together (instead of one item's fields).",
)];

/// Fields of `POST /v1/indexes/{name}/verify` (besides the content).
pub const VERIFY_FIELDS: &[FieldDoc] = &[
    f("label", Ty::Str, "The claimed label (required)."),
    f(
        "threshold",
        Ty::Num,
        "Accept at or below this distance (default: the calibrated one).",
    ),
    f(
        "aggregate",
        Ty::Enum(&["min", "mean", "min-norm", "mean-norm"]),
        "How distances to the label's items combine (default min).",
    ),
];

/// One thing to embed or look up.
#[derive(Debug, Clone)]
pub enum Content {
    Text(String),
    Image { bytes: Vec<u8>, name: String },
    Vector(Vec<f32>),
    Id(u64),
}

impl Content {
    /// Whether the index's encoder has to run (texts and images go through the batching queue).
    pub fn needs_encoder(&self) -> bool {
        matches!(self, Content::Text(_) | Content::Image { .. })
    }

    /// The library's view of it.
    pub fn as_query(&self) -> Query<'_> {
        match self {
            Content::Text(t) => Query::Text(t),
            Content::Image { bytes, name } => Query::ImageBytes(bytes, name),
            Content::Vector(v) => Query::Vector(v),
            Content::Id(id) => Query::Id(*id),
        }
    }

    /// The request field that carries it.
    pub fn field(&self) -> &'static str {
        match self {
            Content::Text(_) => "text",
            Content::Image { .. } => "image",
            Content::Vector(_) => "vector",
            Content::Id(_) => "id",
        }
    }
}

/// `POST /v1/indexes/{name}/query`.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    pub queries: Vec<Content>,
    /// The batch form (`queries: [...]`): answered as `{"answers": [...]}`.
    pub batch: bool,
    pub options: SearchOptions,
}

/// One item of `POST /v1/indexes/{name}/items`.
#[derive(Debug, Clone)]
pub struct NewItemRequest {
    pub content: Content,
    pub label: String,
    pub source: Option<String>,
}

/// `POST /v1/indexes/{name}/items`.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub items: Vec<NewItemRequest>,
    pub batch: bool,
}

/// `POST /v1/indexes/{name}/verify`.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub content: Content,
    pub label: String,
    pub threshold: Option<f32>,
    pub aggregate: Aggregate,
}

/// An object being read: the fields taken so far, to refuse the others.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    /// Where the object is in the body (`""` for the top level, `"queries[2]."`).
    at: String,
    known: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, at: &str) -> Result<Self, ApiError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                at: at.to_string(),
                known: Vec::new(),
            }),
            other => {
                let what = if at.is_empty() {
                    "body".to_string()
                } else {
                    at.trim_end_matches('.').to_string()
                };
                Err(ApiError::field(
                    "invalid_type",
                    what,
                    format!("expected a JSON object, got {}", json_type(other)),
                ))
            }
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.at)
    }

    fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// The field `key` as a `T`; absent or null: `None`.
    fn get<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>, ApiError> {
        self.known.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| {
                ApiError::field("invalid_type", self.name(key), clean_serde(&e.to_string()))
            }),
        }
    }

    /// Refuse the fields nobody asked for.
    fn finish(self, allowed: &[&[FieldDoc]]) -> Result<(), ApiError> {
        for k in self.map.keys() {
            if !self.known.contains(&k.as_str()) {
                let names: Vec<&str> = allowed
                    .iter()
                    .flat_map(|t| t.iter().map(|f| f.name))
                    .collect();
                return Err(ApiError::field(
                    "unknown_field",
                    self.name(k),
                    format!("unknown field; expected one of {}", names.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// serde's message without the line/column of the sub-value (always line 1 column 0 there).
fn clean_serde(s: &str) -> String {
    s.split(" at line ").next().unwrap_or(s).to_string()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse a body into JSON, naming where it is malformed.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::field(
            "malformed_json",
            "body",
            "empty body; expected a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        // serde_json calls a \uD800-\uDFFF escape without its partner "unexpected end of hex
        // escape" or "lone leading surrogate": say what is wrong with the string.
        let msg = if msg.contains("hex escape") {
            format!(
                "a \\u escape in a string is half of a UTF-16 surrogate pair without the other half (line {} column {}); strings must be valid Unicode",
                e.line(),
                e.column()
            )
        } else {
            msg
        };
        ApiError::field("malformed_json", "body", format!("not valid JSON: {msg}"))
    })
}

/// The content fields of `o`: exactly one of text, image, vector, id.
fn content(o: &mut Obj, limits: &Limits) -> Result<Content, ApiError> {
    let given: Vec<&str> = ["text", "image", "vector", "id"]
        .into_iter()
        .filter(|k| o.has(k))
        .collect();
    if given.len() != 1 {
        let (code, msg) = if given.is_empty() {
            (
                "missing_field",
                "give one of text, image (base64), vector or id".to_string(),
            )
        } else {
            (
                "invalid_value",
                format!(
                    "give only one of text, image, vector or id (got {})",
                    given.join(" and ")
                ),
            )
        };
        let field = if o.at.is_empty() {
            "body".to_string()
        } else {
            o.at.trim_end_matches('.').to_string()
        };
        return Err(ApiError::field(code, field, msg));
    }
    let text: Option<String> = o.get("text")?;
    let image: Option<String> = o.get("image")?;
    let image_name: Option<String> = o.get("image_name")?;
    let vector: Option<Vec<f32>> = o.get("vector")?;
    let id: Option<u64> = o.get("id")?;
    if let Some(t) = text {
        if t.trim().is_empty() {
            return Err(ApiError::field(
                "empty",
                o.name("text"),
                "the text is empty (or only spaces)",
            ));
        }
        if t.chars().count() > limits.max_text_chars {
            return Err(ApiError::field(
                "too_large",
                o.name("text"),
                format!("longer than {} characters", limits.max_text_chars),
            ));
        }
        return Ok(Content::Text(t));
    }
    if let Some(b64) = image {
        let data = match b64.split_once(";base64,") {
            Some((head, rest)) if head.starts_with("data:") => rest,
            _ => b64.as_str(),
        };
        let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map_err(|e| {
                ApiError::field("bad_image", o.name("image"), format!("not base64: {e}"))
            })?;
        if bytes.is_empty() {
            return Err(ApiError::field(
                "empty",
                o.name("image"),
                "the image is empty",
            ));
        }
        let name = image_name.unwrap_or_else(|| "uploaded image".into());
        return Ok(Content::Image { bytes, name });
    }
    if let Some(v) = vector {
        if v.is_empty() {
            return Err(ApiError::field(
                "empty",
                o.name("vector"),
                "the vector is empty",
            ));
        }
        return Ok(Content::Vector(v));
    }
    Ok(Content::Id(id.expect("one content field given")))
}

fn search_options(o: &mut Obj) -> Result<SearchOptions, ApiError> {
    let k: Option<u64> = o.get("k")?;
    let k = match k {
        None => 10,
        Some(k) if (1..=1000).contains(&k) => k as usize,
        Some(k) => {
            return Err(ApiError::field(
                "invalid_value",
                "k",
                format!("{k} is out of range 1..=1000"),
            ))
        }
    };
    let ef: Option<u64> = o.get("ef")?;
    if let Some(ef) = ef {
        if !(1..=10_000).contains(&ef) {
            return Err(ApiError::field(
                "invalid_value",
                "ef",
                format!("{ef} is out of range 1..=10000"),
            ));
        }
    }
    let threshold = threshold(o)?;
    let label: Option<String> = o.get("label")?;
    Ok(SearchOptions {
        k,
        ef: ef.map(|e| e as usize),
        threshold,
        label,
    })
}

fn threshold(o: &mut Obj) -> Result<Option<f32>, ApiError> {
    let t: Option<f64> = o.get("threshold")?;
    match t {
        Some(t) if !t.is_finite() || t.abs() > f32::MAX as f64 => Err(ApiError::field(
            "invalid_value",
            o.name("threshold"),
            format!("{t} is not a finite distance"),
        )),
        t => Ok(t.map(|t| t as f32)),
    }
}

fn many<'v>(
    o: &mut Obj<'v>,
    key: &'static str,
    limits: &Limits,
) -> Result<Option<&'v Vec<Value>>, ApiError> {
    o.known.push(key);
    match o.map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.is_empty() => {
            Err(ApiError::field("empty", key, "the list is empty"))
        }
        Some(Value::Array(a)) if a.len() > limits.max_batch_request => Err(ApiError::field(
            "too_large",
            key,
            format!(
                "{} entries; at most {} in one request",
                a.len(),
                limits.max_batch_request
            ),
        )),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(other) => Err(ApiError::field(
            "invalid_type",
            key,
            format!("expected an array, got {}", json_type(other)),
        )),
    }
}

impl QueryRequest {
    pub fn parse(v: &Value, limits: &Limits) -> Result<Self, ApiError> {
        let mut o = Obj::new(v, "")?;
        let options = search_options(&mut o)?;
        let (queries, batch) = match many(&mut o, "queries", limits)? {
            Some(list) => {
                if ["text", "image", "vector", "id"].iter().any(|k| o.has(k)) {
                    return Err(ApiError::field(
                        "invalid_value",
                        "queries",
                        "give either queries or one query's text/image/vector/id, not both",
                    ));
                }
                let mut qs = Vec::with_capacity(list.len());
                for (i, q) in list.iter().enumerate() {
                    let mut qo = Obj::new(q, &format!("queries[{i}]."))?;
                    qs.push(content(&mut qo, limits)?);
                    qo.finish(&[CONTENT_FIELDS])?;
                }
                (qs, true)
            }
            None => (vec![content(&mut o, limits)?], false),
        };
        o.finish(&[CONTENT_FIELDS, SEARCH_FIELDS])?;
        Ok(QueryRequest {
            queries,
            batch,
            options,
        })
    }
}

fn new_item(o: &mut Obj, limits: &Limits) -> Result<NewItemRequest, ApiError> {
    let content = content(o, limits)?;
    if let Content::Id(_) = content {
        return Err(ApiError::field(
            "invalid_value",
            o.name("id"),
            "an item is added from a text, an image or a vector, not an id",
        ));
    }
    let label: Option<String> = o.get("label")?;
    let source: Option<String> = o.get("source")?;
    Ok(NewItemRequest {
        content,
        label: label.unwrap_or_default(),
        source,
    })
}

impl AddRequest {
    pub fn parse(v: &Value, limits: &Limits) -> Result<Self, ApiError> {
        let mut o = Obj::new(v, "")?;
        let req = match many(&mut o, "items", limits)? {
            Some(list) => {
                let mut items = Vec::with_capacity(list.len());
                for (i, it) in list.iter().enumerate() {
                    let mut io = Obj::new(it, &format!("items[{i}]."))?;
                    items.push(new_item(&mut io, limits)?);
                    io.finish(&[CONTENT_FIELDS, ITEM_FIELDS])?;
                }
                AddRequest { items, batch: true }
            }
            None => AddRequest {
                items: vec![new_item(&mut o, limits)?],
                batch: false,
            },
        };
        o.finish(&[CONTENT_FIELDS, ITEM_FIELDS, ADD_FIELDS])?;
        Ok(req)
    }
}

impl VerifyRequest {
    pub fn parse(v: &Value, limits: &Limits) -> Result<Self, ApiError> {
        let mut o = Obj::new(v, "")?;
        let content = content(&mut o, limits)?;
        let label: Option<String> = o.get("label")?;
        let label = match label {
            Some(l) if !l.is_empty() => l,
            Some(_) => {
                return Err(ApiError::field(
                    "empty",
                    "label",
                    "the claimed label is empty",
                ))
            }
            None => {
                return Err(ApiError::field(
                    "missing_field",
                    "label",
                    "give the claimed label",
                ))
            }
        };
        let threshold = threshold(&mut o)?;
        let aggregate: Option<Aggregate> = o.get("aggregate")?;
        o.finish(&[CONTENT_FIELDS, VERIFY_FIELDS])?;
        Ok(VerifyRequest {
            content,
            label,
            threshold,
            aggregate: aggregate.unwrap_or(Aggregate::Min),
        })
    }
}
