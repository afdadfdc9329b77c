//! The operator's dashboard at `/`: one HTML page, its stylesheet and scripts,
//! embedded in the binary (nothing is fetched from elsewhere). The scripts poll
//! the JSON API and draw the hashrate chart themselves as SVG.
//!
//! - `dashboard.js`: the pool overview, the helpers both scripts use, and the
//!   hash routes (`#/` the overview, `#/account/NAME` an account).
//! - `account.js`: the account page: earnings block by block and the account's
//!   line in the current job's split.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the dashboard: its path, content type and body. The page is first.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("index.html")),
    ("/dashboard.css", CSS, include_str!("dashboard.css")),
    ("/dashboard.js", JS, include_str!("dashboard.js")),
    ("/account.js", JS, include_str!("account.js")),
];

/// `/` and the files it loads.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || asset(content_type, body)))
        })
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// The local paths the page's `src` and `href` attributes name.
    fn references(page: &str) -> Vec<&str> {
        ["src=\"", "href=\""]
            .iter()
            .flat_map(|attribute| page.split(attribute).skip(1))
            .filter_map(|rest| rest.split('"').next())
            .filter(|path| path.starts_with('/'))
            .collect()
    }

    #[test]
    fn dashboard_page_loads_every_asset_and_only_served_ones() {
        let page = ASSETS[0].2;
        let served: Vec<&str> = ASSETS.iter().map(|(path, _, _)| *path).collect();
        let loaded = references(page);
        for path in &loaded {
            assert!(served.contains(path), "index.html loads {path}, not served");
        }
        for path in &served[1..] {
            assert!(
                loaded.contains(path),
                "{path} is served but index.html never loads it"
            );
        }
    }
}
