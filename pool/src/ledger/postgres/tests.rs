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
