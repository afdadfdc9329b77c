//! Bans shared by every node: each heartbeat writes the bans made and lifted here to the
//! `bans` table and applies those of the other nodes, so a ban holds everywhere within a
//! heartbeat or two.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use crate::limits::{Ban, Guard};

/// How long a lifted or expired ban's row is still read, so every node sees the change.
const REMEMBER_MS: i64 = 120_000;

const PUBLISH: &str = "INSERT INTO bans (address, reason, until_ms, node, changed_ms) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int4[], $5::int8[]) \
     ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, \
     until_ms = excluded.until_ms, node = excluded.node, changed_ms = excluded.changed_ms";
const RECENT: &str = "SELECT address, reason, until_ms, node FROM bans WHERE until_ms > $1";
const FORGET: &str = "DELETE FROM bans WHERE until_ms <= $1";

/// Publishes this node's ban changes and adopts the others'; `kick` closes the sessions of
/// an address another node banned.
///
/// # Errors
///
/// A failed query; this node's changes are kept for the next attempt.
pub(super) async fn sync(
    client: &Client,
    guard: &Guard,
    node: u8,
    kick: &impl Fn(IpAddr),
) -> Result<(), tokio_postgres::Error> {
    let now = unix_ms(SystemTime::now());
    let changes = guard.take_changes();
    if !changes.is_empty() {
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (ip, ban) in &changes {
            columns.0.push(ip.to_string());
            columns
                .1
                .push(ban.as_ref().map_or("lifted", |b| b.reason.as_str()));
            columns
                .2
                .push(ban.as_ref().map_or(now, |b| unix_ms(b.until)));
            columns.3.push(i32::from(node));
            columns.4.push(now);
        }
        let published = client
            .execute(
                PUBLISH,
                &[&columns.0, &columns.1, &columns.2, &columns.3, &columns.4],
            )
            .await;
        if let Err(error) = published {
            guard.return_changes(changes);
            return Err(error);
        }
    }
    for row in client.query(RECENT, &[&(now - REMEMBER_MS)]).await? {
        let from: i32 = row.get(3);
        let Ok(ip) = row.get::<_, &str>(0).parse::<IpAddr>() else {
            continue;
        };
        if from == i32::from(node) {
            continue;
        }
        let until_ms: i64 = row.get(2);
        let ban = (until_ms > now).then(|| Ban {
            reason: row.get(1),
            until: UNIX_EPOCH + Duration::from_millis(u64::try_from(until_ms).unwrap_or(0)),
        });
        let banned = ban.is_some();
        if guard.adopt(ip, ban) && banned {
            kick(ip);
        }
    }
    client.execute(FORGET, &[&(now - REMEMBER_MS)]).await?;
    Ok(())
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    })
}
