//! The path every incoming line takes before a session acts on it: framing,
//! JSON-RPC classification and typed parameters; and the reply going out.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quarry_protocol::jsonrpc::{self, result_line, Id, Message};
use quarry_protocol::LineCodec;
use serde_json::Value;
use tokio_util::codec::Decoder;

const SUBMIT: &str = r#"{"id":4711,"method":"mining.submit","params":["account.rig-01","18f3a2b4c01","0000002a","6560a1b0","9d1c3e77"]}"#;

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode + classify + parse a submit", |b| {
        let mut codec = LineCodec::new(16 * 1024);
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.extend_from_slice(SUBMIT.as_bytes());
            buf.extend_from_slice(b"\n");
            let line = codec.decode(&mut buf).expect("valid").expect("a line");
            let Ok(Message::Request(call)) = jsonrpc::parse(black_box(&line)) else {
                panic!("a request");
            };
            call.client_request().expect("a submit")
        });
    });
    group.bench_function("encode the acknowledgement", |b| {
        let id = Id::Number(4711.into());
        b.iter(|| result_line(black_box(&id), &Value::Bool(true)));
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
