use rusqlite::Connection;

use super::*;
use crate::ledger::conformance::Fixture;
use crate::ledger::{open, Database};

/// A fresh SQLite ledger in a directory that does not exist yet, in a temporary one.
struct Sqlite {
    database: Database,
    _dir: tempfile::TempDir,
}

impl Sqlite {
    fn file(&self) -> PathBuf {
        let Database::Sqlite { dir } = &self.database else {
            unreachable!()
        };
        dir.join(FILE_NAME)
    }
}

#[async_trait::async_trait]
impl Fixture for Sqlite {
    fn database(&self) -> &Database {
        &self.database
    }

    async fn inject_failure(&self, on: bool) {
        let sql = if on {
            "CREATE TRIGGER fail_marked BEFORE INSERT ON shares WHEN NEW.time_ms = -42 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        } else {
            "DROP TRIGGER fail_marked"
        };
        Connection::open(self.file())
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }

    async fn schema_version(&self) -> i64 {
        Connection::open(self.file())
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    async fn set_schema_version(&self, version: i64) {
        Connection::open(self.file())
            .unwrap()
            .pragma_update(None, "user_version", version)
            .unwrap();
    }
}

async fn fixture() -> Option<Sqlite> {
    let dir = tempfile::tempdir().unwrap();
    Some(Sqlite {
        database: Database::Sqlite {
            dir: dir.path().join("data").join("pool"),
        },
        _dir: dir,
    })
}

crate::conformance_tests!(fixture());

#[tokio::test]
async fn the_file_is_in_the_data_directory_in_wal_mode_at_the_newest_version() {
    let fixture = fixture().await.unwrap();
    let Database::Sqlite { dir } = fixture.database() else {
        unreachable!()
    };
    let ledger = SqliteLedger::open(dir, LedgerOptions::default()).unwrap();
    assert_eq!(ledger.path(), dir.join(FILE_NAME));
    assert_eq!(
        fixture.schema_version().await,
        schema::MIGRATIONS.len() as i64
    );
    let mode: String = Connection::open(ledger.path())
        .unwrap()
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(ledger.location().ends_with(FILE_NAME));
    ledger.close().await.unwrap();
}

#[tokio::test]
async fn an_unusable_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let error = open(&Database::Sqlite { dir: file }, LedgerOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::CreateDir { .. }), "{error:?}");
    assert!(std::error::Error::source(&error).is_some());
}
