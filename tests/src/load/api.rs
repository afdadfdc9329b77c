//! The pool's own counts, from its HTTP API, to check against what the load
//! generator saw acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

#[derive(Deserialize)]
struct Workers {
    workers: Vec<Worker>,
}

#[derive(Deserialize)]
struct Worker {
    worker: String,
    accepted: u64,
}

/// Accepted shares per worker of `account`, from `GET {api}/api/workers?account=…`.
///
/// # Errors
/// The API is unreachable or answers something else.
pub async fn accepted_by_worker(api: &str, account: &str) -> anyhow::Result<HashMap<String, u64>> {
    let url = format!(
        "{}/api/workers?account={account}",
        api.trim_end_matches('/')
    );
    tokio::task::spawn_blocking(move || -> anyhow::Result<HashMap<String, u64>> {
        let workers: Workers = ureq::get(&url)
            .timeout(Duration::from_secs(60))
            .call()
            .with_context(|| format!("GET {url}"))?
            .into_json()
            .with_context(|| format!("GET {url}: not the workers document"))?;
        Ok(workers
            .workers
            .into_iter()
            .map(|w| (w.worker, w.accepted))
            .collect())
    })
    .await
    .context("API request task")?
}
