//! A node's status as the cluster sees it, from the heartbeats in the `nodes` table.

use serde::Serialize;

/// How long a node may go without a heartbeat before it counts as dead.
pub const DEAD_AFTER_MS: i64 = 10_000;

/// Ok, lagging or dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Heartbeating, and serving a job at the cluster's best height.
    Ok,
    /// Heartbeating, but its job is behind the cluster's best height.
    Lagging,
    /// No heartbeat for [`DEAD_AFTER_MS`].
    Dead,
}

impl Health {
    /// Every status, for metrics.
    pub const ALL: [Health; 3] = [Health::Ok, Health::Lagging, Health::Dead];

    /// The status's name in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Lagging => "lagging",
            Health::Dead => "dead",
        }
    }
}

/// One node's row with its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    pub id: u8,
    pub status: Health,
    /// Where its miners connect (its Stratum listeners).
    pub address: String,
    pub version: String,
    pub job_height: Option<u64>,
    pub job_id: Option<String>,
    pub sessions: u64,
    /// Hashes per second of the shares it accepted over the last ten minutes.
    pub hashrate: f64,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    pub started: String,
    pub last_heartbeat: String,
    /// Whether its id lease is still held (a dead node's id is reclaimable once not).
    pub lease_held: bool,
}

/// Gives each node its status: dead without a recent heartbeat, lagging when its job is
/// below the best height any live node serves, ok otherwise.
pub fn classify(nodes: &mut [NodeStatus]) {
    for node in nodes.iter_mut() {
        node.status = if node.heartbeat_age_ms > DEAD_AFTER_MS {
            Health::Dead
        } else {
            Health::Ok
        };
    }
    let best = nodes
        .iter()
        .filter(|node| node.status != Health::Dead)
        .filter_map(|node| node.job_height)
        .max();
    for node in nodes.iter_mut() {
        if node.status == Health::Ok && node.job_height < best {
            node.status = Health::Lagging;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u8, height: Option<u64>, age_ms: i64) -> NodeStatus {
        NodeStatus {
            id,
            status: Health::Ok,
            address: String::new(),
            version: String::new(),
            job_height: height,
            job_id: None,
            sessions: 0,
            hashrate: 0.0,
            heartbeat_age_ms: age_ms,
            started: String::new(),
            last_heartbeat: String::new(),
            lease_held: true,
        }
    }

    #[test]
    fn dead_lagging_and_ok() {
        let mut nodes = vec![
            node(0, Some(10), 1_000),
            node(1, Some(9), 2_000),
            // A dead node's higher job does not make the live ones lag.
            node(2, Some(12), DEAD_AFTER_MS + 1),
            node(3, None, 0),
            node(4, Some(10), DEAD_AFTER_MS),
        ];
        classify(&mut nodes);
        let statuses: Vec<Health> = nodes.iter().map(|n| n.status).collect();
        assert_eq!(
            statuses,
            [
                Health::Ok,
                Health::Lagging,
                Health::Dead,
                Health::Lagging,
                Health::Ok
            ]
        );
        assert_eq!(
            serde_json::to_value(Health::Lagging).unwrap(),
            serde_json::json!("lagging")
        );
    }
}
