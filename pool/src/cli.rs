//! `quarry-pool workers`, `quarry-pool blocks` and `quarry-pool nodes`: tables from a
//! running pool's API.

use std::fmt::Write as _;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

/// Where the API is and how to print its answer; every table command takes these.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the pool's API.
    #[arg(
        long,
        env = "QUARRY_POOL_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `quarry-pool workers`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this account's workers.
    #[arg(long)]
    pub account: Option<String>,
}

/// Options of `quarry-pool blocks`.
#[derive(Debug, Args)]
pub struct BlocksArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// At most this many blocks, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

async fn fetch(url: &str) -> anyhow::Result<Value> {
    reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("requesting {url}"))?
        .json()
        .await
        .with_context(|| format!("reading the JSON of {url}"))
}

/// Prints the workers table (or JSON).
///
/// # Errors
/// The API cannot be reached or answers something else than expected.
pub async fn workers(args: &WorkersArgs) -> anyhow::Result<String> {
    let mut url = format!("{}/api/workers", args.api.api.trim_end_matches('/'));
    if let Some(account) = &args.account {
        url.push_str("?account=");
        url.push_str(&urlencode(account));
    }
    let body = fetch(&url).await?;
    if args.api.json {
        return Ok(serde_json::to_string_pretty(&body)? + "\n");
    }
    let workers = body["workers"]
        .as_array()
        .context("the API's answer has no workers list")?;
    let now = time::OffsetDateTime::now_utc();
    let header = [
        "WORKER",
        "HASHRATE 1M",
        "10M",
        "1H",
        "ACCEPTED",
        "REJECTED",
        "DIFF",
        "BEST (BLOCK)",
        "BEST (EVER)",
        "LAST SHARE",
        "SESSIONS",
        "STATUS",
    ];
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w["worker"].as_str().unwrap_or("?").to_owned(),
                human_rate(w["hashrate_1m"].as_f64().unwrap_or(0.0)),
                human_rate(w["hashrate_10m"].as_f64().unwrap_or(0.0)),
                human_rate(w["hashrate_1h"].as_f64().unwrap_or(0.0)),
                w["accepted"].as_u64().unwrap_or(0).to_string(),
                rejects(&w["rejected_by_reason"]),
                human_number(w["difficulty"].as_f64().unwrap_or(0.0)),
                human_number(w["best_share_since_block"].as_f64().unwrap_or(0.0)),
                human_number(w["best_share_difficulty"].as_f64().unwrap_or(0.0)),
                w["last_share"]
                    .as_str()
                    .map_or("never".to_owned(), |t| ago(t, now)),
                w["sessions"].as_u64().unwrap_or(0).to_string(),
                w["status"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    Ok(table(&header, &rows))
}

/// Prints the blocks table (or JSON).
///
/// # Errors
/// The API cannot be reached or answers something else than expected.
pub async fn blocks(args: &BlocksArgs) -> anyhow::Result<String> {
    let url = format!(
        "{}/api/blocks?limit={}",
        args.api.api.trim_end_matches('/'),
        args.limit
    );
    let body = fetch(&url).await?;
    if args.api.json {
        return Ok(serde_json::to_string_pretty(&body)? + "\n");
    }
    let blocks = body["blocks"]
        .as_array()
        .context("the API's answer has no blocks list")?;
    let now = time::OffsetDateTime::now_utc();
    let rows: Vec<Vec<String>> = blocks
        .iter()
        .map(|b| {
            vec![
                b["height"].as_u64().unwrap_or(0).to_string(),
                b["hash"].as_str().unwrap_or("?").to_owned(),
                b["worker"].as_str().unwrap_or("?").to_owned(),
                b["time"].as_str().map_or("?".to_owned(), |t| ago(t, now)),
                b["status"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    Ok(table(
        &["HEIGHT", "HASH", "WORKER", "FOUND", "STATUS"],
        &rows,
    ))
}

/// Prints the cluster's nodes (or JSON).
///
/// # Errors
/// The API cannot be reached or answers something else than expected.
pub async fn nodes(args: &ApiArgs) -> anyhow::Result<String> {
    let url = format!("{}/api/nodes", args.api.trim_end_matches('/'));
    let body = fetch(&url).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&body)? + "\n");
    }
    if body["cluster"] != Value::Bool(true) {
        return Ok("this pool runs alone (on SQLite): it has no cluster nodes\n".to_owned());
    }
    let nodes = body["nodes"]
        .as_array()
        .context("the API's answer has no nodes list")?;
    let here = body["node"].as_u64();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let id = n["id"].as_u64();
            vec![
                format!(
                    "{}{}",
                    id.map_or("?".to_owned(), |id| id.to_string()),
                    if id == here { " (this)" } else { "" }
                ),
                n["status"].as_str().unwrap_or("?").to_owned(),
                n["address"].as_str().unwrap_or("").to_owned(),
                n["job_height"]
                    .as_u64()
                    .map_or("-".to_owned(), |h| h.to_string()),
                n["sessions"].as_u64().unwrap_or(0).to_string(),
                human_rate(n["hashrate"].as_f64().unwrap_or(0.0)),
                format!(
                    "{:.1}s",
                    n["heartbeat_age_ms"].as_f64().unwrap_or(0.0) / 1000.0
                ),
                n["version"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    Ok(table(
        &[
            "NODE",
            "STATUS",
            "ADDRESS",
            "HEIGHT",
            "SESSIONS",
            "HASHRATE",
            "HEARTBEAT",
            "VERSION",
        ],
        &rows,
    ))
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rejects(by_reason: &Value) -> String {
    let Some(map) = by_reason.as_object() else {
        return "0".to_owned();
    };
    let total: u64 = map.values().filter_map(Value::as_u64).sum();
    let parts: Vec<String> = map
        .iter()
        .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| format!("{k} {n}")))
        .collect();
    if parts.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", parts.join(", "))
    }
}

/// Aligns columns: the first left-aligned, the rest right-aligned.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<width$}");
            } else {
                let _ = write!(text, "  {cell:>width$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Hashes per second with a unit: H/s, kH/s, MH/s, GH/s, TH/s, PH/s, EH/s.
pub fn human_rate(rate: f64) -> String {
    const UNITS: [&str; 7] = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    let mut value = rate.max(0.0);
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// A difficulty for people: 3 significant digits, k/M/G/T suffixes, or
/// scientific notation below 0.001.
pub fn human_number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    if value < 0.001 {
        return format!("{value:.2e}");
    }
    let (scaled, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| value >= *scale)
        .map_or((value, ""), |(scale, suffix)| (value / scale, suffix));
    let digits = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else if scaled >= 1.0 {
        2
    } else {
        3
    };
    format!("{scaled:.digits$}{suffix}")
}

/// "just now", "42 s ago", "2 min ago", "3 h ago", "5 d ago".
fn ago(rfc3339: &str, now: time::OffsetDateTime) -> String {
    let Ok(then) =
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
    else {
        return rfc3339.to_owned();
    };
    let seconds = (now - then).whole_seconds().max(0);
    match seconds {
        0..=4 => "just now".to_owned(),
        5..=119 => format!("{seconds} s ago"),
        120..=7199 => format!("{} min ago", seconds / 60),
        7200..=172_799 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_rate(0.0), "0.00 H/s");
        assert_eq!(human_rate(999.0), "999.00 H/s");
        assert_eq!(human_rate(12_345.0), "12.35 kH/s");
        assert_eq!(human_rate(26e6), "26.00 MH/s");
        assert_eq!(human_number(0.0001), "1.00e-4");
        assert_eq!(human_number(1.5), "1.50");
        assert_eq!(human_number(16_384.0), "16.4k");
    }

    #[test]
    fn ages() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let at = |s: i64| crate::accounting::rfc3339((1_000_000 - s) * 1000);
        assert_eq!(ago(&at(1), now), "just now");
        assert_eq!(ago(&at(42), now), "42 s ago");
        assert_eq!(ago(&at(150), now), "2 min ago");
        assert_eq!(ago(&at(3 * 3600), now), "3 h ago");
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["alice.rig1".to_owned(), "1".to_owned()],
            vec!["b".to_owned(), "1000".to_owned()],
        ];
        let text = table(&["WORKER", "N"], &rows);
        assert_eq!(
            text,
            "WORKER         N\nalice.rig1     1\nb           1000\n"
        );
    }
}
