//! The dashboard in a real headless Chromium, driven over WebDriver: after
//! miners submit shares, the worker table shows the API's numbers and the chart
//! has drawn them. A screenshot is kept at `<target dir>/dashboard.png`.
//!
//! Needs `chromedriver` and `chromium` (Debian: `apt-get install chromium
//! chromium-driver`). Without them the test is skipped, unless
//! `QUARRY_REQUIRE_BROWSER` is set (as in CI), when it fails.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use quarry_protocol::Extranonce;
use quarry_tests::grind::grind;
use quarry_tests::{Client, PoolProcess};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// A chromedriver on a port of its own; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(binary: &PathBuf) -> Driver {
        // Port 0 makes chromedriver pick a port but not say which; ask the OS for a
        // free one instead and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting chromedriver");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx.recv_timeout(TIMEOUT).expect("chromedriver started");
            if line.contains("started successfully") {
                break;
            }
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshot goes: the target directory the tests run from.
fn artifact(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target
    exe.ancestors().nth(3).expect("target directory").join(name)
}

/// Submits `good` valid shares as `worker` and one below the target.
async fn mine(pool: &PoolProcess, worker: &str, good: u64) {
    let mut client = Client::tcp(pool.tcp).await;
    client.handshake(worker).await;
    let en1 = client.extranonce1.expect("subscribed");
    let job = client.job.clone().expect("a job");
    for i in 0..good {
        let reply = client.submit_valid(worker, i).await;
        assert_eq!(reply["result"], json!(true), "{reply}");
    }
    let low = grind(
        &job,
        en1,
        Extranonce::from_counter(999, 4),
        client.job_difficulty,
        0,
        false,
    );
    let reply = client
        .request("mining.submit", low.params(worker, &job))
        .await;
    assert_eq!(reply["result"], Value::Null, "{reply}");
    // The connection stays open (the worker stays "connected") until the test ends.
    std::mem::forget(client);
}

/// The table row of `worker` as the browser shows it.
async fn row(browser: &fantoccini::Client, worker: &str) -> Option<Value> {
    let script = r#"
        const tr = [...document.querySelectorAll('#workers tbody tr')]
            .find((r) => r.dataset.worker === arguments[0]);
        if (!tr) return null;
        const cell = (c) => tr.querySelector(`[data-col="${c}"]`);
        return {
            accepted: Number(cell('accepted').dataset.value),
            rejected: Number(cell('rejected').dataset.value),
            difficulty: Number(cell('difficulty').dataset.value),
            status: cell('status').textContent,
            accepted_text: cell('accepted').firstChild.textContent,
        };"#;
    let value = browser
        .execute(script, vec![json!(worker)])
        .await
        .expect("script runs");
    (!value.is_null()).then_some(value)
}

async fn chart(browser: &fantoccini::Client) -> (u64, u64, String) {
    let svg = browser
        .find(Locator::Css("#chart"))
        .await
        .expect("the chart");
    let number = |v: Option<String>| v.and_then(|v| v.parse().ok()).unwrap_or(0);
    let points = number(svg.attr("data-points").await.expect("attribute"));
    let shares = number(svg.attr("data-shares").await.expect("attribute"));
    let title = browser
        .find(Locator::Css("#chart-title"))
        .await
        .expect("chart title")
        .text()
        .await
        .expect("text");
    (points, shares, title)
}

/// Polls `check` in the browser until it returns `Some`, or panics with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        // The page polls every 3 s; look again a little later.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A headless Chromium session (plain HTTP: the WebDriver client needs no TLS here).
async fn session(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1500"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// chromedriver, or `None` after saying why the test skips.
fn chromedriver() -> Option<PathBuf> {
    let found = find_on_path("chromedriver");
    if found.is_none() {
        quarry_tests::skip_unless_required(
            "QUARRY_REQUIRE_BROWSER",
            "chromedriver is not on PATH (apt-get install chromium chromium-driver)",
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_live_workers_and_chart() {
    let Some(chromedriver) = chromedriver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start(
        dir.path(),
        &["--start-difficulty", "1e-6", "--chain-difficulty", "1"],
    );
    mine(&pool, "alice.rig1", 4).await;
    mine(&pool, "alice.rig2", 2).await;
    mine(&pool, "bob.cpu", 3).await;

    let driver = Driver::start(&chromedriver);
    let browser = session(&driver).await;
    browser
        .goto(&format!("http://{}/", pool.api))
        .await
        .expect("the dashboard loads");

    let api = pool.api_get("/api/workers");
    let workers = api["workers"].as_array().expect("workers").clone();
    assert_eq!(workers.len(), 3);
    for worker in &workers {
        let name = worker["worker"].as_str().unwrap();
        let shown = eventually(&format!("{name}'s row"), || async {
            row(&browser, name)
                .await
                .filter(|r| r["accepted"] == worker["accepted"])
        })
        .await;
        assert_eq!(shown["accepted"], worker["accepted"], "{name}");
        assert_eq!(
            shown["accepted_text"],
            worker["accepted"].to_string(),
            "{name}"
        );
        assert_eq!(shown["rejected"], worker["rejected"], "{name}");
        assert_eq!(shown["rejected"], 1, "{name}");
        assert_eq!(shown["difficulty"], worker["difficulty"], "{name}");
        assert_eq!(shown["status"], worker["status"], "{name}");
    }

    // The pool chart has drawn every accepted share.
    let accepted: u64 = workers
        .iter()
        .map(|w| w["accepted"].as_u64().unwrap())
        .sum();
    let (points, shares, title) = eventually("the pool chart", || async {
        Some(chart(&browser).await).filter(|c| c.1 == accepted)
    })
    .await;
    assert!(points >= 1, "{points}");
    assert_eq!(shares, 9);
    assert_eq!(title, "Pool hashrate");
    let line = browser
        .find(Locator::Css("#chart path.line"))
        .await
        .expect("a line");
    assert!(line
        .attr("d")
        .await
        .unwrap()
        .is_some_and(|d| d.starts_with('M')));

    // A pool younger than ten minutes says what its hashrate card averages
    // over, and the chart marks its partial buckets the same way.
    let label = browser
        .find(Locator::Css(".card[data-key='hashrate'] .label"))
        .await
        .expect("the hashrate card")
        .text()
        .await
        .expect("its label");
    // (Rendered text: the stylesheet upper-cases labels.)
    assert!(
        label.to_lowercase().starts_with("hashrate 10m (over "),
        "{label}"
    );
    let partial = browser
        .find_all(Locator::Css("#chart circle.dot.partial"))
        .await
        .expect("chart dots");
    assert!(!partial.is_empty(), "no partial bucket marked");
    for dot in partial {
        let seconds: f64 = dot
            .attr("data-seconds")
            .await
            .unwrap()
            .and_then(|s| s.parse().ok())
            .expect("data-seconds");
        assert!(seconds < 60.0, "{seconds}");
    }

    // Clicking a worker charts that worker.
    browser
        .find(Locator::Css("tr[data-worker='bob.cpu'] td.worker"))
        .await
        .expect("bob's name")
        .click()
        .await
        .expect("click");
    let (_, shares, title) = eventually("bob's chart", || async {
        Some(chart(&browser).await).filter(|c| c.2 == "Worker bob.cpu hashrate" && c.1 == 3)
    })
    .await;
    assert_eq!((shares, title.as_str()), (3, "Worker bob.cpu hashrate"));

    // A pool running alone has no cluster panel.
    let panel = browser
        .find(Locator::Css("#nodes-panel"))
        .await
        .expect("the nodes panel");
    assert!(
        !panel.is_displayed().await.unwrap(),
        "shown without a cluster"
    );

    let png = browser.screenshot().await.expect("a screenshot");
    let path = artifact("dashboard.png");
    std::fs::write(&path, &png).expect("writing the screenshot");
    eprintln!("dashboard screenshot: {}", path.display());
    assert!(png.starts_with(b"\x89PNG"));
    browser.close().await.expect("closing the browser");
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_the_cluster_nodes() {
    let Some(chromedriver) = chromedriver() else {
        return;
    };
    let Some(db) = quarry_tests::postgres::TestDatabase::create("dashboard_nodes") else {
        return;
    };
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<PoolProcess> = ["127.0.0.2:0", "127.0.0.3:0"]
        .iter()
        .zip(&dirs)
        .map(|(tcp, dir)| {
            let args = ["--start-difficulty", "1e-6", "--chain-difficulty", "1"];
            PoolProcess::start_on(
                dir.path(),
                tcp,
                &[&args[..], &["--database", &db.url]].concat(),
            )
        })
        .collect();
    mine(&nodes[0], "carol.rig", 2).await;

    let driver = Driver::start(&chromedriver);
    let browser = session(&driver).await;
    browser
        .goto(&format!("http://{}/", nodes[1].api))
        .await
        .expect("the dashboard loads");
    let statuses = eventually("both nodes ok in the nodes table", || async {
        let rows = browser
            .find_all(Locator::Css("#nodes tbody tr"))
            .await
            .ok()?;
        let mut statuses = Vec::new();
        for row in rows {
            let id = row.attr("data-node").await.ok()??;
            let status = row.attr("data-status").await.ok()??;
            statuses.push(format!("{id}:{status}"));
        }
        (statuses == ["0:ok", "1:ok"]).then_some(statuses)
    })
    .await;
    assert_eq!(statuses, ["0:ok", "1:ok"]);
    let summary = browser
        .find(Locator::Css("#nodes-summary"))
        .await
        .expect("the nodes summary")
        .text()
        .await
        .unwrap();
    assert_eq!(summary, "this is node 1; 2 ok, 0 lagging, 0 dead");
    // Node 1's dashboard counts the shares node 0 took (one ledger).
    let shown = eventually("carol's shares from node 0", || async {
        row(&browser, "carol.rig")
            .await
            .filter(|r| r["accepted"] == 2)
    })
    .await;
    assert_eq!(shown["accepted"], 2);

    let png = browser.screenshot().await.expect("a screenshot");
    let path = artifact("dashboard-nodes.png");
    std::fs::write(&path, &png).expect("writing the screenshot");
    eprintln!("dashboard node view screenshot: {}", path.display());
    browser.close().await.expect("closing the browser");
}
