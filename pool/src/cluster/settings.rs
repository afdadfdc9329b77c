//! The settings every node of a cluster must share, because they shape the chain, the
//! coinbase or the work miners get: a node whose settings differ from the live cluster's
//! refuses to join, naming each difference, rather than serving different work.

use serde_json::{json, Value};

use crate::config::PoolConfig;

/// The shared settings of `config`, as stored in `cluster_settings`.
pub fn shared(config: &PoolConfig) -> Value {
    json!({
        "chain": if config.bitcoind.is_some() { "bitcoind" } else { "embedded" },
        "chain_difficulty": config.chain_difficulty,
        "block_time_seconds": config.block_time.as_secs_f64(),
        "retarget_interval": config.retarget_interval,
        "payout_address": config.payout_address,
        "pool_tag": config.pool_tag,
        "extranonce2_size": config.extranonce2_size,
        "version_mask": format!("{:08x}", config.version_mask),
        "min_difficulty": config.min_difficulty,
        "max_difficulty": config.max_difficulty,
        "reward": config.reward.scheme.as_str(),
        "pool_fee_bps": config.reward.rules.fee_bps,
        "pplns_window": config.reward.window,
        "dust_sats": config.reward.rules.dust.to_sat(),
        "max_coinbase_outputs": config.reward.rules.max_outputs,
    })
}

/// Each setting whose value differs, as `name: ours (cluster: theirs)`.
pub fn differences(ours: &Value, cluster: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let ours = ours.as_object().unwrap_or(&empty);
    let cluster = cluster.as_object().unwrap_or(&empty);
    let mut names: Vec<&String> = ours.keys().chain(cluster.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (ours.get(name), cluster.get(name));
            (a != b).then(|| {
                let show = |v: Option<&Value>| v.map_or("(unset)".to_owned(), Value::to_string);
                format!("{name}: {} (cluster: {})", show(a), show(b))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_setting_both_ways() {
        let ours = json!({"chain": "embedded", "pool_tag": "/quarry/", "extranonce2_size": 4});
        let cluster =
            json!({"chain": "embedded", "pool_tag": "/other/", "block_time_seconds": 60.0});
        assert_eq!(
            differences(&ours, &cluster),
            vec![
                "block_time_seconds: (unset) (cluster: 60.0)".to_owned(),
                "extranonce2_size: 4 (cluster: (unset))".to_owned(),
                "pool_tag: \"/quarry/\" (cluster: \"/other/\")".to_owned(),
            ]
        );
        assert!(differences(&ours, &ours).is_empty());
    }
}
