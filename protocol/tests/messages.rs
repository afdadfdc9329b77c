//! Typed Stratum messages through the wire: every `ClientRequest` and `ServerMessage`
//! variant is formatted with `to_line`, parsed back with `jsonrpc::parse` plus
//! `client_request()` / `server_message()`, and must come back equal. Errors must
//! name what was wrong, and no input — however hostile — may panic.

use proptest::prelude::*;
use quarry_protocol::fields::{
    Extranonce, FieldError, HexBytes, HexU32Be, JobId, PrevHash, RawHash,
};
use quarry_protocol::jsonrpc::{self, Call, Id, Message};
use quarry_protocol::messages::{
    Authorize, ClientRequest, Configure, ConfigureResult, Notify, ParamsError, Reconnect,
    ServerMessage, Submit, Subscribe, SubscribeResult,
};
use quarry_protocol::reject::{ErrorCode, Reply, StratumError};
use quarry_protocol::Difficulty;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------

fn parse_call(line: &str) -> Call {
    match jsonrpc::parse(line).unwrap_or_else(|e| panic!("{e}: {line}")) {
        Message::Request(call) | Message::Notification(call) => call,
        Message::Response(r) => panic!("classified as a response: {r:?}"),
    }
}

fn client(method: &str, params: Value) -> Result<ClientRequest, ParamsError> {
    let line = json!({"id": 1, "method": method, "params": params}).to_string();
    parse_call(&line).client_request()
}

fn server(method: &str, params: Value) -> Result<ServerMessage, ParamsError> {
    let line = json!({"id": null, "method": method, "params": params}).to_string();
    parse_call(&line).server_message()
}

/// Formats `request` with `id`, parses it back, and checks id, kind and value.
fn client_round_trip(request: &ClientRequest, id: &Id) -> Result<(), TestCaseError> {
    let line = request.to_line(id);
    prop_assert!(!line.contains('\n'));
    let message = jsonrpc::parse(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let call = match message {
        Message::Request(call) => {
            prop_assert!(!id.is_null());
            call
        }
        Message::Notification(call) => {
            prop_assert!(id.is_null());
            call
        }
        Message::Response(_) => return Err(TestCaseError::fail("a response")),
    };
    prop_assert_eq!(&call.id, id);
    prop_assert_eq!(call.method.as_str(), request.method());
    prop_assert_eq!(&call.client_request().unwrap(), request, "{}", line);
    Ok(())
}

fn server_round_trip(message: &ServerMessage, id: &Id) -> Result<(), TestCaseError> {
    let line = message.to_line(id);
    prop_assert!(!line.contains('\n'));
    let call = match jsonrpc::parse(&line).map_err(|e| TestCaseError::fail(e.to_string()))? {
        Message::Request(call) | Message::Notification(call) => call,
        Message::Response(_) => return Err(TestCaseError::fail("a response")),
    };
    prop_assert_eq!(&call.id, id);
    prop_assert_eq!(call.method.as_str(), message.method());
    prop_assert_eq!(&call.server_message().unwrap(), message, "{}", line);
    Ok(())
}

// ---------------------------------------------------------------------------------
// strategies
// ---------------------------------------------------------------------------------

/// Any text, including quotes, backslashes, control characters and non-ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        Just(String::new()),
        Just("\"\\\n\r\t\u{0}\u{7f}\u{2028}".to_owned()),
    ]
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        Just(Id::Null),
        any::<u64>().prop_map(Id::from),
        any::<i64>().prop_map(|n| Id::Number(n.into())),
        any::<f64>()
            .prop_filter_map("finite", serde_json::Number::from_f64)
            .prop_map(Id::Number),
        text().prop_map(Id::String),
    ]
}

/// An id that makes the line a request (server requests must carry one).
fn request_id() -> impl Strategy<Value = Id> {
    id().prop_filter("non-null", |id| !id.is_null())
}

fn difficulty() -> impl Strategy<Value = Difficulty> {
    prop_oneof![
        any::<f64>().prop_filter_map("finite and positive", |d| Difficulty::new(d.abs()).ok()),
        (1u32..1_000_000).prop_map(|d| Difficulty::new(f64::from(d)).unwrap()),
        Just(Difficulty::new(f64::MIN_POSITIVE / 4.0).unwrap()), // subnormal
        Just(Difficulty::new(f64::MAX).unwrap()),
    ]
}

fn extranonce() -> impl Strategy<Value = Extranonce> {
    prop::collection::vec(any::<u8>(), 0..=Extranonce::MAX_LEN)
        .prop_map(|bytes| Extranonce::new(&bytes).unwrap())
}

fn job_id() -> impl Strategy<Value = JobId> {
    "[!-~]{1,64}".prop_map(|s| s.parse().unwrap())
}

fn hex_u32() -> impl Strategy<Value = HexU32Be> {
    any::<u32>().prop_map(HexU32Be)
}

/// Arbitrary JSON without NaN/infinities (which JSON cannot carry).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
        "[0-9a-fA-F]{0,70}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (
            prop::collection::vec(text(), 0..5),
            prop::collection::btree_map(text(), json_value(), 0..5),
        )
            .prop_map(|(extensions, params)| ClientRequest::Configure(Configure {
                extensions,
                params: params.into_iter().collect::<Map<_, _>>(),
            })),
        (prop::option::of(text()), prop::option::of(text())).prop_map(
            |(user_agent, session_id)| ClientRequest::Subscribe(Subscribe {
                user_agent,
                session_id,
            })
        ),
        // An empty password is the same as none on the wire (see the dedicated test).
        (text(), prop::option::of("\\PC{1,30}")).prop_map(|(username, password)| {
            ClientRequest::Authorize(Authorize { username, password })
        }),
        (
            text(),
            job_id(),
            extranonce(),
            hex_u32(),
            hex_u32(),
            prop::option::of(hex_u32()),
        )
            .prop_map(
                |(worker, job_id, extranonce2, ntime, nonce, version_bits)| {
                    ClientRequest::Submit(Submit {
                        worker,
                        job_id,
                        extranonce2,
                        ntime,
                        nonce,
                        version_bits,
                    })
                }
            ),
        difficulty().prop_map(ClientRequest::SuggestDifficulty),
        Just(ClientRequest::ExtranonceSubscribe),
        Just(ClientRequest::Pong),
    ]
}

fn notify() -> impl Strategy<Value = Notify> {
    (
        job_id(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 0..120),
        prop::collection::vec(any::<u8>(), 0..120),
        prop::collection::vec(any::<[u8; 32]>(), 0..16),
        (hex_u32(), hex_u32(), hex_u32(), any::<bool>()),
    )
        .prop_map(
            |(job_id, prevhash, coinb1, coinb2, branch, (version, nbits, ntime, clean_jobs))| {
                Notify {
                    job_id,
                    prevhash: hex::encode(prevhash).parse::<PrevHash>().unwrap(),
                    coinb1: HexBytes(coinb1),
                    coinb2: HexBytes(coinb2),
                    merkle_branch: branch.into_iter().map(RawHash).collect(),
                    version,
                    nbits,
                    ntime,
                    clean_jobs,
                }
            },
        )
}

/// Server messages sent as notifications (any id, usually null).
fn server_notification() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        notify().prop_map(ServerMessage::Notify),
        difficulty().prop_map(ServerMessage::SetDifficulty),
        (extranonce(), 0..=Extranonce::MAX_LEN).prop_map(|(extranonce1, extranonce2_size)| {
            ServerMessage::SetExtranonce {
                extranonce1,
                extranonce2_size,
            }
        }),
        hex_u32().prop_map(ServerMessage::SetVersionMask),
        (
            prop::option::of(text()),
            prop::option::of(any::<u16>()),
            prop_oneof![Just(0u64), any::<u64>()],
        )
            .prop_map(
                |(host, port, wait_seconds)| ServerMessage::Reconnect(Reconnect {
                    host,
                    port,
                    wait_seconds,
                })
            ),
        text().prop_map(ServerMessage::ShowMessage),
    ]
}

fn extension_name() -> impl Strategy<Value = String> {
    // Result keys with a '.' are parameters of an extension, not extensions.
    "[a-z][a-z0-9_-]{0,20}".prop_filter("not version-rolling", |s| s != "version-rolling")
}

// ---------------------------------------------------------------------------------
// round trips
// ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_requests_round_trip(request in client_request(), id in id()) {
        client_round_trip(&request, &id)?;
    }

    #[test]
    fn server_notifications_round_trip(message in server_notification(), id in id()) {
        server_round_trip(&message, &id)?;
    }

    #[test]
    fn server_requests_round_trip(ping: bool, id in request_id()) {
        let message = if ping { ServerMessage::Ping } else { ServerMessage::GetVersion };
        server_round_trip(&message, &id)?;
    }

    #[test]
    fn subscribe_results_round_trip(session_id in text(), extranonce1 in extranonce(), size in 0..=Extranonce::MAX_LEN, id in request_id()) {
        let result = SubscribeResult { session_id, extranonce1, extranonce2_size: size };
        // Through a whole response line, as a miner receives it.
        let line = jsonrpc::result_line(&id, &result.to_value());
        let Message::Response(response) = jsonrpc::parse(&line).unwrap() else {
            return Err(TestCaseError::fail("not a response"));
        };
        prop_assert_eq!(&response.id, &id);
        prop_assert_eq!(SubscribeResult::from_value(&response.result).unwrap(), result.clone());
        prop_assert_eq!(Reply::from_response(&response), Reply::Accepted(result.to_value()));
    }

    #[test]
    fn configure_results_round_trip(
        version_rolling in prop::option::of(any::<u32>()),
        declined in prop::collection::btree_set(extension_name(), 0..6),
        id in request_id(),
    ) {
        // `declined` is a set on the wire (object keys), so generate it sorted and unique.
        let result = ConfigureResult { version_rolling, declined: declined.into_iter().collect() };
        let line = jsonrpc::result_line(&id, &result.to_value());
        let Message::Response(response) = jsonrpc::parse(&line).unwrap() else {
            return Err(TestCaseError::fail("not a response"));
        };
        prop_assert_eq!(ConfigureResult::from_value(&response.result), result);
    }

    #[test]
    fn negotiated_mask_is_the_intersection(miner_mask: u32, pool_mask: u32, others in prop::collection::vec(extension_name(), 0..4)) {
        let mut extensions = others.clone();
        extensions.push("version-rolling".to_owned());
        let request = client("mining.configure", json!([extensions, {"version-rolling.mask": HexU32Be(miner_mask).to_string()}])).unwrap();
        let ClientRequest::Configure(configure) = request else {
            return Err(TestCaseError::fail("not configure"));
        };
        let result = ConfigureResult::negotiate(&configure, pool_mask);
        prop_assert_eq!(result.version_rolling, Some(miner_mask & pool_mask));
        prop_assert_eq!(result.declined, others);
    }

    #[test]
    fn ids_round_trip_through_replies(id in id(), message in text()) {
        let ok = jsonrpc::result_line(&id, &Value::Bool(true));
        let Message::Response(response) = jsonrpc::parse(&ok).unwrap() else {
            return Err(TestCaseError::fail("not a response"));
        };
        prop_assert_eq!(&response.id, &id);
        prop_assert_eq!(Reply::from_response(&response), Reply::Accepted(Value::Bool(true)));

        let error = StratumError::new(ErrorCode::LowDifficulty, message.clone());
        let line = jsonrpc::error_line(&id, &error);
        let Message::Response(response) = jsonrpc::parse(&line).unwrap() else {
            return Err(TestCaseError::fail("not a response"));
        };
        prop_assert_eq!(&response.id, &id);
        prop_assert_eq!(Reply::from_response(&response), Reply::Rejected { code: Some(23), reason: message });
    }
}

#[test]
fn ids_of_every_kind_are_echoed() {
    let ids = [
        ("null", Id::Null),
        ("0", Id::from(0)),
        ("18446744073709551615", Id::from(u64::MAX)),
        ("-9223372036854775808", Id::Number(i64::MIN.into())),
        (
            "1.5",
            Id::Number(serde_json::Number::from_f64(1.5).unwrap()),
        ),
        (r#""xnsub""#, Id::String("xnsub".into())),
        (r#""""#, Id::String(String::new())),
        (r#""a\"b\\c""#, Id::String("a\"b\\c".into())),
    ];
    for (text, id) in ids {
        let line = format!(r#"{{"id":{text},"method":"mining.extranonce.subscribe","params":[]}}"#);
        let call = parse_call(&line);
        assert_eq!(call.id, id, "{text}");
        assert_eq!(call.id.to_string(), text);
        assert_eq!(
            ClientRequest::ExtranonceSubscribe.to_line(&id).json(),
            format!(r#"{{"id":{text},"method":"mining.extranonce.subscribe","params":[]}}"#)
        );
    }
    // An absent id is a notification, like null.
    let message = jsonrpc::parse(r#"{"method":"mining.suggest_difficulty","params":[8]}"#).unwrap();
    assert!(matches!(message, Message::Notification(ref c) if c.id == Id::Null));
    // Other id types are refused.
    for bad in ["true", "[]", "{}"] {
        let line = format!(r#"{{"id":{bad},"method":"mining.subscribe","params":[]}}"#);
        let err = jsonrpc::parse(&line).unwrap_err();
        assert!(
            err.to_string()
                .contains("id must be a number, string or null"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------
// exact wire forms and lenient inputs
// ---------------------------------------------------------------------------------

#[test]
fn wire_forms_are_exact() {
    let submit = ClientRequest::Submit(Submit {
        worker: "user.worker".into(),
        job_id: "186a0".parse().unwrap(),
        extranonce2: "1b020602".parse().unwrap(),
        ntime: HexU32Be(0x4d1b2237),
        nonce: HexU32Be(274_148_111),
        version_bits: Some(HexU32Be(0x2000)),
    });
    assert_eq!(
        submit.params(),
        json!([
            "user.worker",
            "186a0",
            "1b020602",
            "4d1b2237",
            "10572b0f",
            "00002000"
        ])
    );
    assert_eq!(
        ServerMessage::SetVersionMask(HexU32Be(0x1fffe000)).params(),
        json!(["1fffe000"])
    );
    assert_eq!(
        ServerMessage::SetExtranonce {
            extranonce1: "08000002".parse().unwrap(),
            extranonce2_size: 4
        }
        .params(),
        json!(["08000002", 4])
    );
    assert_eq!(
        ServerMessage::Ping.to_line(&Id::from(42)).json(),
        r#"{"id":42,"method":"mining.ping","params":[]}"#
    );
    assert_eq!(
        ServerMessage::Reconnect(Reconnect {
            host: None,
            port: None,
            wait_seconds: 0
        })
        .params(),
        json!([])
    );
    assert_eq!(
        ServerMessage::Reconnect(Reconnect {
            host: Some("pool.example".into()),
            port: Some(3333),
            wait_seconds: 5
        })
        .params(),
        json!(["pool.example", 3333, 5])
    );
    // Subscribe with no user agent but a session to resume keeps the session id.
    let subscribe = ClientRequest::Subscribe(Subscribe {
        user_agent: None,
        session_id: Some("ab12cd34".into()),
    });
    assert_eq!(subscribe.params(), json!([null, "ab12cd34"]));
    assert_eq!(
        client("mining.subscribe", subscribe.params()).unwrap(),
        subscribe
    );
}

#[test]
fn suggest_difficulty_accepts_a_number_or_a_numeric_string() {
    for (param, expected) in [
        (json!(8), 8.0),
        (json!(0.5), 0.5),
        (json!(1e3), 1000.0),
        (json!("8"), 8.0),
        (json!(" 2.5 "), 2.5),
        (json!("1e-3"), 0.001),
        (json!(18446744073709551615u64), 18446744073709551615.0),
    ] {
        let request = client("mining.suggest_difficulty", json!([param])).unwrap();
        assert_eq!(
            request,
            ClientRequest::SuggestDifficulty(Difficulty::new(expected).unwrap()),
            "{param}"
        );
        // The same rule for the pool's set_difficulty.
        assert_eq!(
            server("mining.set_difficulty", json!([param])).unwrap(),
            ServerMessage::SetDifficulty(Difficulty::new(expected).unwrap())
        );
    }
    // bfgminer sends it as a notification (id null).
    let call = parse_call(r#"{"id":null,"method":"mining.suggest_difficulty","params":[64]}"#);
    assert_eq!(
        call.client_request().unwrap(),
        ClientRequest::SuggestDifficulty(Difficulty::new(64.0).unwrap())
    );
}

#[test]
fn submit_with_six_params_carries_version_bits() {
    let base = ["user.worker", "186a0", "1b020602", "4d1b2237", "10572b0f"];
    let with = |bits: Value| {
        let mut params = json!(base);
        params.as_array_mut().unwrap().push(bits);
        client("mining.submit", params)
    };
    let ClientRequest::Submit(submit) = with(json!("1fffe000")).unwrap() else {
        panic!("not a submit")
    };
    assert_eq!(submit.version_bits, Some(HexU32Be(0x1fff_e000)));
    assert_eq!(submit.worker, "user.worker");
    assert_eq!(submit.job_id.as_str(), "186a0");
    assert_eq!(submit.extranonce2.as_bytes(), [0x1b, 0x02, 0x06, 0x02]);
    assert_eq!(submit.ntime, HexU32Be(0x4d1b_2237));
    assert_eq!(submit.nonce, HexU32Be(0x1057_2b0f));
    // Upper-case hex is the same value.
    let ClientRequest::Submit(upper) = with(json!("1FFFE000")).unwrap() else {
        panic!("not a submit")
    };
    assert_eq!(upper.version_bits, submit.version_bits);
    // A null sixth parameter means none; five parameters too.
    let ClientRequest::Submit(none) = with(Value::Null).unwrap() else {
        panic!("not a submit")
    };
    assert_eq!(none.version_bits, None);
    let ClientRequest::Submit(five) = client("mining.submit", json!(base)).unwrap() else {
        panic!("not a submit")
    };
    assert_eq!(five, none);
    // Malformed bits name the parameter and the input.
    let err = with(json!("2000")).unwrap_err();
    assert!(
        matches!(
            err,
            ParamsError::Field {
                index: 5,
                name: "version bits",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"2000\""), "{err}");
    let err = with(json!(8192)).unwrap_err();
    assert_eq!(
        err,
        ParamsError::Type {
            method: "mining.submit",
            index: 5,
            name: "version bits",
            expected: "a string"
        }
    );
}

#[test]
fn an_empty_password_is_no_password() {
    for params in [
        json!(["user.worker"]),
        json!(["user.worker", ""]),
        json!(["user.worker", null]),
    ] {
        assert_eq!(
            client("mining.authorize", params.clone()).unwrap(),
            ClientRequest::Authorize(Authorize {
                username: "user.worker".into(),
                password: None
            }),
            "{params}"
        );
    }
    let none = ClientRequest::Authorize(Authorize {
        username: "u".into(),
        password: None,
    });
    // Sent as "" (slush's stratum-mining takes two positional arguments).
    assert_eq!(none.params(), json!(["u", ""]));
    assert_eq!(
        client("mining.authorize", json!(["u", "x"])).unwrap(),
        ClientRequest::Authorize(Authorize {
            username: "u".into(),
            password: Some("x".into())
        })
    );
}

#[test]
fn reconnect_accepts_ckpool_and_cpuminer_shapes() {
    let cases = [
        (json!([]), None, None, 0),
        (
            json!(["pool.example", "3334", 0]),
            Some("pool.example"),
            Some(3334),
            0,
        ),
        (
            json!(["pool.example", 3334]),
            Some("pool.example"),
            Some(3334),
            0,
        ),
        (
            json!(["pool.example", 3334, "10"]),
            Some("pool.example"),
            Some(3334),
            10,
        ),
        (json!([null, 3334, 5]), None, Some(3334), 5),
    ];
    for (params, host, port, wait_seconds) in cases {
        assert_eq!(
            server("client.reconnect", params.clone()).unwrap(),
            ServerMessage::Reconnect(Reconnect {
                host: host.map(str::to_owned),
                port,
                wait_seconds
            }),
            "{params}"
        );
    }
    for bad in [
        json!(["h", 70000]),
        json!(["h", "x"]),
        json!(["h", -1]),
        json!(["h", 1, "soon"]),
        json!(["h", 1, -5]),
        json!(["h", 1, 1.5]),
        json!([5]),
    ] {
        assert!(server("client.reconnect", bad.clone()).is_err(), "{bad}");
    }
}

#[test]
fn subscribe_results_of_real_pools() {
    // ckpool: a single pair, not wrapped in an outer array.
    let ck = SubscribeResult::from_value(&json!([["mining.notify", "ab12cd34"], "0a0b0c0d", 8]))
        .unwrap();
    assert_eq!(ck.session_id, "ab12cd34");
    assert_eq!(ck.extranonce1.to_string(), "0a0b0c0d");
    assert_eq!(ck.extranonce2_size, 8);
    // ckpool's documented form: one pair inside the outer array.
    let ck2 = SubscribeResult::from_value(&json!([[["mining.notify", "ab12cd34"]], "0a0b0c0d", 8]))
        .unwrap();
    assert_eq!(ck2, ck);
    // Wrong shapes are errors that say what was wrong.
    let err = SubscribeResult::from_value(&json!({"extranonce1": "00"})).unwrap_err();
    assert!(err.to_string().contains("must be an array"), "{err}");
    let err = SubscribeResult::from_value(&json!([[], "0a0b0c0d", 33])).unwrap_err();
    assert!(err.to_string().contains("extranonce2_size"), "{err}");
    let err = SubscribeResult::from_value(&json!([[], "0a0b0c0", 4])).unwrap_err();
    assert!(err.to_string().contains("\"0a0b0c0\""), "{err}");
    let err = SubscribeResult::from_value(&json!([[], "0a0b0c0d"])).unwrap_err();
    assert!(
        matches!(err, ParamsError::Missing { index: 2, .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------
// errors name the offending input
// ---------------------------------------------------------------------------------

#[test]
fn a_short_nonce_is_named() {
    let err = client(
        "mining.submit",
        json!(["user.worker", "186a0", "1b020602", "4d1b2237", "10572b0"]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ParamsError::Field {
            method: "mining.submit",
            index: 4,
            name: "nonce",
            source: FieldError::Length {
                field: "u32 field",
                expected: "8".into(),
                got: 7,
                input: "10572b0".into(),
            },
        }
    );
    let text = err.to_string();
    assert!(
        text.starts_with("mining.submit: parameter 4 (nonce)"),
        "{text}"
    );
    assert!(text.contains("\"10572b0\""), "{text}");
    assert!(text.contains("got 7"), "{text}");
}

#[test]
fn bad_submit_fields_are_named() {
    let base = json!(["w", "186a0", "1b020602", "4d1b2237", "10572b0f"]);
    let cases: [(usize, Value, &str, &str); 6] = [
        (1, json!("job id"), "job id", "\"job id\""),
        (1, json!(""), "job id", "\"\""),
        (2, json!("1b02060"), "extranonce2", "\"1b02060\""),
        (2, json!("zz020602"), "extranonce2", "\"zz020602\""),
        (3, json!("4d1b22370"), "ntime", "\"4d1b22370\""),
        (4, json!("0x572b0f"), "nonce", "\"0x572b0f\""),
    ];
    for (index, value, name, quoted) in cases {
        let mut params = base.clone();
        params[index] = value;
        let err = client("mining.submit", params).unwrap_err();
        assert!(
            matches!(err, ParamsError::Field { index: i, name: n, .. } if i == index && n == name),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(name) && text.contains(quoted), "{text}");
    }
}

#[test]
fn bad_difficulties_are_named() {
    let cases: [(Value, &str); 10] = [
        (json!("abc"), "\"abc\""),
        (json!(""), "\"\""),
        (json!("0x10"), "\"0x10\""),
        (json!(-1), "got -1"),
        (json!("-1"), "got -1"),
        (json!(0), "got 0"),
        (json!("0"), "got 0"),
        (json!("NaN"), "got NaN"),
        (json!("inf"), "got inf"),
        (json!("1e999"), "got inf"),
    ];
    for (param, needle) in cases {
        for method in ["mining.suggest_difficulty", "mining.set_difficulty"] {
            let err = match method {
                "mining.suggest_difficulty" => client(method, json!([param])).unwrap_err(),
                _ => server(method, json!([param])).unwrap_err(),
            };
            let text = err.to_string();
            assert!(text.starts_with(method), "{text}");
            assert!(text.contains(needle), "{param}: {text}");
        }
    }
    let err = client("mining.suggest_difficulty", json!(["abc"])).unwrap_err();
    assert_eq!(
        err,
        ParamsError::NotNumeric {
            method: "mining.suggest_difficulty",
            index: 0,
            name: "difficulty",
            input: "abc".into(),
        }
    );
    for wrong_type in [json!(true), json!(null), json!([1]), json!({"d": 1})] {
        let err = client("mining.suggest_difficulty", json!([wrong_type])).unwrap_err();
        assert!(matches!(err, ParamsError::Type { index: 0, .. }), "{err:?}");
    }
    let err = client("mining.suggest_difficulty", json!([])).unwrap_err();
    assert_eq!(
        err,
        ParamsError::Missing {
            method: "mining.suggest_difficulty",
            index: 0,
            name: "difficulty"
        }
    );
}

fn notify_params() -> Value {
    json!([
        "186a0",
        "1901125004612a1701c3a621d930d31d36b607df1fccc2160002d01c00000000",
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08",
        "ffffffff0100f2052a01000000",
        ["c40297f730dd7b5a99567eb8d27b78758f607507c52292d02d4031895b52f2ff"],
        "00000001",
        "1b04864c",
        "4d1b2237",
        true
    ])
}

#[test]
fn a_short_prevhash_is_named() {
    let short = "1901125004612a1701c3a621d930d31d36b607df1fccc2160002d01c0000000";
    assert_eq!(short.len(), 63);
    let mut params = notify_params();
    params[1] = json!(short);
    let err = server("mining.notify", params).unwrap_err();
    assert_eq!(
        err,
        ParamsError::Field {
            method: "mining.notify",
            index: 1,
            name: "prevhash",
            source: FieldError::Length {
                field: "prevhash",
                expected: "64".into(),
                got: 63,
                input: short.into(),
            },
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("prevhash") && text.contains(short) && text.contains("got 63"),
        "{text}"
    );
}

#[test]
fn bad_notify_fields_are_named() {
    let cases: [(usize, Value, &str, &str); 6] = [
        (0, json!("has space"), "job_id", "\"has space\""),
        (2, json!("0g"), "coinb1", "\"0g\""),
        (3, json!("abc"), "coinb2", "\"abc\""),
        (4, json!(["c40297f7"]), "merkle_branch", "\"c40297f7\""),
        (6, json!("1b04864"), "nbits", "\"1b04864\""),
        (7, json!("time"), "ntime", "\"time\""),
    ];
    for (index, value, name, quoted) in cases {
        let mut params = notify_params();
        params[index] = value;
        let err = server("mining.notify", params).unwrap_err();
        assert!(
            matches!(err, ParamsError::Field { index: i, name: n, .. } if i == index && n == name),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(name) && text.contains(quoted), "{text}");
    }
    let mut params = notify_params();
    params[8] = json!("true");
    assert_eq!(
        server("mining.notify", params).unwrap_err(),
        ParamsError::Type {
            method: "mining.notify",
            index: 8,
            name: "clean_jobs",
            expected: "a boolean"
        }
    );
    // Very long input is quoted, but cut short.
    let mut params = notify_params();
    params[1] = json!("a".repeat(10_000));
    let text = server("mining.notify", params).unwrap_err().to_string();
    assert!(text.contains("got 10000") && text.len() < 300, "{text}");
}

#[test]
fn unknown_methods_are_named() {
    assert_eq!(
        client("mining.get_transactions", json!([])).unwrap_err(),
        ParamsError::UnknownMethod("mining.get_transactions".into())
    );
    assert_eq!(
        server("mining.set_goal", json!([])).unwrap_err(),
        ParamsError::UnknownMethod("mining.set_goal".into())
    );
    // Client methods are not server methods and vice versa.
    assert!(server("mining.submit", json!([])).is_err());
    assert!(client("mining.notify", notify_params()).is_err());
    let long = "m".repeat(5000);
    let ParamsError::UnknownMethod(named) = client(&long, json!([])).unwrap_err() else {
        panic!("not unknown")
    };
    assert_eq!(named, "m".repeat(64));
    // ESP-Miner answers pings with a request-shaped pong.
    assert_eq!(client("pong", json!([])).unwrap(), ClientRequest::Pong);
    assert_eq!(
        client("mining.pong", json!([])).unwrap(),
        ClientRequest::Pong
    );
}

// ---------------------------------------------------------------------------------
// hostile inputs
// ---------------------------------------------------------------------------------

const CLIENT_METHODS: [&str; 8] = [
    "mining.configure",
    "mining.subscribe",
    "mining.authorize",
    "mining.submit",
    "mining.suggest_difficulty",
    "mining.extranonce.subscribe",
    "pong",
    "mining.pong",
];
const SERVER_METHODS: [&str; 8] = [
    "mining.notify",
    "mining.set_difficulty",
    "mining.set_extranonce",
    "mining.set_version_mask",
    "client.reconnect",
    "client.show_message",
    "client.get_version",
    "mining.ping",
];

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses `params` for `method` both ways through a whole line. Whatever parses must
/// format back to a line that parses to the same value.
fn parse_everything(method: &str, params: &Value) -> Result<(), TestCaseError> {
    let line = json!({"id": 7, "method": method, "params": params}).to_string();
    let Ok(message) = jsonrpc::parse(&line) else {
        return Ok(());
    };
    let Message::Request(call) = message else {
        return Err(TestCaseError::fail("not a request"));
    };
    if let Ok(request) = call.client_request() {
        let again = parse_call(&request.to_line(&call.id)).client_request();
        prop_assert_eq!(again, Ok(request), "{}", line);
    }
    if let Ok(message) = call.server_message() {
        let again = parse_call(&message.to_line(&call.id)).server_message();
        prop_assert_eq!(again, Ok(message), "{}", line);
    }
    Ok(())
}

/// Valid params for each method with parameters, and the JSON kinds each position accepts.
fn positional_table() -> Vec<(&'static str, bool, Value, Vec<&'static [&'static str]>)> {
    const S: &[&str] = &["string"];
    const S0: &[&str] = &["string", "null"];
    const NUM: &[&str] = &["number", "string"];
    const ARRAY: &[&str] = &["array"];
    const OBJECT0: &[&str] = &["object", "null"];
    const BOOL: &[&str] = &["bool"];
    const NUMBER: &[&str] = &["number"];
    const NUM0: &[&str] = &["number", "string", "null"];
    vec![
        (
            "mining.configure",
            true,
            json!([["version-rolling"], {"version-rolling.mask": "1fffe000"}]),
            vec![ARRAY, OBJECT0],
        ),
        (
            "mining.subscribe",
            true,
            json!(["cpuminer/2.5.1", "ab12cd34"]),
            vec![S0, S0],
        ),
        (
            "mining.authorize",
            true,
            json!(["user.worker", "x"]),
            vec![S, S0],
        ),
        (
            "mining.submit",
            true,
            json!([
                "user.worker",
                "186a0",
                "1b020602",
                "4d1b2237",
                "10572b0f",
                "00002000"
            ]),
            vec![S, S, S, S, S, S0],
        ),
        ("mining.suggest_difficulty", true, json!([16]), vec![NUM]),
        (
            "mining.notify",
            false,
            notify_params(),
            vec![S, S, S, S, ARRAY, S, S, S, BOOL],
        ),
        ("mining.set_difficulty", false, json!([16]), vec![NUM]),
        (
            "mining.set_extranonce",
            false,
            json!(["08000002", 4]),
            vec![S, NUMBER],
        ),
        (
            "mining.set_version_mask",
            false,
            json!(["1fffe000"]),
            vec![S],
        ),
        (
            "client.reconnect",
            false,
            json!(["pool.example", 3333, 0]),
            vec![S0, NUM0, NUM0],
        ),
        ("client.show_message", false, json!(["hello"]), vec![S]),
    ]
}

fn parse_as(from_client: bool, method: &str, params: Value) -> Result<(), ParamsError> {
    if from_client {
        client(method, params).map(drop)
    } else {
        server(method, params).map(drop)
    }
}

#[test]
fn wrong_types_in_every_position_are_errors() {
    let replacements = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x"),
        json!([]),
        json!(["a", 1]),
        json!({}),
        json!({"a": [1]}),
    ];
    for (method, from_client, valid, accepted) in positional_table() {
        assert!(
            parse_as(from_client, method, valid.clone()).is_ok(),
            "{method} {valid}"
        );
        for (index, kinds) in accepted.iter().enumerate() {
            for replacement in &replacements {
                let mut params = valid.clone();
                params[index] = replacement.clone();
                let result = parse_as(from_client, method, params.clone());
                if !kinds.contains(&kind(replacement)) {
                    assert!(result.is_err(), "{method} accepted {params}");
                }
            }
        }
        // Every required parameter is named when missing.
        let required = accepted.iter().take_while(|k| !k.contains(&"null")).count();
        for len in 0..required {
            let params = Value::Array(valid.as_array().unwrap()[..len].to_vec());
            match parse_as(from_client, method, params) {
                Err(ParamsError::Missing { index, .. }) => assert!(index >= len, "{method}"),
                other => panic!("{method} with {len} params: {other:?}"),
            }
        }
    }
}

#[test]
fn huge_numbers_giant_arrays_and_deep_nesting_do_not_panic() {
    let numbers = [
        "1e308",
        "-1e308",
        "1e400",
        "-1e400",
        "18446744073709551616",
        "-9223372036854775809",
        "340282366920938463463374607431768211456",
        "5e-324",
        "1e-400",
        "0.000000000000000000000000000000000000000000000000000000001",
    ];
    for number in numbers {
        for method in CLIENT_METHODS.iter().chain(&SERVER_METHODS) {
            for params in [
                format!("[{number}]"),
                format!(r#"["a",{number},{number}]"#),
                format!(r#"["w","1","00",{number},"00000000"]"#),
            ] {
                let line = format!(r#"{{"id":{number},"method":"{method}","params":{params}}}"#);
                if let Ok(Message::Request(call) | Message::Notification(call)) =
                    jsonrpc::parse(&line)
                {
                    let _ = call.client_request();
                    let _ = call.server_message();
                }
            }
        }
    }
    // A huge difficulty is valid and gives a tiny target; a tiny one saturates.
    let ClientRequest::SuggestDifficulty(d) =
        client("mining.suggest_difficulty", json!([1e308])).unwrap()
    else {
        panic!()
    };
    assert_eq!(d.to_target(), bitcoin::Target::ZERO);
    let ServerMessage::SetDifficulty(d) =
        server("mining.set_difficulty", json!(["5e-324"])).unwrap()
    else {
        panic!()
    };
    assert_eq!(d.to_target().to_le_bytes(), [0xff; 32]);
    // Sizes beyond what fits are errors.
    for size in [json!(33), json!(u64::MAX), json!(1e20), json!(-4)] {
        assert!(
            server("mining.set_extranonce", json!(["00", size])).is_err(),
            "{size}"
        );
        assert!(
            SubscribeResult::from_value(&json!([[], "00", size])).is_err(),
            "{size}"
        );
    }
    assert!(client(
        "mining.submit",
        json!(["w", "1", "00".repeat(33), "00000000", "00000000"])
    )
    .is_err());

    // Giant arrays: a notify with 20 000 branch entries parses (it is well formed);
    // 20 000 parameters are ignored past the ones used.
    let branch = vec!["00".repeat(32); 20_000];
    let mut params = notify_params();
    params[4] = json!(branch);
    let ServerMessage::Notify(notify) = server("mining.notify", params).unwrap() else {
        panic!()
    };
    assert_eq!(notify.merkle_branch.len(), 20_000);
    let mut many = vec![json!("x"); 20_000];
    many[0] = json!("user.worker");
    assert!(client("mining.authorize", Value::Array(many.clone())).is_ok());
    assert!(client("mining.submit", Value::Array(many)).is_err());
    for method in CLIENT_METHODS.iter().chain(&SERVER_METHODS) {
        let _ = parse_as(true, method, json!(vec![Value::Null; 20_000]));
        let _ = parse_as(false, method, json!(vec![json!({}); 20_000]));
    }

    // Deep nesting: beyond serde_json's recursion limit the line is refused; below it,
    // a nested value in any position is a typed error, not a panic.
    for depth in [10, 100, 126, 127, 128, 1_000, 20_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        for method in CLIENT_METHODS.iter().chain(&SERVER_METHODS) {
            for inner in [&nested, &objects] {
                for params in [
                    inner.clone(),
                    format!("[{inner}]"),
                    format!(r#"["a","b","c","d",{inner}]"#),
                ] {
                    let line = format!(r#"{{"id":1,"method":"{method}","params":{params}}}"#);
                    if let Ok(Message::Request(call)) = jsonrpc::parse(&line) {
                        let _ = call.client_request();
                        let _ = call.server_message();
                    } else if depth < 100 && params.starts_with('[') {
                        panic!("{method}: a line nested {depth} deep should parse");
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary JSON as params for every known method name (and an unknown one).
    #[test]
    fn arbitrary_params_never_panic(
        method in prop::sample::select(
            CLIENT_METHODS.iter().chain(&SERVER_METHODS).copied().chain(["mining.unknown", ""]).collect::<Vec<_>>()
        ),
        params in prop::collection::vec(json_value(), 0..12),
    ) {
        parse_everything(method, &Value::Array(params))?;
    }

    /// Non-array params are refused by the framing layer.
    #[test]
    fn non_array_params_are_refused(value in json_value().prop_filter("not an array or null", |v| !v.is_array() && !v.is_null())) {
        let line = json!({"id": 1, "method": "mining.submit", "params": value}).to_string();
        prop_assert!(jsonrpc::parse(&line).is_err());
    }

    /// One position of valid params replaced by arbitrary JSON: never a panic, and a
    /// value of a kind the position does not accept is always an error.
    #[test]
    fn one_corrupted_position(
        entry in prop::sample::select(positional_table()),
        position in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let (method, from_client, valid, accepted) = entry;
        let index = position.index(accepted.len());
        let mut params = valid;
        params[index] = replacement.clone();
        parse_everything(method, &params)?;
        if !accepted[index].contains(&kind(&replacement)) {
            prop_assert!(parse_as(from_client, method, params.clone()).is_err(), "{} accepted {}", method, params);
        }
    }

    /// Whatever is suggested, an accepted difficulty is finite and positive.
    #[test]
    fn an_accepted_suggested_difficulty_is_finite_and_positive(value in json_value()) {
        if let Ok(ClientRequest::SuggestDifficulty(d)) = client("mining.suggest_difficulty", json!([value])) {
            prop_assert!(d.get().is_finite() && d.get() > 0.0);
        }
    }

    /// Whatever is submitted, an accepted submit's fields are within their bounds.
    #[test]
    fn an_accepted_submit_has_bounded_fields(params in prop::collection::vec(json_value(), 5..7)) {
        if let Ok(ClientRequest::Submit(submit)) = client("mining.submit", Value::Array(params)) {
            prop_assert!(submit.extranonce2.len() <= Extranonce::MAX_LEN);
            prop_assert!(submit.job_id.as_str().len() <= 64);
        }
    }

    /// Arbitrary text as a line never panics anywhere in the stack.
    #[test]
    fn arbitrary_lines_never_panic(line in "\\PC{0,300}") {
        if let Ok(Message::Request(call) | Message::Notification(call)) = jsonrpc::parse(&line) {
            let _ = call.client_request();
            let _ = call.server_message();
        }
    }
}
