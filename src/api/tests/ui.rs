//! The web page (`super::super::ui`): `/` and every asset served with its content type,
//! the Content-Security-Policy and the other strict headers, without a token while the
//! API beside it still asks for one; unknown assets are 404; every file the page refers
//! to is embedded and every embedded file is in `ui/`; the assets stay within 500 KB; and
//! `GET /whoami`, which the page uses to tell a read-only token from one that may act.

use std::collections::BTreeSet;

use super::*;
use crate::api::ui::{ASSETS, CSP, asset};

/// The most the embedded assets may weigh (issue 15).
const MAX_ASSET_BYTES: usize = 500 * 1024;

/// The API's router with the page's routes, as `cairn serve` merges them.
fn with_page(api: &Api) -> Router {
    api.router.clone().merge(crate::api::ui::router())
}

async fn get(app: &Router, path: &str, headers: &[(header::HeaderName, &str)]) -> Reply {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("a request"))
        .await
        .expect("the router's errors are responses");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a body");
    Reply {
        status,
        is_json: false,
        headers,
        body,
    }
}

fn header_of(r: &Reply, name: header::HeaderName) -> &str {
    r.headers
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn assert_strict(r: &Reply, what: &str) {
    assert_eq!(header_of(r, header::CONTENT_SECURITY_POLICY), CSP, "{what}");
    assert_eq!(
        header_of(r, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff",
        "{what}"
    );
    assert_eq!(header_of(r, header::X_FRAME_OPTIONS), "DENY", "{what}");
    assert_eq!(header_of(r, header::CACHE_CONTROL), "no-cache", "{what}");
}

#[test]
fn the_policy_allows_this_origin_only_and_no_inline_script() {
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(CSP.contains(directive), "{directive} missing from {CSP}");
    }
    assert!(!CSP.contains("unsafe-"), "{CSP}");
}

#[tokio::test]
async fn the_page_is_served_at_the_root_without_a_token() {
    let api = Api::start().await;
    let app = with_page(&api);
    let page = get(&app, "/", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        header_of(&page, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_strict(&page, "/");
    let text = std::str::from_utf8(&page.body).expect("UTF-8 HTML");
    assert!(text.starts_with("<!doctype html>"), "{text}");
    assert!(text.contains(r#"<script type="module" src="/ui/app.js">"#));
    // The API beside it still wants a token.
    let runs = get(&app, "/api/v1/runs", &[]).await;
    assert_eq!(runs.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_asset_is_served_with_its_content_type_and_the_policy() {
    let app = crate::api::ui::router();
    for a in ASSETS {
        let r = get(&app, &format!("/ui/{}", a.name), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", a.name);
        let expected = match a.name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("{}: an extension the test does not know: {other:?}", a.name),
        };
        assert_eq!(header_of(&r, header::CONTENT_TYPE), expected, "{}", a.name);
        assert_strict(&r, a.name);
        assert_eq!(&r.body[..], a.bytes, "{}", a.name);
    }
}

#[tokio::test]
async fn an_unchanged_asset_is_answered_304() {
    let app = crate::api::ui::router();
    let first = get(&app, "/ui/app.js", &[]).await;
    let tag = header_of(&first, header::ETAG).to_string();
    let again = get(&app, "/ui/app.js", &[(header::IF_NONE_MATCH, &tag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_strict(&again, "304");
    let other = get(&app, "/ui/app.js", &[(header::IF_NONE_MATCH, "\"other\"")]).await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_assets_are_not_found() {
    let app = crate::api::ui::router();
    for path in [
        "/ui/nothing.js",
        "/ui/APP.JS",
        "/ui/app.js/",
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/x/app.js",
    ] {
        let r = get(&app, path, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_strict(&r, path);
        assert_eq!(
            header_of(&r, header::CONTENT_TYPE),
            "text/plain; charset=utf-8"
        );
    }
}

/// The `/ui/…` names of `src="…"` and `href="…"` in `html`.
fn html_refs(html: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            let value = &rest[..rest.find('"').expect("a closed attribute")];
            if let Some(name) = value.strip_prefix("/ui/") {
                refs.push(name.to_string());
            }
        }
    }
    refs
}

/// The modules a module imports (`from "./x.js"`).
fn js_imports(js: &str) -> Vec<String> {
    js.match_indices("from \"./")
        .map(|(at, m)| {
            let rest = &js[at + m.len()..];
            rest[..rest.find('"').expect("a closed string")].to_string()
        })
        .collect()
}

#[test]
fn every_file_the_page_refers_to_is_embedded() {
    let html = std::str::from_utf8(asset("index.html").expect("the page").bytes).expect("UTF-8");
    let mut wanted: Vec<String> = html_refs(html);
    assert!(wanted.contains(&"app.js".to_string()), "{wanted:?}");
    assert!(wanted.contains(&"style.css".to_string()), "{wanted:?}");
    let mut seen = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        let a = asset(&name).unwrap_or_else(|| panic!("{name} is referred to but not embedded"));
        if seen.insert(name.clone()) && name.ends_with(".js") {
            wanted.extend(js_imports(std::str::from_utf8(a.bytes).expect("UTF-8")));
        }
    }
    // Nothing embedded is unused, but the page itself.
    let unused: Vec<&str> = ASSETS
        .iter()
        .map(|a| a.name)
        .filter(|n| *n != "index.html" && !seen.contains(*n))
        .collect();
    assert!(
        unused.is_empty(),
        "embedded but never referred to: {unused:?}"
    );
}

#[test]
fn every_file_of_the_ui_directory_is_embedded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("the ui directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
    assert_eq!(on_disk, embedded);
}

#[test]
fn the_page_has_no_inline_script_or_style() {
    for a in ASSETS.iter().filter(|a| a.name.ends_with(".html")) {
        let html = std::str::from_utf8(a.bytes).expect("UTF-8");
        for (at, _) in html.match_indices("<script") {
            let tag = &html[at..at + html[at..].find('>').expect("a closed tag")];
            assert!(
                tag.contains(" src=\""),
                "{}: an inline script: {tag}",
                a.name
            );
        }
        assert!(!html.contains(" style="), "{}: an inline style", a.name);
        assert!(!html.contains("<style"), "{}: an inline style", a.name);
        let handler = html.match_indices(" on").any(|(at, m)| {
            let rest = &html[at + m.len()..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!handler, "{}: an inline event handler", a.name);
    }
}

#[test]
fn the_assets_stay_within_500_kb() {
    let total: usize = ASSETS.iter().map(|a| a.bytes.len()).sum();
    assert!(
        total <= MAX_ASSET_BYTES,
        "the page's assets weigh {total} bytes, over {MAX_ASSET_BYTES}"
    );
}

/// The page shows action buttons only to a token that may act: `GET /whoami` says.
#[tokio::test]
async fn whoami_tells_read_only_from_user_and_admin() {
    let api = Api::start().await;
    let read_only = api.token("read-only").await;
    let user = api.token("user").await;
    for (token, role, can_act) in [
        (read_only.as_str(), "read-only", false),
        (user.as_str(), "user", true),
        (ADMIN, "admin", true),
    ] {
        let r = api.call(Method::GET, "/whoami", Some(token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.json(), json!({ "role": role, "can_act": can_act }));
    }
    let r = api.call(Method::GET, "/whoami", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
