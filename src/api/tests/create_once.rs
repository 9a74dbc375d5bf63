//! `POST /runs` under an idempotency key (issue 14: a create whose answer was lost made a
//! second run when sent again): the same key and request make their runs once, however
//! often and however concurrently they are sent; the same key with another request, or a
//! malformed key, is refused and makes nothing; records expire.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cairn_client::api::{CreateRunResponse, IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER};
use serde_json::Value;

use super::{ADMIN, Api, GROUP, Reply, create_request};
use crate::datamanager::testing::{CHAIN, ONE_TASK};

/// Two config runs: one request makes two runs.
const TWO_RUNS: &str = r#"runs:
  - name: build
    tasks:
      - name: a
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make } ]
  - name: lint
    tasks:
      - name: l
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: lint } ]
"#;

async fn create(api: &Api, key: &[u8], body: &Value) -> Reply {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/runs")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_KEY_HEADER, key)
        .body(Body::from(serde_json::to_vec(body).expect("JSON")))
        .expect("a request");
    api.send(req).await
}

fn ids(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let made: CreateRunResponse = reply.parse();
    made.runs.into_iter().map(|r| r.run.id).collect()
}

fn replayed(reply: &Reply) -> bool {
    reply
        .headers
        .get(IDEMPOTENT_REPLAYED_HEADER)
        .is_some_and(|v| v == "true")
}

async fn run_count(api: &Api) -> usize {
    let reply = api.call(Method::GET, "/runs", Some(ADMIN), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.json()["runs"].as_array().expect("runs").len()
}

#[tokio::test]
async fn the_same_key_and_request_sent_again_answers_with_the_runs_made_the_first_time() {
    let api = Api::start().await;
    let body = create_request(GROUP, TWO_RUNS);
    let first = create(&api, b"deploy-1", &body).await;
    let made = ids(&first);
    assert_eq!(made.len(), 2);
    assert!(!replayed(&first));
    let again = create(&api, b"deploy-1", &body).await;
    assert_eq!(ids(&again), made);
    assert!(replayed(&again));
    assert_eq!(run_count(&api).await, 2);
    // Another key is another creation.
    let other = create(&api, b"deploy-2", &body).await;
    assert_eq!(ids(&other).len(), 2);
    assert!(ids(&other).iter().all(|id| !made.contains(id)));
    assert_eq!(run_count(&api).await, 4);
    // The same request without a key is a new creation each time.
    api.create_runs(ONE_TASK).await;
    api.create_runs(ONE_TASK).await;
    assert_eq!(run_count(&api).await, 6);
}

#[tokio::test]
async fn the_same_request_sent_twice_at_once_makes_its_run_once() {
    let api = Api::start().await;
    let body = create_request(GROUP, CHAIN);
    let (a, b) = tokio::join!(
        create(&api, b"together", &body),
        create(&api, b"together", &body)
    );
    assert_eq!(ids(&a), ids(&b));
    assert!(
        replayed(&a) != replayed(&b),
        "one made it, the other found it"
    );
    assert_eq!(run_count(&api).await, 1);
}

#[tokio::test]
async fn a_key_used_for_another_request_is_refused_and_makes_nothing() {
    let api = Api::start().await;
    ids(&create(&api, b"k1", &create_request(GROUP, CHAIN)).await);
    let reply = create(&api, b"k1", &create_request(GROUP, ONE_TASK)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    let message = reply.json()["message"]
        .as_str()
        .expect("a message")
        .to_string();
    assert!(message.contains("idempotency key"), "{message}");
    assert_eq!(run_count(&api).await, 1);
}

#[tokio::test]
async fn a_malformed_key_is_a_400_that_makes_nothing() {
    let api = Api::start().await;
    let body = create_request(GROUP, CHAIN);
    let long = vec![b'k'; 256];
    for key in [
        &b""[..],
        b"has space",
        b"tab\tkey",
        &long,
        "ключ".as_bytes(),
    ] {
        let reply = create(&api, key, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{key:?}: {:?}",
            reply.body
        );
        let message = reply.json()["message"]
            .as_str()
            .expect("a message")
            .to_string();
        assert!(message.contains(IDEMPOTENCY_KEY_HEADER), "{message}");
    }
    // The longest key is fine.
    ids(&create(&api, &long[..255], &body).await);
    assert_eq!(run_count(&api).await, 1);
}

#[tokio::test]
async fn an_expired_record_no_longer_holds_its_key() {
    let api = Api::start().await;
    let body = create_request(GROUP, CHAIN);
    let first = ids(&create(&api, b"old", &body).await);
    let dm = api.dm();
    // Records younger than the cutoff stay.
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(dm.expire_create_records(past).await.expect("expired"), 0);
    assert_eq!(ids(&create(&api, b"old", &body).await), first);
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    assert_eq!(dm.expire_create_records(future).await.expect("expired"), 1);
    let again = ids(&create(&api, b"old", &body).await);
    assert_ne!(again, first);
    assert_eq!(run_count(&api).await, 2);
}
