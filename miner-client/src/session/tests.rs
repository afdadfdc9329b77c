//! The session state machine, driven by literal lines.

use super::*;

const SUBSCRIBED: &str = r#"{"id":2,"result":[[["mining.set_difficulty","ab"],["mining.notify","ab"]],"08000002",4],"error":null}"#;

fn config(version_mask: Option<u32>, extranonce_subscribe: bool) -> SessionConfig {
    SessionConfig {
        user: "alice.rig1".into(),
        pass: "x".into(),
        version_mask,
        extranonce_subscribe,
        suggest_difficulty: None,
    }
}

fn notify(job_id: &str, prevhash_byte: u8, clean: bool) -> String {
    let prevhash = format!("{prevhash_byte:02x}").repeat(32);
    format!(
        r#"{{"id":null,"method":"mining.notify","params":["{job_id}","{prevhash}","01000000","ffffffff",[],"20000000","1d00ffff","6553f100",{clean}]}}"#
    )
}

fn sent(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(line) => Some(serde_json::from_str(line).unwrap()),
            _ => None,
        })
        .collect()
}

fn job_of(actions: &[Action]) -> Arc<Job> {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Job(job) => Some(Arc::clone(job)),
            _ => None,
        })
        .expect("a job")
}

/// A session that is subscribed (configure answered as given, or never).
fn subscribed(configure_reply: Option<&str>) -> Session {
    let mut session = Session::new(config(Some(0x1fff_e000), false), 1);
    session.start(None);
    if let Some(reply) = configure_reply {
        assert!(session.handle_line(reply).is_empty());
    }
    assert!(session.handle_line(SUBSCRIBED).is_empty());
    assert_eq!(
        session.handle_line(r#"{"id":3,"result":true,"error":null}"#),
        [Action::Authorized]
    );
    session
}

fn share(job: &Arc<Job>, nonce: u32) -> FoundShare {
    FoundShare {
        job: Arc::clone(job),
        unit: job.unit(5).unwrap(),
        ntime: job.notify.ntime.0,
        nonce,
    }
}

#[test]
fn opening_requests_go_out_back_to_back() {
    let mut session = Session::new(config(Some(0x1fff_e000), true), 1);
    let lines = sent(&session.start(None));
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["method"], "mining.configure");
    assert_eq!(
        lines[0]["params"],
        json!([["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}])
    );
    assert_eq!(lines[1]["method"], "mining.subscribe");
    assert_eq!(lines[1]["params"], json!([USER_AGENT]));
    assert_eq!(lines[2]["method"], "mining.authorize");
    assert_eq!(lines[2]["params"], json!(["alice.rig1", "x"]));
    assert_eq!(lines[3]["method"], "mining.extranonce.subscribe");
    let ids: Vec<&Value> = lines.iter().map(|l| &l["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2), &json!(3), &json!(4)]);

    let mut plain = Session::new(config(None, false), 1);
    let lines = sent(&plain.start(Some("ab".into())));
    assert_eq!(lines.len(), 2, "no configure, no extranonce.subscribe");
    assert_eq!(lines[0]["params"], json!([USER_AGENT, "ab"]));
}

#[test]
fn a_suggested_difficulty_goes_between_subscribe_and_authorize() {
    let mut session = Session::new(
        SessionConfig {
            suggest_difficulty: Some(Difficulty::new(0.05).unwrap()),
            ..config(None, false)
        },
        1,
    );
    let lines = sent(&session.start(None));
    let methods: Vec<&Value> = lines.iter().map(|l| &l["method"]).collect();
    assert_eq!(
        methods,
        [
            "mining.subscribe",
            "mining.suggest_difficulty",
            "mining.authorize"
        ]
    );
    assert_eq!(lines[1]["params"], json!([0.05]));
    // A pool that refuses it costs nothing.
    let refused = r#"{"id":2,"result":null,"error":[20,"unknown method",null]}"#;
    assert!(matches!(
        session.handle_line(refused).as_slice(),
        [Action::Ignored(_)]
    ));
}

#[test]
fn an_unanswered_configure_blocks_nothing() {
    let mut session = subscribed(None);
    let job = job_of(&session.handle_line(&notify("1", 1, true)));
    assert_eq!(job.version_mask, 0);
    assert_eq!(job.extranonce1.to_string(), "08000002");
    let line = session.submit(&share(&job, 7), true).unwrap();
    let value: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        value["params"],
        json!(["alice.rig1", "1", "05000000", "6553f100", "00000007"])
    );
    // A late configure reply is still matched by its id.
    assert!(session
        .handle_line(r#"{"id":1,"result":{"version-rolling":true,"version-rolling.mask":"00ffe000"},"error":null}"#)
        .is_empty());
    let job = job_of(&session.handle_line(&notify("2", 1, false)));
    assert_eq!(job.version_mask, 0x1fff_e000 & 0x00ff_e000);
}

#[test]
fn granted_version_rolling_adds_the_sixth_parameter() {
    let mut session = subscribed(Some(
        r#"{"id":1,"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"error":null}"#,
    ));
    let job = job_of(&session.handle_line(&notify("1", 1, true)));
    let unit = job.unit(1 << 32).unwrap();
    assert_eq!(unit.version_bits, 0x2000);
    let share = FoundShare {
        job: Arc::clone(&job),
        unit,
        ntime: 0x6553_f101,
        nonce: 0xdead_beef,
    };
    let value: Value = serde_json::from_str(&session.submit(&share, true).unwrap()).unwrap();
    assert_eq!(
        value["params"],
        json!([
            "alice.rig1",
            "1",
            "00000000",
            "6553f101",
            "deadbeef",
            "00002000"
        ])
    );
}

#[test]
fn difficulty_and_extranonce_apply_at_the_next_notify() {
    let mut session = subscribed(None);
    session.handle_line(r#"{"id":null,"method":"mining.set_difficulty","params":[0.001]}"#);
    let first = job_of(&session.handle_line(&notify("1", 1, true)));
    assert_eq!(first.difficulty.get(), 0.001, "fractional difficulty");
    assert!(session
        .handle_line(r#"{"id":null,"method":"mining.set_difficulty","params":[2]}"#)
        .is_empty());
    assert!(session
        .handle_line(r#"{"id":null,"method":"mining.set_extranonce","params":["aabbccdd",8]}"#)
        .is_empty());
    let second = job_of(&session.handle_line(&notify("1", 1, false)));
    assert_eq!(second.difficulty.get(), 2.0);
    assert_eq!(
        second.target,
        Difficulty::new(2.0).unwrap().to_target().to_le_bytes()
    );
    assert_eq!(second.extranonce1.to_string(), "aabbccdd");
    assert_eq!(second.extranonce2_size, 8);
    assert_eq!(
        first.extranonce1.to_string(),
        "08000002",
        "work in progress keeps its values"
    );
}

#[test]
fn clean_jobs_void_older_shares_and_refreshes_do_not() {
    let mut session = subscribed(None);
    let old = job_of(&session.handle_line(&notify("1", 1, true)));
    let refreshed = job_of(&session.handle_line(&notify("2", 1, false)));
    assert!(refreshed.generation > old.generation);
    assert!(
        session.submit(&share(&old, 1), true).is_some(),
        "non-clean keeps old jobs valid"
    );
    job_of(&session.handle_line(&notify("3", 2, true)));
    assert!(session.submit(&share(&old, 2), true).is_none());
    assert!(session.submit(&share(&refreshed, 3), true).is_none());
}

#[test]
fn shares_from_an_earlier_connection_need_the_same_pool_and_block() {
    let mut first = subscribed(None);
    let old = job_of(&first.handle_line(&notify("1", 1, true)));
    let mut second = Session::new(config(None, false), 2);
    second.start(first.session_id().map(str::to_owned));
    second.handle_line(&SUBSCRIBED.replace(r#""id":2"#, r#""id":1"#));
    assert!(second.submit(&share(&old, 1), true).is_none(), "no job yet");
    let new = job_of(&second.handle_line(&notify("9", 1, true)));
    assert!(new.generation > old.generation);
    assert!(second.submit(&share(&old, 1), true).is_some());
    assert!(
        second.submit(&share(&old, 1), false).is_none(),
        "another pool"
    );
    job_of(&second.handle_line(&notify("10", 3, true)));
    assert!(second.submit(&share(&old, 1), true).is_none(), "new block");
}

#[test]
fn share_replies_in_all_three_reject_encodings() {
    let mut session = subscribed(None);
    let job = job_of(&session.handle_line(&notify("1", 1, true)));
    for nonce in 0..4 {
        session.submit(&share(&job, nonce), true).unwrap();
    }
    assert_eq!(
        session.handle_line(r#"{"id":4,"result":true,"error":null}"#),
        [Action::ShareAccepted {
            job_id: "1".into(),
            difficulty: 1.0
        }]
    );
    let rejected = |session: &mut Session, line: &str| match session.handle_line(line).as_slice() {
        [Action::ShareRejected { code, reason, .. }] => (*code, reason.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        rejected(
            &mut session,
            r#"{"id":5,"result":null,"error":[23,"low difficulty share",null]}"#
        ),
        (Some(23), "low difficulty share".into())
    );
    assert_eq!(
        rejected(
            &mut session,
            r#"{"id":6,"result":false,"error":"No nonce"}"#
        ),
        (None, "No nonce".into())
    );
    assert_eq!(
        rejected(
            &mut session,
            r#"{"id":7,"result":false,"error":null,"reject-reason":"Stale"}"#
        ),
        (None, "Stale".into())
    );
    assert!(matches!(
        session
            .handle_line(r#"{"id":7,"result":true,"error":null}"#)
            .as_slice(),
        [Action::Ignored(_)]
    ));
}

#[test]
fn server_requests_are_answered_with_their_ids() {
    let mut session = subscribed(None);
    let replies =
        sent(&session.handle_line(r#"{"id":"v","method":"client.get_version","params":[]}"#));
    assert_eq!(
        replies,
        [json!({"id": "v", "result": USER_AGENT, "error": null})]
    );
    let replies = sent(&session.handle_line(r#"{"id":42,"method":"mining.ping","params":[]}"#));
    assert_eq!(
        replies,
        [json!({"id": 42, "result": "pong", "error": null})]
    );
    let actions =
        session.handle_line(r#"{"id":9,"method":"client.show_message","params":["hello"]}"#);
    assert_eq!(actions[0], Action::ShowMessage("hello".into()));
    assert_eq!(
        sent(&actions),
        [json!({"id": 9, "result": true, "error": null})]
    );
    let actions =
        session.handle_line(r#"{"id":null,"method":"client.show_message","params":["hi"]}"#);
    assert_eq!(actions, [Action::ShowMessage("hi".into())]);
    let replies = sent(&session.handle_line(r#"{"id":5,"method":"mining.bogus","params":[]}"#));
    assert_eq!(replies[0]["error"], json!([20, "unknown method", null]));
}

#[test]
fn reconnect_and_version_mask_changes() {
    let mut session = subscribed(Some(
        r#"{"id":1,"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"error":null}"#,
    ));
    assert_eq!(
        session.handle_line(r#"{"id":null,"method":"client.reconnect","params":["other",3334,5]}"#),
        [Action::Reconnect(Reconnect {
            host: Some("other".into()),
            port: Some(3334),
            wait_seconds: 5
        })]
    );
    assert!(session
        .handle_line(r#"{"id":null,"method":"mining.set_version_mask","params":["00ff0000"]}"#)
        .is_empty());
    let job = job_of(&session.handle_line(&notify("1", 1, true)));
    assert_eq!(job.version_mask, 0x00ff_0000 & 0x1fff_e000);
    let reissued = job_of(
        &session
            .handle_line(r#"{"id":null,"method":"mining.set_version_mask","params":["1fffe000"]}"#),
    );
    assert_eq!(reissued.version_mask, 0x1fff_e000);
    assert!(reissued.notify.clean_jobs);
    assert!(
        session.submit(&share(&job, 1), true).is_none(),
        "old mask's work is void"
    );
}

#[test]
fn refusals_and_retries() {
    let mut session = Session::new(config(None, false), 1);
    session.start(Some("stale-session".into()));
    let retry =
        sent(&session.handle_line(r#"{"id":1,"result":null,"error":[20,"cannot resume",null]}"#));
    assert_eq!(retry[0]["method"], "mining.subscribe");
    assert_eq!(retry[0]["params"], json!([USER_AGENT]));
    assert_eq!(
        session.handle_line(r#"{"id":2,"result":false,"error":null}"#),
        [Action::Unauthorized("rejected without a reason".into())]
    );
    assert_eq!(
        session.handle_line(r#"{"id":3,"result":null,"error":[20,"go away",null]}"#),
        [Action::SubscribeFailed("go away".into())]
    );
}

#[test]
fn garbage_is_ignored_without_panicking() {
    let mut session = subscribed(None);
    for line in [
        "not json",
        "[]",
        "{}",
        r#"{"id":null,"method":"mining.notify","params":["1"]}"#,
        r#"{"id":null,"method":"mining.set_difficulty","params":[0]}"#,
        r#"{"id":null,"method":"mining.set_difficulty","params":[-1]}"#,
        r#"{"id":99,"result":true,"error":null}"#,
        r#"{"id":"x","result":true,"error":null}"#,
    ] {
        let actions = session.handle_line(line);
        assert!(
            actions.iter().all(|a| matches!(a, Action::Ignored(_))),
            "{line}: {actions:?}"
        );
    }
    let before_subscribe = Session::new(config(None, false), 1).handle_line(&notify("1", 1, true));
    assert!(matches!(before_subscribe.as_slice(), [Action::Ignored(_)]));
}
