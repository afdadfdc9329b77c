//! The dashboard in a real headless Chromium, driven over WebDriver: after
//! miners submit shares, the worker table shows the API's numbers and the chart
//! has drawn them; after a PPLNS block, an account's page shows its earnings and
//! its line in the current split as the API gives them. Screenshots are kept in
//! the target directory (`dashboard.png`, `dashboard-account.png`, ...).
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
use quarry_tests::miner::poll;
use quarry_tests::process::EASY_SHARES;
use quarry_tests::regtest::address;
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
    click(&browser, "tr[data-worker='bob.cpu'] td.worker").await;
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

    keep_screenshot(&browser, "dashboard.png").await;
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

    keep_screenshot(&browser, "dashboard-nodes.png").await;
    browser.close().await.expect("closing the browser");
}

/// Submits `count` shares as `worker` on the client's current job; all accepted.
async fn shares(client: &mut Client, worker: &str, count: u64) {
    for i in 0..count {
        let reply = client.submit_valid(worker, i).await;
        assert_eq!(reply["result"], json!(true), "{reply}");
    }
}

/// Sats as the page writes them: BTC with 8 decimals.
fn btc(sats: i64) -> String {
    let sign = if sats < 0 { "-" } else { "" };
    let abs = sats.unsigned_abs();
    format!("{sign}{}.{:08} BTC", abs / 100_000_000, abs % 100_000_000)
}

/// Every number in `value` as a float: JavaScript has one kind of number.
fn floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => items.iter().map(floats).collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), floats(v))).collect(),
        other => other.clone(),
    }
}

/// The account page as the browser shows it, once it shows `account`.
async fn account_page(browser: &fantoccini::Client, account: &str) -> Option<Value> {
    let script = r#"
        const view = document.querySelector('#account-view');
        if (view.hidden || view.dataset.account !== arguments[0] || !view.dataset.refreshes) return null;
        const sats = (node) => Number(node.dataset.sats);
        const total = (key) => document.querySelector(`#account-totals [data-key="${key}"] .value`);
        const line = document.querySelector('#split-line [data-state]');
        const paid = line && line.querySelector('[data-key="paid"] .value');
        return {
            paid_mature: sats(total('paid_mature')),
            paid_immature: sats(total('paid_immature')),
            owed: sats(total('owed')),
            owed_text: total('owed').textContent,
            paid_to: total('payout_address').textContent,
            blocks: [...document.querySelectorAll('#earnings tbody tr')].map((tr) => ({
                height: Number(tr.dataset.height),
                hash: tr.dataset.hash,
                link: tr.querySelector('td.hash a').getAttribute('href'),
                status: tr.querySelector('[data-col="status"]').textContent,
                paid: sats(tr.querySelector('[data-col="paid"]')),
                paid_text: tr.querySelector('[data-col="paid"]').textContent,
                owed_after: sats(tr.querySelector('[data-col="owed_after"]')),
            })),
            empty: !document.querySelector('#earnings-empty').hidden,
            errors: [...view.querySelectorAll('.error')].filter((e) => !e.hidden).map((e) => e.textContent),
            scheme: document.querySelector('#split-summary [data-key="scheme"]').textContent,
            line: line.dataset.state !== 'line' ? { state: line.dataset.state } : {
                state: 'line',
                credit: Number(line.dataset.credit),
                owed_before: Number(line.dataset.owedBefore),
                paid: Number(line.dataset.paid),
                owed_after: Number(line.dataset.owedAfter),
                paid_text: paid.textContent,
            },
            outputs: [...document.querySelectorAll('#split-outputs tbody tr')].map((tr) => ({
                to: tr.dataset.to, amount: sats(tr), mine: tr.classList.contains('mine'),
            })),
        };"#;
    let value = browser
        .execute(script, vec![json!(account)])
        .await
        .expect("script runs");
    (!value.is_null()).then(|| floats(&value))
}

/// What the account page should show for `account`, from the API's answers.
fn account_expected(account: &str, earnings: &Value, split: &Value) -> Value {
    let sats = |v: &Value| v.as_i64().expect("sats");
    let blocks: Vec<Value> = earnings["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| {
            json!({
                "height": b["height"],
                "hash": b["hash"],
                "link": format!("/api/blocks/{}/raw", b["hash"].as_str().unwrap()),
                "status": b["status"],
                "paid": b["paid"],
                "paid_text": btc(sats(&b["paid"])),
                "owed_after": b["owed_after"],
            })
        })
        .collect();
    let line = split["payees"]
        .as_array()
        .expect("payees")
        .iter()
        .find(|l| l["payee"] == account)
        .map_or_else(
            || json!({"state": "absent"}),
            |l| {
                json!({
                    "state": "line",
                    "credit": l["credit"],
                    "owed_before": l["owed_before"],
                    "paid": l["paid"],
                    "owed_after": l["owed_after"],
                    "paid_text": btc(sats(&l["paid"])),
                })
            },
        );
    let outputs: Vec<Value> = split["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| json!({"to": o["to"], "amount": o["amount"], "mine": o["to"] == account}))
        .collect();
    floats(&json!({
        "paid_mature": earnings["paid_mature"],
        "paid_immature": earnings["paid_immature"],
        "owed": earnings["owed"],
        "owed_text": btc(sats(&earnings["owed"])),
        "paid_to": earnings["payout_address"]
            .as_str()
            .unwrap_or("no address: carried as owed"),
        "empty": blocks.is_empty(),
        "blocks": blocks,
        "errors": [],
        "scheme": split["scheme"],
        "line": line,
        "outputs": outputs,
    }))
}

/// Waits until the account page shows what the API says for `account`, both read
/// afresh each time (a new job may come between them); returns the page's numbers.
async fn account_page_matches(
    browser: &fantoccini::Client,
    pool: &PoolProcess,
    account: &str,
) -> Value {
    let mut last = (Value::Null, Value::Null);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let earnings = pool.api_get(&format!("/api/accounts/{account}/earnings"));
        let split = pool.api_get(&format!("/api/payouts/current?account={account}"));
        let expected = account_expected(account, &earnings, &split);
        if let Some(shown) = account_page(browser, account).await {
            if shown == expected {
                return shown;
            }
            last = (shown, expected);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the account page of {account} never showed the API's numbers:\n page {}\n  api {}",
            last.0,
            last.1
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Clicks the element `selector` finds.
async fn click(browser: &fantoccini::Client, selector: &str) {
    browser
        .find(Locator::Css(selector))
        .await
        .expect(selector)
        .click()
        .await
        .expect("click");
}

/// Takes a screenshot and keeps it as the artifact `name`.
async fn keep_screenshot(browser: &fantoccini::Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    let path = artifact(name);
    std::fs::write(&path, &png).expect("writing the screenshot");
    eprintln!("dashboard screenshot: {}", path.display());
    assert!(png.starts_with(b"\x89PNG"));
}

async fn displayed(browser: &fantoccini::Client, selector: &str) -> bool {
    browser
        .find(Locator::Css(selector))
        .await
        .expect(selector)
        .is_displayed()
        .await
        .expect("displayed")
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_account_page_shows_earnings_and_the_split() {
    let Some(chromedriver) = chromedriver() else {
        return;
    };
    // PPLNS on the embedded chain, as pool_pplns runs it: only the share ground for a
    // block finds one.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        &[
            "--reward",
            "pplns",
            "--pool-fee-bps",
            "150",
            "--job-interval",
            "0.2",
        ],
        EASY_SHARES,
    ];
    let pool = PoolProcess::start(dir.path(), &args.concat());
    let (alice, bob) = (address(1).to_string(), address(2).to_string());
    let (alice_rig, bob_rig) = (format!("{alice}.rig"), format!("{bob}.rig"));
    let mut a = Client::tcp(pool.tcp).await;
    a.handshake(&alice_rig).await;
    let mut b = Client::tcp(pool.tcp).await;
    b.handshake(&bob_rig).await;
    shares(&mut a, &alice_rig, 3).await;
    shares(&mut b, &bob_rig, 9).await;

    // Bob finds a block on a job whose split counts every share: it pays both.
    let credited = |worker: &str| {
        pool.api_get(&format!("/api/workers/{worker}"))["accepted_difficulty"].clone()
    };
    let (alice_credit, bob_credit) = (credited(&alice_rig), credited(&bob_rig));
    let split = poll(Duration::from_secs(30), || {
        let split = pool.api_get("/api/payouts/current");
        let credit = |payee: &str| {
            split["payees"]
                .as_array()?
                .iter()
                .find(|l| l["payee"] == payee)
                .map(|l| l["credit"].clone())
        };
        let close =
            |a: Value, b: &Value| Some((a.as_f64()? - b.as_f64()?).abs() <= 1e-9 * b.as_f64()?);
        (close(credit(&alice)?, &alice_credit)? && close(credit(&bob)?, &bob_credit)?)
            .then_some(split)
    })
    .expect("a job whose split counts every share");
    let split_coinb2 = split["coinb2"].as_str().unwrap()[4..].to_owned();
    b.job_where(|job| job.coinb2.to_string()[4..] == split_coinb2)
        .await;
    let reply = b.submit_block(&bob_rig, 100).await;
    assert_eq!(reply["result"], json!(true), "{reply}");
    let earnings = poll(Duration::from_secs(30), || {
        let earnings = pool.api_get(&format!("/api/accounts/{alice}/earnings"));
        (!earnings["blocks"].as_array()?.is_empty()).then_some(earnings)
    })
    .expect("alice's earnings from the block");
    assert_eq!(
        earnings["blocks"].as_array().unwrap().len(),
        1,
        "{earnings}"
    );
    assert!(
        earnings["paid_immature"].as_i64().unwrap() > 0,
        "{earnings}"
    );

    // From the overview, alice's account in the worker table leads to her page.
    let driver = Driver::start(&chromedriver);
    let browser = session(&driver).await;
    browser
        .goto(&format!("http://{}/", pool.api))
        .await
        .expect("the dashboard loads");
    let link = eventually("alice's account link", || async {
        browser
            .find(Locator::Css(&format!(
                "tr[data-worker='{alice_rig}'] td.account a"
            )))
            .await
            .ok()
    })
    .await;
    link.click().await.expect("click");
    let url = browser.current_url().await.expect("the page's address");
    assert_eq!(url.fragment(), Some(format!("/account/{alice}").as_str()));

    let shown = account_page_matches(&browser, &pool, &alice).await;
    // Not vacuous: the block paid alice, and the next coinbase pays her again.
    assert_eq!(shown["blocks"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["blocks"][0]["status"], "immature", "{shown}");
    assert!(
        shown["blocks"][0]["paid"].as_f64().unwrap() > 0.0,
        "{shown}"
    );
    assert!(!shown["empty"].as_bool().unwrap(), "{shown}");
    assert_eq!(shown["scheme"], "pplns", "{shown}");
    assert_eq!(shown["line"]["state"], "line", "{shown}");
    assert!(shown["line"]["paid"].as_f64().unwrap() > 0.0, "{shown}");
    let mine: Vec<&Value> = shown["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["mine"] == true)
        .collect();
    assert_eq!(mine.len(), 1, "{shown}");
    assert_eq!(mine[0]["amount"], shown["line"]["paid"], "{shown}");
    assert!(displayed(&browser, "#account-view").await);
    assert!(!displayed(&browser, "#overview").await);

    keep_screenshot(&browser, "dashboard-account.png").await;

    // The way back.
    click(&browser, "#back").await;
    eventually("the overview again", || async {
        displayed(&browser, "#overview").await.then_some(())
    })
    .await;
    assert!(!displayed(&browser, "#account-view").await);

    // An account the pool has never seen: nothing earned, no line, no error.
    browser
        .goto(&format!("http://{}/#/account/nobody", pool.api))
        .await
        .expect("the account page loads");
    let shown = account_page_matches(&browser, &pool, "nobody").await;
    assert_eq!(shown["blocks"], json!([]), "{shown}");
    assert_eq!(shown["empty"], true, "{shown}");
    assert_eq!(shown["line"], json!({"state": "absent"}), "{shown}");
    assert_eq!(shown["owed"], json!(0.0), "{shown}");
    let empty = browser
        .find(Locator::Css("#earnings-empty"))
        .await
        .expect("the empty state")
        .text()
        .await
        .unwrap();
    assert!(empty.starts_with("No earnings yet"), "{empty}");
    let workers = browser
        .find(Locator::Css("#account-workers"))
        .await
        .expect("the workers section")
        .text()
        .await
        .unwrap();
    assert!(
        workers.starts_with("No worker of this account"),
        "{workers}"
    );
    browser.close().await.expect("closing the browser");
}
