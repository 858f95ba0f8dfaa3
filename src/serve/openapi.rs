//! The OpenAPI 3.1 document at `/openapi.json`, built from the same field tables the request
//! parser checks bodies against ([`super::request`]), so the two cannot drift apart.

use super::request::{
    FieldDoc, Ty, ADD_FIELDS, CONTENT_FIELDS, ITEM_FIELDS, SEARCH_FIELDS, VERIFY_FIELDS,
};
use serde_json::{json, Map, Value};

fn ty(t: Ty) -> Value {
    match t {
        Ty::Str => json!({"type": "string"}),
        Ty::Int => json!({"type": "integer", "minimum": 0}),
        Ty::Num => json!({"type": "number"}),
        Ty::NumArray => json!({"type": "array", "items": {"type": "number"}}),
        Ty::Array(r) => {
            json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{r}")}})
        }
        Ty::Enum(vs) => json!({"type": "string", "enum": vs}),
    }
}

/// An object schema with the fields of `tables`.
fn object(tables: &[&[FieldDoc]], required: &[&str]) -> Value {
    let mut props = Map::new();
    for t in tables {
        for f in *t {
            let mut s = ty(f.ty);
            s["description"] = json!(f.doc);
            props.insert(f.name.to_string(), s);
        }
    }
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

fn ok(name: &str, what: &str) -> Value {
    json!({"description": what, "content": {"application/json": {"schema": schema(name)}}})
}

fn errors() -> Value {
    let e = |d: &str| json!({"description": d, "content": {"application/json": {"schema": schema("Error")}}});
    json!({
        "400": e("Bad request: malformed JSON, wrong type, unknown field, wrong dimension, empty text, undecodable image (the field is named)"),
        "401": e("Missing or wrong bearer token"),
        "404": e("Unknown index or item id"),
        "413": e("Body larger than the limit"),
        "415": e("Body is not JSON"),
        "503": e("Queue full, timed out or stopping (with Retry-After)"),
    })
}

fn op(summary: &str, req: Option<&str>, resp: &str, resp_doc: &str) -> Value {
    let mut responses = errors();
    responses["200"] = ok(resp, resp_doc);
    let mut o = json!({
        "summary": summary,
        "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": responses,
        "security": [{"bearer": []}],
    });
    if let Some(r) = req {
        o["requestBody"] = body(r);
    }
    o
}

/// The document.
pub fn document() -> Value {
    let hit = json!({
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "label": {"type": "string"},
            "source": {"type": "string", "description": "The text itself for text items, else the file or `vector`."},
            "distance": {"type": "number", "description": "Under the index's metric; smaller is closer."},
            "similarity": {"type": "number", "description": "Greater is closer."},
            "duplicate": {"type": "boolean", "description": "distance <= threshold."},
        },
    });
    let answer = json!({
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "threshold": {"type": ["number", "null"]},
            "results": {"type": "array", "items": schema("QueryHit"), "description": "An index that finds faces: the first face's."},
            "identity": {"type": "string"},
            "faces": {
                "type": "array",
                "description": "An index whose encoder finds faces, queried with a photo: one answer per face found, best detection first.",
                "items": {"type": "object", "properties": {
                    "box": {"type": "array", "items": {"type": "integer"}, "description": "[left, top, right, bottom] in photo pixels."},
                    "score": {"type": "number", "description": "The detector's score."},
                    "threshold": {"type": ["number", "null"]},
                    "results": {"type": "array", "items": schema("QueryHit")},
                    "identity": {"type": "string"},
                }},
            },
        },
    });
    let mut delete = op(
        "Delete an item (durable on answer)",
        None,
        "Deleted",
        "The id deleted",
    );
    delete["parameters"]
        .as_array_mut()
        .expect("array")
        .push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "twindex serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Near-duplicate search over twindex indexes. Every error is {\"error\": {\"code\", \"message\", \"field\"}}.",
        },
        "paths": {
            "/v1/indexes": {"get": {"summary": "The served indexes", "responses": {"200": ok("IndexList", "Indexes")}, "security": [{"bearer": []}]}},
            "/v1/indexes/{name}": {"get": op("One index: size, dim, metric, encoder, threshold", None, "IndexInfo", "The index")},
            "/v1/indexes/{name}/query": {"post": op("Nearest neighbours with the duplicate decision (one query, or `queries` for many)", Some("QueryRequest"), "QueryResponse", "One answer, or {answers: [...]} for the batch form")},
            "/v1/indexes/{name}/items": {"post": op("Add items; answered with their ids once durable", Some("AddRequest"), "Added", "The new ids")},
            "/v1/indexes/{name}/items/{id}": {"delete": delete},
            "/v1/indexes/{name}/verify": {"post": op("Accept or reject a claimed label", Some("VerifyRequest"), "Verification", "The decision")},
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Ready (503 while stopping)", "responses": {"200": {"description": "ready"}, "503": {"description": "stopping"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}, "security": [{"bearer": []}]}},
            "/": {"get": {"summary": "The search page", "responses": {"200": {"description": "HTML"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Content": object(&[CONTENT_FIELDS], &[]),
                "QueryRequest": object(&[CONTENT_FIELDS, SEARCH_FIELDS], &[]),
                "NewItem": object(&[CONTENT_FIELDS, ITEM_FIELDS], &[]),
                "AddRequest": object(&[CONTENT_FIELDS, ITEM_FIELDS, ADD_FIELDS], &[]),
                "VerifyRequest": object(&[CONTENT_FIELDS, VERIFY_FIELDS], &["label"]),
                "QueryHit": hit,
                "Answer": answer,
                "QueryResponse": {"oneOf": [schema("Answer"), {"type": "object", "properties": {"answers": {"type": "array", "items": schema("Answer")}}}]},
                "Added": {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}}}},
                "Deleted": {"type": "object", "properties": {"deleted": {"type": "integer"}}},
                "Verification": {"type": "object", "properties": {
                    "label": {"type": "string"}, "accepted": {"type": "boolean"},
                    "decision": {"type": "string", "enum": ["accept", "reject"]},
                    "distance": {"type": "number"}, "threshold": {"type": "number"},
                    "aggregate": {"type": "string"}, "references": {"type": "integer"},
                    "nearest_id": {"type": "integer"}}},
                "IndexInfo": {"type": "object", "properties": {
                    "name": {"type": "string"}, "items": {"type": "integer"}, "dim": {"type": "integer"},
                    "metric": {"type": "string"}, "encoder": {"type": "string", "enum": ["text", "image", "vectors"]},
                    "threshold": {"type": ["number", "null"]}, "backend": {"type": "string"},
                    "generation": {"type": "integer"}, "labels": {"type": "integer"},
                    "log_records": {"type": "integer"}, "writable": {"type": "boolean"}}},
                "IndexList": {"type": "object", "properties": {"indexes": {"type": "array", "items": schema("IndexInfo")}}},
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
                    "required": ["code", "message"]}}},
            },
        },
    })
}
