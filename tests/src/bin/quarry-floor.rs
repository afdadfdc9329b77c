//! `quarry-floor`: the least a Stratum endpoint can do for `quarry-load hold`,
//! to measure what a job fan-out costs on a machine before any pool runs.
//!
//! It answers `mining.subscribe` and `mining.authorize` with fixed replies and
//! a first job, and on any `mining.submit` writes one new clean `mining.notify`
//! to every connection: plain blocking writes from `--writers` threads, no
//! runtime, no per-connection state. `quarry-load hold` against it gives the
//! fan-out floor of the kernel, the loopback path and the receiving side.
//! It prints its listening address on stdout and each fan-out's write time on
//! stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Instant;

use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "quarry-floor",
    version,
    about = "A Stratum endpoint that only fans jobs out: the machine's floor for `quarry-load hold`"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Threads writing each fan-out (one per core is the most that helps).
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Threads answering handshakes.
    #[arg(long, default_value_t = 32)]
    handshakers: usize,
}

/// Every connection that has authorized, in the order they did.
type Registry = Arc<Mutex<Vec<Arc<TcpStream>>>>;

/// A clean job of the size quarry-pool's embedded chain announces, at the
/// easiest network target so the trigger's first hash solves it.
fn notify(job: u64) -> String {
    format!(
        concat!(
            r#"{{"id":null,"method":"mining.notify","params":["{:010x}","#,
            r#""2550fdb6ff963d56e64dab1e190709a92efd9baa2f2d6aa7558f19073ae49148","#,
            r#""02000000010000000000000000000000000000000000000000000000000000000000000000ffffffff135108","#,
            r#""082f7175617272792fffffffff0100f2052a01000000015100000000",[],"#,
            r#""20000000","207fffff","6b05dab6",true]}}"#,
            "\n"
        ),
        job
    )
}

/// The longest request line read; a longer one closes the connection.
const MAX_LINE: u64 = 16 * 1024;

/// Answers one connection's handshake; keeps reading only the connection
/// whose worker is the trigger (`*.trigger`), whose submits start fan-outs.
fn serve(
    index: usize,
    stream: TcpStream,
    registry: &Registry,
    job: &Mutex<u64>,
    writers: usize,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let stream = Arc::new(stream);
    let mut reader = BufReader::with_capacity(512, &*stream);
    let mut line = String::new();
    loop {
        line.clear();
        if (&mut reader).take(MAX_LINE).read_line(&mut line)? == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && line.len() as u64 == MAX_LINE {
            return Err(std::io::Error::other("request line too long"));
        }
        let Ok(request) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let id = &request["id"];
        let ok = json!({"id": id, "result": true, "error": null}).to_string() + "\n";
        match request["method"].as_str() {
            Some("mining.subscribe") => {
                let subscribed = json!({
                    "id": id,
                    "result": [[["mining.notify", format!("{index:08x}")]], format!("{index:08x}"), 4],
                    "error": null,
                });
                let current = notify(*job.lock().expect("job lock"));
                let reply = format!(
                    "{subscribed}\n{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[1]}}\n{current}"
                );
                (&*stream).write_all(reply.as_bytes())?;
            }
            Some("mining.authorize") => {
                (&*stream).write_all(ok.as_bytes())?;
                registry.lock().expect("registry lock").push(stream.clone());
                let worker = request["params"][0].as_str().unwrap_or_default();
                if !worker.ends_with(".trigger") {
                    return Ok(());
                }
            }
            Some("mining.submit") => {
                (&*stream).write_all(ok.as_bytes())?;
                let mut job = job.lock().expect("job lock");
                *job += 1;
                fan_out(&notify(*job), registry, writers);
            }
            _ => {}
        }
    }
}

/// Writes `line` to every registered connection from `writers` threads.
fn fan_out(line: &str, registry: &Registry, writers: usize) {
    let all = registry.lock().expect("registry lock").clone();
    let started = Instant::now();
    thread::scope(|scope| {
        for part in all.chunks(all.len().div_ceil(writers.max(1)).max(1)) {
            scope.spawn(move || {
                for stream in part {
                    // A miner that left is not this measurement's business.
                    let _ = (&**stream).write_all(line.as_bytes());
                }
            });
        }
    });
    eprintln!(
        "fan-out: wrote to {} connections in {:.1} ms",
        all.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = TcpListener::bind(cli.listen)?;
    println!("{}", listener.local_addr()?);
    let registry = Registry::default();
    let job = Arc::new(Mutex::new(1u64));
    let (queue, accepted) = mpsc::channel::<(usize, TcpStream)>();
    let accepted = Arc::new(Mutex::new(accepted));
    for _ in 0..cli.handshakers.max(1) {
        let (accepted, registry, job) = (accepted.clone(), registry.clone(), job.clone());
        thread::spawn(move || loop {
            let next = accepted.lock().expect("queue lock").recv();
            let Ok((index, stream)) = next else { return };
            if let Err(error) = serve(index, stream, &registry, &job, cli.writers) {
                eprintln!("connection {index}: {error}");
            }
        });
    }
    for (index, stream) in listener.incoming().enumerate() {
        match stream {
            Ok(stream) => queue.send((index, stream))?,
            Err(error) => eprintln!("accept: {error}"),
        }
    }
    Ok(())
}
