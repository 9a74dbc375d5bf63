//! The web page in a real browser (issue 15): headless Chromium driven over WebDriver
//! ([`crate::support::webdriver`]) against a real `cairn serve` with its executor. Each
//! test signs in with a token, works the page through its stable hooks (the ids and
//! `data-testid`s listed at the top of `ui/app.js`), checks the page against the API, fails
//! on any error in the browser's console, and saves a screenshot under
//! `target/ui-screenshots/`.

use std::time::Duration;

use cairn_client::api::{CreateTokenRequest, TokenRole};
use cairn_client::run::RunResult;

use crate::support::process::TOKEN;
use crate::support::runs::{GROUP, create, one_step, task_id, wait_finished, wait_run};
use crate::support::service::ServiceProc;
use crate::support::webdriver::Browser;

/// How long the page may take to show what the API already says (a debug build on a
/// loaded machine).
const SHOWN: Duration = Duration::from_secs(60);

/// A browser and a `cairn serve` with its executor (in a temporary dir).
struct Rig {
    browser: Browser,
    node: ServiceProc,
    client: cairn_client::RunClient,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Option<Rig> {
        let browser = Browser::start(1280, 900).await?;
        let dir = tempfile::tempdir().unwrap();
        let node = ServiceProc::with_executor(&dir.path().join("n"), &[]);
        let client = node.client();
        Some(Rig {
            browser,
            node,
            client,
            _dir: dir,
        })
    }
}

/// Opens the page and signs in with `token`.
async fn sign_in(browser: &Browser, url: &str, token: &str) {
    browser.goto(&format!("{url}/")).await;
    let input = browser.wait_for("#signin-token", SHOWN).await;
    browser.type_into(&input, token).await;
    browser.click_on("#signin-submit", SHOWN).await;
    browser.wait_for("#nav-runs", SHOWN).await;
}

/// Fails the test on any error in the browser's console.
async fn no_console_errors(browser: &Browser) {
    let severe = browser.severe_console_entries().await;
    assert!(
        severe.is_empty(),
        "errors in the browser's console: {severe:#?}"
    );
}

fn row(run_id: &str) -> String {
    format!("[data-testid=run-row][data-run-id=\"{run_id}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_sees_a_run_appear_and_finish_in_the_runs_list() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (browser, node, client) = (&rig.browser, &rig.node, &rig.client);
    sign_in(browser, &node.url, TOKEN).await;
    browser.wait_for("#runs-table", SHOWN).await;

    let run = create(client, GROUP, &one_step("build", "sleep 1; echo built", "")).await;
    let id = run.run.id;
    // The list follows the run-event stream: the run shows up, then finishes.
    browser.wait_for(&row(&id), SHOWN).await;
    browser
        .wait_for_text(
            &format!("{} [data-testid=run-state]", row(&id)),
            SHOWN,
            |t| t.contains("success"),
        )
        .await;
    assert_eq!(
        wait_finished(client, &id).await.run.result,
        RunResult::Success
    );
    browser.screenshot("runs-list").await;
    no_console_errors(browser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_on_the_sign_in_form() {
    let Some(browser) = Browser::start(1024, 768).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    browser.goto(&format!("{}/", node.url)).await;
    let input = browser.wait_for("#signin-token", SHOWN).await;
    browser.type_into(&input, "not-the-token").await;
    browser.click_on("#signin-submit", SHOWN).await;
    let error = browser
        .wait_for_text("#signin-error", SHOWN, |t| !t.is_empty())
        .await;
    assert!(
        browser.find("#signin-form").await.is_some(),
        "still on the sign-in form"
    );
    // The token went nowhere but the API's header: not into the URL.
    let url = browser
        .script("return location.href", serde_json::json!([]))
        .await;
    assert!(
        !url.as_str().unwrap_or_default().contains("not-the-token"),
        "{url}"
    );
    println!("sign-in error: {error}");
    browser.screenshot("sign-in-refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_log_is_followed_while_it_grows() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (browser, node, client) = (&rig.browser, &rig.node, &rig.client);
    let run = create(
        client,
        GROUP,
        &one_step(
            "grow",
            "for i in $(seq 1 40); do echo growing-line-$i; sleep 0.25; done",
            "",
        ),
    )
    .await;
    let id = run.run.id.clone();
    let tid = task_id(&run, "grow");
    sign_in(browser, &node.url, TOKEN).await;
    browser
        .goto(&format!("{}/#/runs/{id}/tasks/{tid}?step=0", node.url))
        .await;
    // Part of the log while the step still runs, then all of it.
    let partial = browser
        .wait_for_text("#log-view", SHOWN, |t| t.contains("growing-line-3"))
        .await;
    assert!(
        !partial.contains("growing-line-40"),
        "the whole log at once: nothing was followed"
    );
    browser
        .wait_for_text("#log-view", SHOWN, |t| t.contains("growing-line-40"))
        .await;
    assert_eq!(
        wait_finished(client, &id).await.run.result,
        RunResult::Success
    );
    browser.screenshot("log-followed").await;
    no_console_errors(browser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_task_is_approved_from_the_run_page() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (browser, node, client) = (&rig.browser, &rig.node, &rig.client);
    let run = create(
        client,
        GROUP,
        &one_step("deploy", "echo deployed", "        approval: true\n"),
    )
    .await;
    let id = run.run.id.clone();
    let tid = task_id(&run, "deploy");
    sign_in(browser, &node.url, TOKEN).await;
    browser.goto(&format!("{}/#/runs/{id}", node.url)).await;
    browser.wait_for("[data-testid=task-graph]", SHOWN).await;
    let approve = format!("[data-testid=approve-task][data-task-id=\"{tid}\"]");
    browser.wait_for(&approve, SHOWN).await;
    browser.screenshot("approval-waiting").await;
    browser.click_on(&approve, SHOWN).await;
    let done = wait_run(client, &id, "the approved run to finish", |r| {
        r.run.phase.is_finished()
    })
    .await;
    assert_eq!(done.run.result, RunResult::Success);
    browser
        .wait_for(
            &format!("[data-testid=task-node][data-task-id=\"{tid}\"][data-status=success]"),
            SHOWN,
        )
        .await;
    browser.screenshot("approval-done").await;
    no_console_errors(browser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_restarted_from_the_run_page_and_a_read_only_token_cannot() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (browser, node, client) = (&rig.browser, &rig.node, &rig.client);
    let run = create(client, GROUP, &one_step("flaky", "echo trying; exit 3", "")).await;
    let id = run.run.id.clone();
    assert_eq!(
        wait_finished(client, &id).await.run.result,
        RunResult::Failed
    );

    // A read-only token sees the run but no action.
    let read_only = client
        .create_token(&CreateTokenRequest {
            role: TokenRole::ReadOnly,
            name: "ui test".into(),
        })
        .await
        .unwrap()
        .token;
    sign_in(browser, &node.url, &read_only).await;
    browser.goto(&format!("{}/#/runs/{id}", node.url)).await;
    browser.wait_for("[data-testid=task-graph]", SHOWN).await;
    for action in [
        "#action-restart-failed",
        "#action-restart-start",
        "#action-stop",
        "#action-cancel",
    ] {
        assert!(
            browser.find(action).await.is_none(),
            "a read-only token sees {action}"
        );
    }
    browser.screenshot("read-only-run").await;
    browser.click_on("#signout", SHOWN).await;

    // The admin restarts it from its failed tasks: a new run of the same group.
    sign_in(browser, &node.url, TOKEN).await;
    browser.goto(&format!("{}/#/runs/{id}", node.url)).await;
    browser.click_on("#action-restart-failed", SHOWN).await;
    let deadline = std::time::Instant::now() + SHOWN;
    let new_id = loop {
        let hash = browser
            .script("return location.hash", serde_json::json!([]))
            .await;
        let hash = hash.as_str().unwrap_or_default().to_string();
        if let Some(new_id) = hash.strip_prefix("#/runs/")
            && !new_id.is_empty()
            && new_id != id
            && !new_id.contains('/')
        {
            break new_id.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page did not move to the restarted run: {hash}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let restarted = client.run(&new_id).await.unwrap();
    assert_eq!(restarted.run.group, GROUP);
    assert_eq!(
        wait_finished(client, &new_id).await.run.result,
        RunResult::Failed,
        "the same failing step ran again"
    );
    browser.screenshot("restarted-run").await;
    no_console_errors(browser).await;
}

/// A 50k-line log opens without the DOM holding it all, and "jump to end" shows its last
/// line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifty_thousand_line_log_opens_and_jumps_to_its_end() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (browser, node, client) = (&rig.browser, &rig.node, &rig.client);
    let run = create(
        client,
        GROUP,
        &one_step("big", "seq -f \"big-log-line-%g\" 1 50000", ""),
    )
    .await;
    let id = run.run.id.clone();
    let tid = task_id(&run, "big");
    assert_eq!(
        wait_finished(client, &id).await.run.result,
        RunResult::Success
    );
    sign_in(browser, &node.url, TOKEN).await;
    browser
        .goto(&format!("{}/#/runs/{id}/tasks/{tid}?step=0", node.url))
        .await;
    // A finished log opens at its end.
    browser
        .wait_for_text("#log-view", SHOWN, |t| t.contains("big-log-line-50000"))
        .await;
    let in_dom = browser.count("#log-view .log-line").await;
    assert!(
        in_dom < 2_000,
        "{in_dom} log lines in the DOM: the view is not virtualised"
    );
    // Scrolled to the top, it shows the first lines, and not the last.
    let scroller = browser
        .script(
            "const v = document.querySelector('#log-view');
             const s = [v, ...v.querySelectorAll('*')]
                 .find((e) => e.scrollHeight > e.clientHeight + 10);
             if (!s) return null;
             s.scrollTop = 0;
             s.dispatchEvent(new Event('scroll'));
             return s.scrollHeight;",
            serde_json::json!([]),
        )
        .await;
    assert!(
        scroller.as_u64().is_some(),
        "nothing in the log view scrolls"
    );
    let top = browser
        .wait_for_text("#log-view", SHOWN, |t| t.contains("big-log-line-2\n"))
        .await;
    assert!(!top.contains("big-log-line-50000"), "{top}");
    browser.click_on("#log-jump-end", SHOWN).await;
    browser
        .wait_for_text("#log-view", SHOWN, |t| t.contains("big-log-line-50000"))
        .await;
    let in_dom = browser.count("#log-view .log-line").await;
    assert!(
        in_dom < 2_000,
        "{in_dom} log lines in the DOM after the jump"
    );
    browser.screenshot("big-log-end").await;
    no_console_errors(browser).await;
}
