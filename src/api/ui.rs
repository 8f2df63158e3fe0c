//! The web dashboard every replica serves at `/ui`: a fixed set of static
//! files (`ui/` in the source tree, embedded in the binary at build time)
//! — one HTML page, its stylesheet and its JavaScript modules. This module
//! owns only their routes and the headers they go out with (content type,
//! `Cache-Control: no-cache`, a strict Content-Security-Policy, `nosniff`,
//! no referrer). It never reads the replicated state, never takes a token
//! and never touches the file system: the page itself signs in and talks
//! to the `/v1` API like any other client, so the token's role decides
//! what it may see and change, not this module.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use crate::replica::Replica;

/// Scripts, styles and requests from this origin only; no inline code,
/// no framing. Images may be `data:` URLs (the empty favicon).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// One embedded file of the dashboard.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The embedded file `ui/<name>`: its name is its path, so the two cannot
/// drift apart.
macro_rules! embedded {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("../../ui/", $name)),
        }
    };
}

/// Every file the dashboard consists of; nothing else is served under `/ui/`.
pub const ASSETS: &[Asset] = &[
    embedded!("index.html", HTML),
    embedded!("app.css", CSS),
    embedded!("app.js", JS),
    embedded!("api.js", JS),
    embedded!("dom.js", JS),
    embedded!("common.js", JS),
    embedded!("views.js", JS),
    embedded!("kv.js", JS),
    embedded!("events.js", JS),
];

/// The embedded file called `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The routes of the dashboard: `GET /ui` (redirects to `/ui/`), `GET
/// /ui/` (the page) and `GET /ui/{file}` (one of [`ASSETS`]; any other
/// name is a 404 in the API's JSON error shape). The files are public
/// (the token policy lets `GET /ui…` through); the data behind them is not.
pub fn router() -> Router<Arc<Replica>> {
    Router::new()
        .route(
            "/ui",
            get(|| async { with_headers(Redirect::permanent("/ui/").into_response()) }),
        )
        .route("/ui/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

/// The response for the file called `name`: the file, or a 404.
pub fn serve(name: &str) -> Response {
    let response = match asset(name) {
        Some(asset) => {
            let mut response = asset.body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            response
        }
        None => ApiError::not_found(format!("the dashboard has no file {name:?}")).into_response(),
    };
    with_headers(response)
}

/// Adds the headers every dashboard response carries.
fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// Values of `attribute="…"` in `text`.
    fn attribute_values<'a>(text: &'a str, attribute: &str) -> Vec<&'a str> {
        let needle = format!("{attribute}=\"");
        text.match_indices(&needle)
            .filter(|(at, _)| {
                // Whole attribute names only (not `data-src=`).
                text[..*at]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_whitespace)
            })
            .filter_map(|(at, _)| {
                let rest = &text[at + needle.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect()
    }

    /// Modules a script imports: `from "./x.js"` and `import "./x.js"`.
    fn imports(text: &str) -> Vec<&str> {
        let mut found = Vec::new();
        for marker in ["from \"./", "import \"./"] {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                if let Some(end) = rest.find('"') {
                    found.push(&rest[..end]);
                }
            }
        }
        found
    }

    /// The asset a reference from a page under `/ui/` names, if local.
    fn local_name(reference: &str) -> Option<&str> {
        if reference.starts_with('#') || reference.starts_with("data:") {
            return None;
        }
        assert!(
            !reference.contains("://") && !reference.starts_with("//"),
            "the dashboard loads nothing from another origin: {reference}"
        );
        Some(
            reference
                .strip_prefix("/ui/")
                .or_else(|| reference.strip_prefix("./"))
                .unwrap_or(reference),
        )
    }

    #[test]
    fn every_file_the_page_and_its_modules_reference_is_served() {
        let index = asset("index.html").expect("the page is embedded");
        let mut referenced: Vec<&str> = attribute_values(index.body, "src")
            .into_iter()
            .chain(attribute_values(index.body, "href"))
            .filter_map(local_name)
            .collect();
        assert!(referenced.contains(&"app.js") && referenced.contains(&"app.css"));
        for script in ASSETS.iter().filter(|a| a.content_type == JS) {
            referenced.extend(imports(script.body));
        }
        for name in referenced {
            let found =
                asset(name).unwrap_or_else(|| panic!("{name} is referenced but not served"));
            let response = serve(name);
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                found.content_type,
                "{name}"
            );
        }
    }

    #[test]
    fn every_served_file_is_used_and_has_the_type_its_name_says() {
        for asset in ASSETS {
            let expected = match asset.name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("html") => HTML,
                Some("css") => CSS,
                Some("js") => JS,
                other => panic!("{}: unexpected extension {other:?}", asset.name),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.name);
            assert!(!asset.body.trim().is_empty(), "{} is empty", asset.name);
            let used = asset.name == "index.html"
                || ASSETS.iter().any(|other| {
                    other.body.contains(&format!("\"{}\"", asset.name))
                        || other.body.contains(&format!("\"./{}\"", asset.name))
                });
            assert!(used, "{} is served but nothing loads it", asset.name);
        }
    }

    #[test]
    fn the_page_has_no_inline_code_the_policy_would_block() {
        let index = asset("index.html").unwrap().body;
        for script in index.split("<script").skip(1) {
            let (tag, rest) = script.split_once('>').expect("a closed tag");
            assert!(tag.contains("src="), "inline script: <script{tag}>");
            assert!(
                rest.trim_start().starts_with("</script>"),
                "inline script body"
            );
        }
        assert!(!index.contains("<style"), "inline style element");
        assert!(!index.contains(" style=\""), "inline style attribute");
        for handler in [
            " onclick=",
            " onload=",
            " onsubmit=",
            " onerror=",
            "javascript:",
        ] {
            assert!(!index.contains(handler), "inline handler {handler}");
        }
    }

    #[test]
    fn responses_carry_the_security_headers_and_unknown_files_are_404() {
        for name in ["index.html", "app.js", "missing.js", "..%2Fsecrets"] {
            let response = serve(name);
            let headers = response.headers();
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        }
        assert_eq!(serve("missing.js").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            serve("missing.js").headers()[header::CONTENT_TYPE],
            "application/json"
        );
    }
}
