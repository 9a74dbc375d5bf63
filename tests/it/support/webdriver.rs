//! A small WebDriver client for the browser tests (issue 15): Debian's `chromedriver`
//! driving headless `chromium`, spoken to over the W3C WebDriver protocol with `reqwest`
//! (a few JSON endpoints; no WebDriver crate in the build). [`Browser::start`] spawns a
//! chromedriver on a free port and opens one session; dropping it ends both.
//!
//! When chromium or chromedriver is missing, [`Browser::start`] returns `None` with the
//! reason printed, or panics with it where browser tests are required (`CI` or
//! `CAIRN_REQUIRE_BROWSER_TESTS` set): `.ci/run` installs both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::process::free_port;

/// The W3C key of an element reference in a JSON reply.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian puts them.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether a missing browser fails the test rather than skipping it.
fn required() -> bool {
    ["CI", "CAIRN_REQUIRE_BROWSER_TESTS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// A chromedriver process and one browser session in it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

/// An element of the page, by its WebDriver reference.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// A headless Chromium of `width`×`height`, or `None` (printed) when it cannot run here
    /// and browser tests are not required.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(bin).exists() {
                let why = format!("{bin} is missing (apt-get install chromium chromium-driver)");
                assert!(!required(), "browser tests are required: {why}");
                println!("skipping a browser test: {why}");
                return None;
            }
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a client");
        // Ready when /status answers.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not answer on {base}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--no-first-run",
                        format!("--window-size={width},{height}"),
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
        };
        let created = browser.command("POST", "/session", caps).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_string();
        Some(browser)
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test.
    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        match self.try_command(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("webdriver {method} {path}: {e}"),
        }
    }

    async fn try_command(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", &self.at("/url"), json!({ "url": url }))
            .await;
    }

    /// The first element matching the CSS `selector`, if any now.
    pub async fn find(&self, selector: &str) -> Option<Element> {
        let body = json!({ "using": "css selector", "value": selector });
        let found = self
            .try_command("POST", &self.at("/element"), body)
            .await
            .ok()?;
        found[ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_string()))
    }

    /// How many elements match `selector` now.
    pub async fn count(&self, selector: &str) -> usize {
        let body = json!({ "using": "css selector", "value": selector });
        self.command("POST", &self.at("/elements"), body)
            .await
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Waits until an element matches `selector` (polling; the page renders when its data
    /// arrives).
    pub async fn wait_for(&self, selector: &str, timeout: Duration) -> Element {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(selector).await {
                return e;
            }
            if std::time::Instant::now() > deadline {
                let html = self
                    .script("return document.body.innerHTML", json!([]))
                    .await;
                panic!("no element {selector:?} within {timeout:?}; the page: {html}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element at `selector` satisfies `check`; that text.
    pub async fn wait_for_text(
        &self,
        selector: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(e) = self.find(selector).await
                && let Ok(text) = self.try_text(&e).await
            {
                if check(&text) {
                    return text;
                }
                last = text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the text of {selector:?} never passed the check within {timeout:?}; last: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element at `selector`, finding it again while the page re-renders it
    /// (a live view replaces its nodes; a reference to a replaced one is stale).
    pub async fn click_on(&self, selector: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let e = self.wait_for(selector, timeout).await;
            let path = self.at(&format!("/element/{}/click", e.0));
            match self.try_command("POST", &path, json!({})).await {
                Ok(_) => return,
                Err(why) => assert!(
                    std::time::Instant::now() < deadline,
                    "clicking {selector:?}: {why}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        self.command(
            "POST",
            &self.at(&format!("/element/{}/value", e.0)),
            json!({ "text": text }),
        )
        .await;
    }

    async fn try_text(&self, e: &Element) -> Result<String, String> {
        let v = self
            .try_command(
                "GET",
                &self.at(&format!("/element/{}/text", e.0)),
                json!({}),
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            &self.at("/execute/sync"),
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// The browser console's entries of level SEVERE (uncaught errors, failed loads).
    pub async fn severe_console_entries(&self) -> Vec<String> {
        let entries = self
            .try_command("POST", &self.at("/se/log"), json!({ "type": "browser" }))
            .await
            .unwrap_or_default();
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Saves a screenshot as `target/ui-screenshots/<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self
            .command("GET", &self.at("/screenshot"), json!({}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot");
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes chromium; then the driver goes.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = reqwest::Client::new()
                        .delete(url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
