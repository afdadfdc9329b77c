//! The conformance suite against a real PostgreSQL server, one fresh database per test.
//!
//! `QUARRY_TEST_POSTGRES` is a URL of a role that may create databases (CI starts a server
//! and sets it); without it these tests skip, unless `QUARRY_REQUIRE_POSTGRES=1`.

use tokio_postgres::NoTls;

use super::*;
use crate::ledger::conformance::Fixture;
use crate::ledger::Database;

/// A fresh database on the test server, dropped at the end of the test.
pub(crate) struct Postgres {
    database: Database,
    admin: String,
    name: String,
}

impl Postgres {
    /// A new, empty database, or `None` (with a note) when no server is configured.
    pub(crate) async fn create() -> Option<Postgres> {
        let Ok(admin) = std::env::var("QUARRY_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("QUARRY_REQUIRE_POSTGRES").is_none(),
                "QUARRY_REQUIRE_POSTGRES is set but QUARRY_TEST_POSTGRES is not"
            );
            eprintln!("skipped: set QUARRY_TEST_POSTGRES to a PostgreSQL URL to run this test");
            return None;
        };
        let name = format!(
            "quarry_test_{}_{}",
            std::process::id(),
            rand::random::<u64>()
        );
        admin_client(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = database_url(&admin, &name);
        Some(Postgres {
            database: Database::Postgres { url },
            admin,
            name,
        })
    }

    async fn client(&self) -> Client {
        let Database::Postgres { url } = &self.database else {
            unreachable!()
        };
        admin_client(url).await
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A runtime of its own: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = admin_client(&admin)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// `url` naming database `name` instead (libpq's `dbname` parameter wins over the path).
fn database_url(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}dbname={name}")
}

async fn admin_client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[async_trait::async_trait]
impl Fixture for Postgres {
    fn database(&self) -> &Database {
        &self.database
    }

    async fn inject_failure(&self, on: bool) {
        let sql = if on {
            "CREATE FUNCTION fail_marked() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.time_ms = -42 THEN RAISE EXCEPTION 'injected failure'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER fail_marked BEFORE INSERT ON shares \
             FOR EACH ROW EXECUTE FUNCTION fail_marked();"
        } else {
            "DROP TRIGGER fail_marked ON shares; DROP FUNCTION fail_marked();"
        };
        self.client().await.batch_execute(sql).await.unwrap();
    }

    async fn schema_version(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT version FROM quarry_schema", &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn set_schema_version(&self, version: i64) {
        self.client()
            .await
            .execute("UPDATE quarry_schema SET version = $1", &[&version])
            .await
            .unwrap();
    }
}

crate::conformance_tests!(Postgres::create());

#[test]
fn passwords_are_redacted_from_locations() {
    assert_eq!(
        redact("postgres://quarry:s3cret@db.example:5432/pool?sslmode=require"),
        "postgres://quarry:***@db.example:5432/pool?sslmode=require"
    );
    assert_eq!(
        redact("postgresql://db/pool?user=q&password=s3cret"),
        "postgresql://db/pool?user=q&password=***"
    );
    assert_eq!(
        redact("postgres://quarry@db/pool"),
        "postgres://quarry@db/pool"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://quarry:s3cret@127.0.0.1:{port}/pool");
    let error = PostgresLedger::open(&url, LedgerOptions::default())
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            error,
            LedgerError::Open {
                operation: "connect",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_their_own_history_minutes_and_reads_sum_them() {
    use crate::ledger::history::{HistoryRow, Scope, MINUTE_MS};
    let Some(fixture) = Postgres::create().await else {
        return;
    };
    let minute = 1_700_000_040_000_i64.div_euclid(MINUTE_MS) * MINUTE_MS;
    let row = |difficulty: f64, shares: u64| HistoryRow {
        scope: Scope::Pool,
        name: String::new(),
        start_ms: minute,
        difficulty,
        shares,
    };
    let (first, second) = (fixture.open(keep()).await, fixture.open(keep()).await);
    first.set_node(0);
    second.set_node(1);
    first
        .record_history(vec![row(2.0, 2)], minute)
        .await
        .unwrap();
    second
        .record_history(vec![row(5.0, 3)], minute)
        .await
        .unwrap();
    // Writing a node's minute again replaces only that node's row.
    first
        .record_history(vec![row(4.0, 4)], minute)
        .await
        .unwrap();
    let read = second
        .history(Scope::Pool, "", minute, minute + MINUTE_MS, MINUTE_MS)
        .await
        .unwrap();
    assert_eq!(read, vec![(minute, 9.0, 7)]);
    first.close().await.unwrap();
    second.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_reads_the_other_nodes_recent_work() {
    use crate::ledger::history::{HistoryRow, Scope, SpanWork, MINUTE_MS};
    let Some(fixture) = Postgres::create().await else {
        return;
    };
    let until = 1_700_000_040_000_i64.div_euclid(MINUTE_MS) * MINUTE_MS;
    let row = |scope: Scope, name: &str, minutes_before: i64, difficulty: f64| HistoryRow {
        scope,
        name: name.to_owned(),
        start_ms: until - minutes_before * MINUTE_MS,
        difficulty,
        shares: 1,
    };
    let nodes = [
        fixture.open(keep()).await,
        fixture.open(keep()).await,
        fixture.open(keep()).await,
    ];
    for (id, node) in (0u8..).zip(&nodes) {
        node.set_node(id);
    }
    // Node 1: minutes in each span, one too old for the hour, one not yet before `until`.
    let mut rows = Vec::new();
    for (minutes_before, difficulty) in [(1, 3.0), (5, 4.0), (30, 5.0), (61, 100.0), (0, 100.0)] {
        rows.push(row(Scope::Worker, "alice.rig", minutes_before, difficulty));
        rows.push(row(Scope::Account, "alice", minutes_before, difficulty));
        rows.push(row(Scope::Pool, "", minutes_before, difficulty));
    }
    nodes[1].record_history(rows, until).await.unwrap();
    nodes[0]
        .record_history(
            vec![
                row(Scope::Worker, "alice.rig", 1, 50.0),
                row(Scope::Pool, "", 1, 50.0),
            ],
            until,
        )
        .await
        .unwrap();
    nodes[2]
        .record_history(
            vec![
                row(Scope::Worker, "bob.rig", 2, 7.0),
                row(Scope::Pool, "", 2, 7.0),
            ],
            until,
        )
        .await
        .unwrap();

    let seen_by_0 = nodes[0].others_recent_work(until).await.unwrap();
    assert_eq!(seen_by_0.until_ms, until);
    let spans = |difficulty: [f64; 3], first_minutes_before: i64| SpanWork {
        difficulty,
        first_ms: until - first_minutes_before * MINUTE_MS,
    };
    assert_eq!(seen_by_0.workers.len(), 2, "{seen_by_0:?}");
    assert_eq!(seen_by_0.workers["alice.rig"], spans([3.0, 7.0, 12.0], 30));
    assert_eq!(seen_by_0.workers["bob.rig"], spans([0.0, 7.0, 7.0], 2));
    assert_eq!(seen_by_0.pool, spans([3.0, 14.0, 19.0], 30));
    // Node 1 sees node 0's and node 2's work, not its own.
    let seen_by_1 = nodes[1].others_recent_work(until).await.unwrap();
    assert_eq!(seen_by_1.workers["alice.rig"], spans([50.0; 3], 1));
    assert_eq!(seen_by_1.pool, spans([50.0, 57.0, 57.0], 2));
    for node in &nodes {
        node.close().await.unwrap();
    }
}

fn keep() -> LedgerOptions {
    LedgerOptions {
        share_retention: std::time::Duration::MAX,
        ..LedgerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_asking_for_tls_gets_it_and_a_wrong_root_is_refused() {
    // A certificate the server presents for `localhost` (CI configures its server so).
    let Ok(ca) = std::env::var("QUARRY_TEST_POSTGRES_CA") else {
        assert!(
            std::env::var_os("QUARRY_REQUIRE_POSTGRES").is_none(),
            "QUARRY_REQUIRE_POSTGRES is set but QUARRY_TEST_POSTGRES_CA is not"
        );
        eprintln!("skipped: QUARRY_TEST_POSTGRES_CA names no certificate of the server");
        return;
    };
    let Some(fixture) = Postgres::create().await else {
        return;
    };
    let Database::Postgres { url } = fixture.database() else {
        unreachable!()
    };
    let host = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split(['/', '?']).next());
    let host = host.expect("a host in QUARRY_TEST_POSTGRES");
    let port = host.rsplit_once(':').map_or("5432", |(_, port)| port);
    let tls_url = url.replacen(host, &format!("localhost:{port}"), 1);
    let ledger = PostgresLedger::open(
        &format!("{tls_url}&sslmode=require&sslrootcert={ca}"),
        LedgerOptions::default(),
    )
    .await
    .unwrap();
    ledger
        .record_share(crate::ledger::AcceptedShare {
            worker: "tls.rig".into(),
            difficulty: 1.0,
            hash_difficulty: 1.0,
            time_ms: 1,
        })
        .await
        .unwrap();
    let encrypted: i64 = fixture
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND datname = current_database() AND application_name = 'quarry-pool'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the ledger's connections use TLS");
    ledger.close().await.unwrap();

    // A root that did not sign the server's certificate: refused, nothing sent.
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let error = PostgresLedger::open(
        &format!("{tls_url}&sslmode=require&sslrootcert={}", wrong.display()),
        LedgerOptions::default(),
    )
    .await
    .unwrap_err();
    let chain = crate::ledger::error_chain(&error);
    assert!(chain.contains("certificate"), "{chain}");
}
