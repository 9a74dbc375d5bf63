//! The OpenAPI document against the real router: every listed route answers (never the
//! fallback's "no such endpoint", never a 405) and no other method does on its path; the
//! document is public; and real replies match the schemas the document gives them.

use std::collections::BTreeSet;

use super::*;
use crate::api::openapi::{OPENAPI_PATH, document_json};
use crate::api::v1::{PREFIX, routes};

/// The fallback's message for a path no route matches.
const NO_ROUTE: &str = "no such endpoint";

/// `path` with every `{param}` filled: numbers where the handler parses one.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| match s {
            "{step}" => "0",
            s if s.starts_with('{') => "e1",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `method path` reaches a route: not the fallback, not a 405; `None` when a probe
/// cannot tell (a 404 to a HEAD has no body to tell the fallback from a handler's 404).
/// Only the status is read unless it is a 404 (a stream's body would never end).
async fn routed(api: &Api, method: &Method, path: &str) -> Option<bool> {
    let req = Request::builder()
        .method(method.clone())
        .uri(format!("{PREFIX}{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .expect("a request");
    let resp = api
        .router
        .clone()
        .oneshot(req)
        .await
        .expect("the router's errors are responses");
    match resp.status() {
        StatusCode::METHOD_NOT_ALLOWED => Some(false),
        StatusCode::NOT_FOUND if *method == Method::HEAD => None,
        StatusCode::NOT_FOUND => {
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("a body");
            let body: Value = serde_json::from_slice(&body).expect("a JSON error");
            Some(body["message"] != NO_ROUTE)
        }
        _ => Some(true),
    }
}

#[tokio::test]
async fn every_listed_route_is_served_and_no_other_method_on_its_path() {
    let api = Api::start().await;
    let listed: BTreeSet<(String, &str)> =
        routes().iter().map(|(m, p)| (m.to_string(), *p)).collect();
    let paths: BTreeSet<&str> = routes().iter().map(|(_, p)| *p).collect();
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let mut wrong = Vec::new();
    let mut probed = 0;
    for path in &paths {
        for method in &methods {
            // axum answers HEAD with the GET handler where there is no HEAD route.
            let expected = listed.contains(&(method.to_string(), *path))
                || (*method == Method::HEAD && listed.contains(&("GET".to_string(), *path)));
            let Some(got) = routed(&api, method, &concrete(path)).await else {
                continue;
            };
            probed += 1;
            if got != expected {
                wrong.push(format!("{method} {path}: routed {got}, listed {expected}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(
        probed > paths.len() * (methods.len() - 1),
        "{probed} probes told"
    );
    // The probe tells the fallback apart.
    assert_eq!(
        routed(&api, &Method::GET, "/no/such/route").await,
        Some(false)
    );
    assert_eq!(
        routed(&api, &Method::GET, "/runs/e1/nothing").await,
        Some(false)
    );
}

#[tokio::test]
async fn the_document_is_served_without_a_token_even_in_maintenance() {
    let api = Api::start().await;
    for maintenance in [false, true] {
        api.maintenance.send_replace(maintenance);
        let reply = api.call(Method::GET, OPENAPI_PATH, None, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.is_json);
        assert_eq!(reply.body, document_json().as_bytes());
    }
    let reply = api.call(Method::POST, OPENAPI_PATH, None, None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.json()["code"], "bad_request");
}

/// Checks `value` against `schema` in the subset of JSON Schema the document uses (`$ref`,
/// `type`, `enum`, `format: date-time`, `minimum`, `properties`, `required`,
/// `additionalProperties`, `items`, `allOf`, `oneOf`), more strictly in one way: every
/// member of an object must be declared (by its schema, its `allOf` siblings or
/// `additionalProperties`), so a field the schema misses fails.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    check_with(doc, schema, value, at, &BTreeSet::new())
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("a local schema ref: {r}"));
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// The member names `schema` declares, its `allOf` branches' included.
fn declared(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    let mut out: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for branch in schema["allOf"].as_array().into_iter().flatten() {
        out.extend(declared(doc, branch));
    }
    out
}

fn check_with(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    siblings: &BTreeSet<String>,
) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if schema.is_null() {
        return Err(format!("{at}: a ref to no schema"));
    }
    if let Some(branches) = schema["allOf"].as_array() {
        let mut all = declared(doc, schema);
        all.extend(siblings.iter().cloned());
        for b in branches {
            check_with(doc, b, value, at, &all)?;
        }
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let errors: Vec<String> = branches
            .iter()
            .filter_map(|b| check_with(doc, b, value, at, siblings).err())
            .collect();
        if errors.len() + 1 != branches.len() {
            return Err(format!(
                "{at}: {value} matches {} of the oneOf branches: {errors:?}",
                branches.len() - errors.len()
            ));
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("{at}: a bad type {other}")),
        };
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
        if !fits {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {values:?}"));
    }
    if schema["format"] == "date-time"
        && let Some(s) = value.as_str()
        && chrono::DateTime::parse_from_rfc3339(s).is_err()
    {
        return Err(format!("{at}: {s:?} is not a date-time"));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < min
    {
        return Err(format!("{at}: {n} is under the minimum {min}"));
    }
    if let Value::Object(members) = value {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !members.contains_key(name) {
                return Err(format!("{at}: no required member {name:?}"));
            }
        }
        let properties = schema["properties"].as_object();
        let open = &schema["additionalProperties"];
        let is_object = schema["type"] == "object" || properties.is_some();
        for (name, member) in members {
            let here = format!("{at}.{name}");
            if let Some(p) = properties.and_then(|p| p.get(name)) {
                check_with(doc, p, member, &here, &BTreeSet::new())?;
            } else if open.is_object() {
                check_with(doc, open, member, &here, &BTreeSet::new())?;
            } else if is_object && !siblings.contains(name) {
                return Err(format!("{at}: member {name:?} is not in the schema"));
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check_with(doc, item, v, &format!("{at}[{i}]"), &BTreeSet::new())?;
        }
    }
    Ok(())
}

/// Asserts `reply` is the `status` reply of `method path` and matches its documented
/// JSON schema.
fn assert_documented(doc: &Value, method: &str, path: &str, reply: &Reply, status: u16) {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "{method} {path}: {:?}",
        reply.body
    );
    let op = &doc["paths"][format!("{PREFIX}{path}")][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path}: no JSON schema for {status}"
    );
    let at = format!("{} {path} {status}", method.to_ascii_uppercase());
    if let Err(e) = check(doc, schema, &reply.json(), &at) {
        panic!("{e}");
    }
}

/// A config with most of Agola's options (every step type, volumes, registry auth,
/// depends conditions, workspaces and caches), so the run's config has them all.
const RICH: &str = include_str!("../../../tests/fixtures/agola/all-agola-options.yml");

#[tokio::test]
async fn real_replies_match_their_documented_schemas() {
    let doc: Value = serde_json::from_str(&document_json()).expect("the document");
    let api = Api::start().await;

    let mut request = create_request(GROUP, RICH);
    request["variables"] = json!({ "hub_password": "p", "other_user": "u", "secret": "s" });
    let created = api
        .call(Method::POST, "/runs", Some(ADMIN), Some(&request))
        .await;
    assert_documented(&doc, "post", "/runs", &created, 201);
    let run = created.json()["runs"][0].clone();
    assert_eq!(run["run"]["phase"], "queued", "{run}");
    let run_id = run["run"]["id"].as_str().expect("a run id").to_string();
    let steps = &run["run_config"]["tasks"][task_id(&run, "main")]["steps"];
    assert!(steps.as_array().is_some_and(|s| s.len() >= 6), "{steps}");

    let user = api.token("user").await;
    let reply = api
        .call(Method::GET, &format!("/runs/{run_id}"), Some(&user), None)
        .await;
    assert_documented(&doc, "get", "/runs/{id}", &reply, 200);
    let reply = api
        .call(Method::GET, "/runs?limit=5", Some(&user), None)
        .await;
    assert_documented(&doc, "get", "/runs", &reply, 200);
    let reply = api.call(Method::GET, "/runs/123", Some(&user), None).await;
    assert_documented(&doc, "get", "/runs/{id}", &reply, 400);
    let other = format!("{run_id}9");
    let reply = api
        .call(Method::GET, &format!("/runs/{other}"), Some(&user), None)
        .await;
    assert_documented(&doc, "get", "/runs/{id}", &reply, 404);

    // An executor: registration, its task with the spec data, a log read's error details.
    let registration = api.token("registration").await;
    let reply = api
        .call(
            Method::POST,
            "/executors/e1",
            Some(&registration),
            Some(&executor("e1")),
        )
        .await;
    assert_documented(&doc, "post", "/executors/{id}", &reply, 200);
    let credential = reply.json()["credential"]
        .as_str()
        .expect("a credential")
        .to_string();
    let task = task_id(&run, "left");
    let handed = cairn_client::executor::ExecutorTask::new(&task, &run_id, "e1", 0);
    assert!(
        api.dm()
            .create_executor_task(&handed)
            .await
            .expect("hand out")
    );
    let reply = api
        .call(Method::GET, "/executors/e1/tasks", Some(&credential), None)
        .await;
    assert_documented(&doc, "get", "/executors/{id}/tasks", &reply, 200);
    let reply = api
        .call(
            Method::GET,
            &format!("/executors/e1/tasks/{task}"),
            Some(&credential),
            None,
        )
        .await;
    assert_documented(&doc, "get", "/executors/{id}/tasks/{task_id}", &reply, 200);
    let reply = api.call(Method::GET, "/executors", Some(&user), None).await;
    assert_documented(&doc, "get", "/executors", &reply, 200);
    let logs = format!("/runs/{run_id}/tasks/main/logs");
    let reply = api
        .call(
            Method::GET,
            &format!("{logs}?step=setup&offset=99"),
            Some(&user),
            None,
        )
        .await;
    assert_documented(&doc, "get", "/runs/{id}/tasks/{task_id}/logs", &reply, 416);

    let reply = api.call(Method::GET, "/cluster", Some(&user), None).await;
    assert_documented(&doc, "get", "/cluster", &reply, 200);
    let reply = api
        .call(Method::GET, "/maintenance", Some(&user), None)
        .await;
    assert_documented(&doc, "get", "/maintenance", &reply, 200);
    let reply = api.call(Method::GET, "/tokens", Some(ADMIN), None).await;
    assert_documented(&doc, "get", "/tokens", &reply, 200);
    let body = json!({ "role": "read-only", "name": "a reader" });
    let reply = api
        .call(Method::POST, "/tokens", Some(ADMIN), Some(&body))
        .await;
    assert_documented(&doc, "post", "/tokens", &reply, 201);
    let reply = api.call(Method::GET, "/tokens", Some(&user), None).await;
    assert_documented(&doc, "get", "/tokens", &reply, 403);
    let reply = api.call(Method::GET, "/tokens", None, None).await;
    assert_documented(&doc, "get", "/tokens", &reply, 401);

    let reply = api
        .call_bytes(
            Method::POST,
            "/sources",
            Some(&user),
            Some(b"a tar".to_vec()),
        )
        .await;
    assert_documented(&doc, "post", "/sources", &reply, 201);
    let action = json!({ "action": "cancel" });
    let reply = api
        .call(
            Method::PUT,
            &format!("/runs/{run_id}/actions"),
            Some(&user),
            Some(&action),
        )
        .await;
    assert_documented(&doc, "put", "/runs/{id}/actions", &reply, 200);
}

/// The checker refuses what it should, so the test above means something.
#[test]
fn the_schema_check_refuses_undeclared_missing_and_mistyped_members() {
    let doc: Value = serde_json::from_str(&document_json()).expect("the document");
    let error = json!({ "$ref": "#/components/schemas/ApiError" });
    assert!(
        check(
            &doc,
            &error,
            &json!({"code": "conflict", "message": "m"}),
            "e"
        )
        .is_ok()
    );
    for bad in [
        json!({"code": "conflict"}),
        json!({"code": "nope", "message": "m"}),
        json!({"code": "conflict", "message": 1}),
        json!({"code": "conflict", "message": "m", "extra": true}),
    ] {
        assert!(check(&doc, &error, &bad, "e").is_err(), "{bad}");
    }
    let token = json!({ "$ref": "#/components/schemas/CreateTokenResponse" });
    let ok = json!({"token": "t", "id": "1", "name": "n", "role": "user", "created": "2026-01-01T00:00:00Z"});
    assert!(check(&doc, &token, &ok, "t").is_ok());
    let mut bad = ok.clone();
    bad["created"] = json!("yesterday");
    assert!(check(&doc, &token, &bad, "t").is_err());
    let mut bad = ok;
    bad["surplus"] = json!(1);
    assert!(check(&doc, &token, &bad, "t").is_err());
}
