//! A run archived into a segment through the API: read, listed and restarted like any
//! other, told apart only by its `archived` field; an action that would change it is a
//! conflict.

use axum::http::{Method, StatusCode};
use cairn_client::api::{RunResponse, RunsPage};
use serde_json::json;

use super::{ADMIN, Api, GROUP};
use crate::datamanager::DmError;
use crate::datamanager::testing::{archived_run, segment_waiting};

#[tokio::test]
async fn an_archived_run_is_read_listed_and_restarted_and_never_changed() {
    let api = Api::start().await;
    let dm = api.dm();
    let live = api.call(Method::GET, "/runs", Some(ADMIN), None).await;
    assert!(live.parse::<RunsPage>().runs.is_empty());
    let run = archived_run(&dm, GROUP).await.value;
    let path = format!("/runs/{}", run.id);
    let before: RunResponse = api
        .call(Method::GET, &path, Some(ADMIN), None)
        .await
        .parse();

    segment_waiting(&dm, &api.blobs, 10).await;
    assert!(matches!(
        dm.run(&run.id).await,
        Err(DmError::NotFound { .. })
    ));

    let after = api.call(Method::GET, &path, Some(ADMIN), None).await;
    assert_eq!(after.status, StatusCode::OK, "{:?}", after.body);
    let after: RunResponse = after.parse();
    assert_eq!(after, before, "the same answer from the segment");
    assert!(after.run.archived);

    let listed: RunsPage = api
        .call(Method::GET, "/runs", Some(ADMIN), None)
        .await
        .parse();
    assert_eq!(listed.runs, vec![after.run.clone()]);

    let stop = api
        .call(
            Method::PUT,
            &format!("{path}/actions"),
            Some(ADMIN),
            Some(&json!({ "action": "stop" })),
        )
        .await;
    assert_eq!(stop.status, StatusCode::CONFLICT, "{:?}", stop.body);

    let restarted = api
        .call(
            Method::POST,
            &format!("{path}/restart"),
            Some(ADMIN),
            Some(&json!({ "from_start": true })),
        )
        .await;
    assert!(restarted.status.is_success(), "{:?}", restarted.body);
    let restarted: RunResponse = restarted.parse();
    assert_ne!(restarted.run.id, run.id);
    assert_eq!(restarted.run_config.group, GROUP);
}
