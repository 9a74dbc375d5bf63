//! The OpenAPI 3.1 document of `/api/v1` ([`document`]): generated from the wire types of
//! `cairn-client` (their `utoipa::ToSchema`, behind that crate's `openapi` feature) and the
//! `#[utoipa::path]` attribute of each handler; served by [`serve`] at
//! `GET /api/v1/openapi.json` without a token (it describes the API, not a node's data:
//! SECURITY.md), and committed as `openapi.json` at the repository root, which a test keeps
//! equal to [`document`].
//!
//! Every operation names the roles that may call it as the role list of its `bearer`
//! requirement (OpenAPI 3.1 allows role names there), checked by a test against
//! [`super::auth::need`] and [`super::auth::permits`]. The document lists exactly the
//! routes of [`super::v1::routes`]: a test fails on a route served but not documented and
//! on one documented but not served. The etcd gateway (`/v3/…`) keeps etcd's own API, and
//! `/metrics` (Prometheus' text format, the metrics role) and the peer route are outside
//! `/api/v1`: none of them is in this document.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use cairn_client::ErrorCode;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::v1::PREFIX;
use super::{auth, blobs, cluster, executors, maintenance, run_watch, runs};

/// Where the document is served, relative to [`PREFIX`].
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The name of the bearer-token security scheme.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cairn run service API",
        version = "1",
        description = "The run service of Cairn, a CI/CD run service: runs, their logs and \
            events, executors and their tasks, blobs, tokens, maintenance. Every error is a JSON \
            body `{code, message, details}` (`ApiError`) with the HTTP status of its `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        runs::create,
        runs::list,
        runs::events,
        runs::get,
        run_watch::watch,
        runs::restart,
        runs::action,
        runs::task_action,
        blobs::logs,
        executors::list,
        executors::heartbeat,
        executors::delete,
        executors::revoke_credential,
        executors::tasks,
        executors::task,
        executors::status,
        cluster::cluster,
        maintenance::status,
        maintenance::enable,
        maintenance::disable,
        maintenance::export,
        auth::create_token,
        auth::list_tokens,
        auth::revoke_token,
        auth::whoami,
        blobs::append_log,
        blobs::upload_archive,
        blobs::download_archive,
        blobs::get_cache,
        blobs::head_cache,
        blobs::put_cache,
        blobs::upload_source,
        maintenance::import,
        blobs::download_source,
        serve,
    ),
    // Named by reference only: the error body of the common responses, the `data` of the
    // run-event stream, the optional body of a restart.
    components(schemas(
        cairn_client::ApiError,
        ErrorCode,
        cairn_client::run::RunEvent,
        cairn_client::api::RestartRunRequest,
    )),
    modifiers(&Conventions),
    tags(
        (name = "runs", description = "Runs: create, read, follow, act on"),
        (name = "logs", description = "Step logs: read and follow; appended by executors"),
        (name = "executors", description = "Executors: registration, heartbeats, their tasks"),
        (name = "blobs", description = "Workspace archives, caches and source snapshots"),
        (name = "cluster", description = "The answering node's view of the cluster"),
        (name = "maintenance", description = "Maintenance mode, export and import"),
        (name = "tokens", description = "Stored API tokens"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The document as served and committed.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// [`document`] as pretty-printed JSON, ending with a newline (the committed file's form).
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .expect("the document is plain data, which always serializes");
    json.push('\n');
    json
}

/// `GET /api/v1/openapi.json`: the document (no token needed; computed once).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of `/api/v1`", content_type = "application/json", body = Object)),
    security(()),
)]
pub async fn serve() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(document_json).as_str();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// What every operation shares, applied once the paths are collected: the `/api/v1`
/// prefix, the bearer scheme, and the error responses of the layers in front of every
/// handler (authentication, roles, maintenance, body limits, deadlines).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let paths = std::mem::take(&mut doc.paths.paths);
        doc.paths.paths = paths
            .into_iter()
            .map(|(path, mut item)| {
                for (method, op) in operations_mut(&mut item) {
                    add_common_errors(method, op);
                }
                (format!("{PREFIX}{path}"), item)
            })
            .collect();
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "`Authorization: Bearer <token>`. The roles an operation lists are those any one of \
             which may call it: `admin` (the data dir's token, or a stored admin token), `user`, \
             `read-only`, `registration` (stored tokens of `cairn token create`) and `executor` \
             (an executor's own credential, for its own id and the blobs of its tasks' runs)."
                .to_string(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
    }
}

/// The operations of a path item with their (lowercase) methods.
pub(crate) fn operations_mut(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("options", item.options.as_mut()),
        ("head", item.head.as_mut()),
        ("patch", item.patch.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

/// Adds the errors every authenticated operation may answer, unless it documents them itself.
fn add_common_errors(method: &str, op: &mut Operation) {
    let authenticated = op
        .security
        .as_ref()
        .is_some_and(|s| s.iter().any(|r| *r != SecurityRequirement::default()));
    let mut common = vec![("500", "An internal failure (storage), logged by the server")];
    if authenticated {
        common.extend([
            ("401", "No bearer token, or one no one has"),
            ("403", "The token's role may not call this operation"),
            (
                "503",
                "The node is in maintenance mode, or the store cannot answer now (no leader, \
                 a node stopping, no space): another node may",
            ),
        ]);
    }
    if op.request_body.is_some() {
        common.push(("413", "The body is over the operation's limit"));
    }
    if method != "get" && method != "head" {
        common.push((
            "504",
            "The request's deadline passed; a write may have been applied",
        ));
    }
    for (status, description) in common {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    }
}

/// A response whose body is the JSON error.
fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ApiError"))),
        )
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::http::Method;
    use serde_json::Value;

    use super::*;
    use crate::api::auth::{Caller, need, permits};

    fn doc() -> Value {
        serde_json::from_str(&document_json()).expect("the document is JSON")
    }

    /// Every (METHOD, path) of the document.
    fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
        let mut out = BTreeMap::new();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                out.insert((method.to_ascii_uppercase(), path.clone()), op.clone());
            }
        }
        out
    }

    /// The committed `openapi.json` is the generated one. `CAIRN_UPDATE_OPENAPI=1 cargo
    /// test --lib openapi` rewrites it.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let generated = document_json();
        if std::env::var_os("CAIRN_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(&path, &generated).expect("openapi.json written");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi.json is not the document the code generates: regenerate it with \
             `CAIRN_UPDATE_OPENAPI=1 cargo test --lib api::openapi` and commit it"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_under_api_v1() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let ops = operations(&doc);
        assert!(!ops.is_empty());
        for (method, path) in ops.keys() {
            assert!(path.starts_with("/api/v1/"), "{method} {path}");
        }
    }

    /// Every route of the router is documented and every documented operation is a route
    /// (`super::super::tests::openapi` checks the routes answer on a real router).
    #[test]
    fn the_document_lists_exactly_the_routes_served() {
        let documented: BTreeSet<(String, String)> = operations(&doc()).into_keys().collect();
        let served: BTreeSet<(String, String)> = super::super::v1::routes()
            .into_iter()
            .map(|(m, p)| (m.to_string(), format!("{PREFIX}{p}")))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not documented: {undocumented:?}; documented but not served: {unserved:?}"
        );
    }

    /// Every `$ref` of the document names a schema it has.
    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = doc();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50, "{}", all.len());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a schema of the document"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} names no schema"
            );
        }
    }

    #[test]
    fn operation_ids_are_unique_and_every_operation_has_a_tag_and_a_summary() {
        let mut ids = BTreeSet::new();
        for ((method, path), op) in operations(&doc()) {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(!id.is_empty(), "{method} {path}: no operationId");
            assert!(ids.insert(id.clone()), "{method} {path}: {id} twice");
            assert!(op["tags"].as_array().is_some_and(|t| t.len() == 1), "{id}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{id}"
            );
        }
    }

    fn caller_of(role: &str) -> Caller {
        match role {
            "admin" => Caller::Admin,
            "user" => Caller::User,
            "read-only" => Caller::ReadOnly,
            "registration" => Caller::Registration,
            "metrics" => Caller::Metrics,
            "executor" => Caller::Executor("e1".into()),
            other => panic!("unknown role {other:?}"),
        }
    }

    /// The roles each operation documents are exactly those `auth::need` and
    /// `auth::permits` let through (an executor for its own id), and only the document
    /// itself is public.
    #[test]
    fn each_operation_documents_the_roles_that_may_call_it() {
        let roles = [
            "admin",
            "user",
            "read-only",
            "registration",
            "executor",
            "metrics",
        ];
        let mut public = Vec::new();
        for ((method, path), op) in operations(&doc()) {
            let reqs = op["security"]
                .as_array()
                .expect("every operation has security");
            if reqs
                .iter()
                .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
            {
                public.push(path);
                continue;
            }
            assert_eq!(reqs.len(), 1, "{method} {path}");
            let documented: BTreeSet<&str> = reqs[0][BEARER]
                .as_array()
                .expect("a bearer requirement")
                .iter()
                .map(|r| r.as_str().expect("a role"))
                .collect();
            // Path parameters as an executor's own id would fill them.
            let concrete = path
                .split('/')
                .map(|s| if s.starts_with('{') { "e1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.as_bytes()).expect("a method");
            let allowed: BTreeSet<&str> = roles
                .into_iter()
                .filter(|r| permits(&caller_of(r), &need(&m, &concrete)))
                .collect();
            assert_eq!(documented, allowed, "{method} {path}");
            for status in ["401", "403", "503"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ApiError",
                    "{method} {path} {status}"
                );
            }
        }
        assert_eq!(public, [format!("{PREFIX}{OPENAPI_PATH}")]);
    }

    #[test]
    fn error_responses_are_the_json_error_body() {
        let doc = doc();
        for ((method, path), op) in operations(&doc) {
            for (status, resp) in op["responses"].as_object().expect("responses") {
                if !(status.starts_with('4') || status.starts_with('5')) || method == "HEAD" {
                    continue;
                }
                assert_eq!(
                    resp["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ApiError",
                    "{method} {path} {status}"
                );
            }
        }
        let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
        let mut codes: Vec<&str> = codes
            .as_array()
            .expect("ErrorCode is an enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        codes.sort_unstable();
        let mut expected: Vec<String> = [
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::TooLarge,
            ErrorCode::RangeNotSatisfiable,
            ErrorCode::TooManyRequests,
            ErrorCode::Internal,
        ]
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .expect("a code serializes")
                .as_str()
                .expect("as a string")
                .to_string()
        })
        .collect();
        expected.sort_unstable();
        assert_eq!(codes, expected);
    }
}
