//! The web page (issue 15): `GET /` and its assets under `/ui/…`, embedded in the binary
//! from the top-level `ui/` directory (hand-written HTML, CSS and ES modules; no build
//! step). The page and its assets need no token: they hold no data. The page signs in
//! with an API token, keeps it in the browser's session storage and sends it as a bearer
//! header to `/api/v1`, which checks it as for any client.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles, images and
//! connections from this origin only, no inline script, no framing), `nosniff`, its
//! content type and `Cache-Control: no-cache` with an `ETag` (asset names carry no hash,
//! so a browser revalidates and gets a 304 while the binary is the same).
//!
//! This module owns only the serving; it knows nothing of runs or the API.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Where the assets are served (the page itself is at `/`).
pub const ASSETS_PREFIX: &str = "/ui/";

/// The Content-Security-Policy of every answer of the page's routes.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// Its name under [`ASSETS_PREFIX`] (`index.html` is served at `/` only).
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page's files: `index.html` and what it loads.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("ansi.js", JS),
    asset!("graph.js", JS),
    asset!("logview.js", JS),
    asset!("runs.js", JS),
    asset!("run.js", JS),
    asset!("task.js", JS),
    asset!("system.js", JS),
];

/// The asset named `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The `/` and `/ui/{file}` routes.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    let page = asset("index.html").expect("index.html is in the table");
    serve(page, &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match asset(&name) {
        Some(a) => serve(a, &headers),
        None => with_policy(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "no such asset\n",
            )
                .into_response(),
        ),
    }
}

/// The ETag of every asset: a digest of them all (computed once; they change only with
/// the binary).
fn etag() -> &'static HeaderValue {
    static TAG: OnceLock<HeaderValue> = OnceLock::new();
    TAG.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for a in ASSETS {
            h.update(a.name.as_bytes());
            h.update((a.bytes.len() as u64).to_le_bytes());
            h.update(a.bytes);
        }
        let digest = h.finalize();
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
    })
}

fn serve(a: &'static Asset, headers: &HeaderMap) -> Response {
    let tag = etag();
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == tag.as_bytes())
    });
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = a.bytes.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        r
    };
    resp.headers_mut().insert(header::ETAG, tag.clone());
    with_policy(resp)
}

/// `resp` with the page's security headers.
fn with_policy(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
