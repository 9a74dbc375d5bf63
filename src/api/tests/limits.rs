//! What the router refuses before a handler runs: bodies over the JSON limit (413),
//! bodies that are not JSON (400), and everything but the maintenance routes while the
//! node is in maintenance (503) — each with the JSON error body of every failure.

use axum::http::{Method, StatusCode};
use cairn_client::api::RunsPage;

use super::{ADMIN, Api, GROUP, create_request};
use crate::api::v1::MAX_JSON_BYTES;
use crate::datamanager::testing::ONE_TASK;

#[tokio::test]
async fn a_json_body_over_the_limit_is_a_413_with_a_json_body() {
    let api = Api::start().await;
    let mut big = create_request(GROUP, ONE_TASK);
    big["config"]["content"] = format!("{ONE_TASK}#{}", "x".repeat(MAX_JSON_BYTES)).into();
    let body = serde_json::to_vec(&big).expect("JSON");
    assert!(body.len() > MAX_JSON_BYTES);
    api.call_bytes(Method::POST, "/runs", Some(ADMIN), Some(body))
        .await
        .assert_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "Failed to buffer the request body: length limit exceeded",
        );
    // Just under the limit, the same request is read: the handler refuses its config,
    // which is over the config limit (1 MiB) though the body is within its own.
    let mut fits = create_request(GROUP, ONE_TASK);
    let room = MAX_JSON_BYTES - serde_json::to_vec(&fits).expect("JSON").len();
    let content = format!("{ONE_TASK}#{}", "x".repeat(room - 1));
    fits["config"]["content"] = content.clone().into();
    let body = serde_json::to_vec(&fits).expect("JSON");
    assert_eq!(body.len(), MAX_JSON_BYTES);
    let reply = api
        .call_bytes(Method::POST, "/runs", Some(ADMIN), Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    let refused = reply.json();
    assert_eq!(refused["code"], "bad_request");
    assert_eq!(
        refused["message"],
        format!(
            ".agola/config.yml: the config is {} bytes, more than the limit of 1048576 bytes (1 MiB, as Agola)",
            content.len()
        )
    );
    let page: RunsPage = api
        .call(Method::GET, "/runs", Some(ADMIN), None)
        .await
        .parse();
    assert!(
        page.runs.is_empty(),
        "a refused request made a run: {page:?}"
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400_with_a_json_body() {
    let api = Api::start().await;
    let reply = api
        .call_bytes(
            Method::POST,
            "/runs",
            Some(ADMIN),
            Some(b"{\"group\": ".to_vec()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["code"], "bad_request");
    let message = body["message"].as_str().expect("a message");
    assert!(
        message.starts_with("Failed to parse the request body as JSON"),
        "{message}"
    );
}

#[tokio::test]
async fn in_maintenance_only_the_maintenance_routes_answer() {
    let api = Api::start().await;
    api.maintenance.send_replace(true);
    let gate = "the service is in maintenance mode: only /maintenance, /export and /import answer";
    api.call(
        Method::POST,
        "/runs",
        Some(ADMIN),
        Some(&create_request(GROUP, ONE_TASK)),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", gate);
    for path in ["/runs", "/runs/export", "/executors/e1/tasks"] {
        api.call(Method::GET, path, Some(ADMIN), None)
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", gate);
    }
    api.call_bytes(
        Method::POST,
        "/caches/import",
        Some(ADMIN),
        Some(b"data written in maintenance".to_vec()),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", gate);
    let status = api
        .call(Method::GET, "/maintenance", Some(ADMIN), None)
        .await;
    assert_eq!(status.status, StatusCode::OK, "{:?}", status.body);
    // Authentication still comes first: no token is a 401, not a 503.
    api.call(Method::GET, "/runs", None, None)
        .await
        .assert_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        );
    api.maintenance.send_replace(false);
    let page: RunsPage = api
        .call(Method::GET, "/runs", Some(ADMIN), None)
        .await
        .parse();
    assert!(page.runs.is_empty(), "{page:?}");
}
