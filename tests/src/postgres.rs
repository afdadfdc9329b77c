//! A fresh PostgreSQL database per test, on the server `QUARRY_TEST_POSTGRES` names (a
//! role that may create databases; CI starts a server and sets it). Dropped with the test.

use tokio_postgres::NoTls;

/// A database made for one test.
pub struct TestDatabase {
    /// The URL the pool nodes get as `--database`.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDatabase {
    /// A new, empty database, or `None` (saying why) when no server is configured; fails
    /// instead when `QUARRY_REQUIRE_POSTGRES` is set.
    pub fn create(test: &str) -> Option<TestDatabase> {
        let Ok(admin) = std::env::var("QUARRY_TEST_POSTGRES") else {
            crate::skip_unless_required(
                "QUARRY_REQUIRE_POSTGRES",
                "QUARRY_TEST_POSTGRES names no PostgreSQL server",
            );
            return None;
        };
        let name = format!("quarry_{test}_{}", std::process::id());
        execute(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        execute(&admin, &format!("CREATE DATABASE {name}"));
        let separator = if admin.contains('?') { '&' } else { '?' };
        Some(TestDatabase {
            url: format!("{admin}{separator}dbname={name}"),
            admin,
            name,
        })
    }

    /// The server's address, from the URL.
    pub fn server(&self) -> std::net::SocketAddr {
        let authority = self.url.split("://").nth(1).unwrap_or_default();
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, rest)| rest)
            .split(['/', '?'])
            .next()
            .unwrap_or_default();
        std::net::ToSocketAddrs::to_socket_addrs(host_port)
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("a host:port in QUARRY_TEST_POSTGRES, not {host_port:?}"))
    }

    /// The test database's URL with the server's address replaced by `addr` (a proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .unwrap_or(("postgres", &self.url));
        let (userinfo, tail) = rest.rsplit_once('@').map_or(("", rest), |(u, t)| (u, t));
        let path = &tail[tail.find(['/', '?']).unwrap_or(tail.len())..];
        let at = if userinfo.is_empty() { "" } else { "@" };
        format!("{scheme}://{userinfo}{at}{addr}{path}")
    }

    /// Runs `sql` in the test's database and returns the first column of every row as
    /// text.
    pub fn query(&self, sql: &str) -> Vec<String> {
        let url = self.url.clone();
        let sql = sql.to_owned();
        on_runtime(async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls)
                .await
                .expect("connecting to the test database");
            tokio::spawn(connection);
            client
                .simple_query(&sql)
                .await
                .expect("test query")
                .into_iter()
                .filter_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some(row.get(0).unwrap_or("").to_owned())
                    }
                    _ => None,
                })
                .collect()
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        execute(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one statement on the server as the admin role.
fn execute(admin: &str, sql: &str) {
    let (admin, sql) = (admin.to_owned(), sql.to_owned());
    on_runtime(async move {
        let (client, connection) = tokio_postgres::connect(&admin, NoTls)
            .await
            .expect("connecting to QUARRY_TEST_POSTGRES");
        tokio::spawn(connection);
        client.batch_execute(&sql).await.expect("admin statement");
    });
}

/// Runs `future` to completion on a runtime of its own thread, so it works from plain and
/// async tests alike.
fn on_runtime<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    })
    .join()
    .expect("database helper thread")
}
