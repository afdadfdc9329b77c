//! The developer's files: the devcontainer (`.devcontainer/`), the CodeLLDB debug
//! configurations (`.vscode/launch.json`), and the tokio-console endpoint of the
//! `console` feature.
//!
//! A build without the feature must refuse `--console` and say how to rebuild. A
//! build with it is checked where `QUARRY_CONSOLE_POOL` and `QUARRY_CONSOLE_MINER`
//! name such binaries; `.ci/run` builds them (unoptimized, in `target/console`,
//! so the release binaries the other tests use stay without the feature):
//!
//! ```sh
//! RUSTFLAGS="--cfg tokio_unstable" cargo build -p quarry-pool -p quarry-miner \
//!     --features quarry-pool/console,quarry-miner/console --target-dir target/console
//! QUARRY_CONSOLE_POOL=$PWD/target/console/debug/quarry-pool \
//!     QUARRY_CONSOLE_MINER=$PWD/target/console/debug/quarry-miner \
//!     QUARRY_REQUIRE_CONSOLE=1 cargo test --release -p quarry-tests --test dev_files
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use quarry_tests::miner::poll;
use quarry_tests::process::{binary, forward};
use quarry_tests::workspace;
use quarry_tests::{skip_unless_required, Killed, PoolProcess};
use serde_json::Value;

const REQUIRE_CONSOLE: &str = "QUARRY_REQUIRE_CONSOLE";
const WAIT: Duration = Duration::from_secs(60);

/// The Debian packages .ci/run installs for the tests; the devcontainer has them too.
const CI_PACKAGES: &[&str] = &[
    "chromium",
    "chromium-driver",
    "nodejs",
    "npm",
    "stunnel4",
    "python3",
    "prometheus",
    "systemd",
];

/// Every Dockerfile instruction (docs.docker.com, "Dockerfile reference").
const DOCKERFILE_INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// JSON with comments (VS Code's JSONC) without its `//` and `/* */` comments;
/// strings, and comment markers inside them, are kept as they are.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => while chars.next_if(|&c| c != '\n').is_some() {},
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

fn jsonc(path: &str) -> Value {
    serde_json::from_str(&strip_comments(&workspace::read(path)))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn comments_are_stripped_outside_strings_only() {
    let text = "// head\n{ \"url\": \"stratum+tcp://a:1\", /* b */ \"q\": \"\\\"//\" // tail\n}";
    let value: Value = serde_json::from_str(&strip_comments(text)).unwrap();
    assert_eq!(value["url"], "stratum+tcp://a:1");
    assert_eq!(value["q"], "\"//");
    assert!(
        serde_json::from_str::<Value>(text).is_err(),
        "JSON has no comments"
    );
}

#[test]
fn devcontainer_builds_the_dockerfile_with_debugger_rights() {
    let config = jsonc(".devcontainer/devcontainer.json");
    let dockerfile = config["build"]["dockerfile"]
        .as_str()
        .expect("build.dockerfile");
    assert!(
        workspace::path(".devcontainer").join(dockerfile).is_file(),
        "devcontainer.json names {dockerfile}, which is not in .devcontainer/"
    );
    let strings = |key: &str| -> Vec<String> {
        config[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is a list"))
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect()
    };
    assert!(strings("capAdd").contains(&"SYS_PTRACE".into()));
    assert!(strings("securityOpt").contains(&"seccomp=unconfined".into()));
    let ports = strings("forwardPorts");
    for port in ["3333", "3334", "3336", "8080"] {
        assert!(ports.contains(&port.into()), "forwardPorts lacks {port}");
    }
    let extensions: Vec<&str> = config["customizations"]["vscode"]["extensions"]
        .as_array()
        .expect("customizations.vscode.extensions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for extension in ["vadimcn.vscode-lldb", "rust-lang.rust-analyzer"] {
        assert!(extensions.contains(&extension), "no {extension}");
    }
    let post_create = config["postCreateCommand"]
        .as_str()
        .expect("postCreateCommand");
    assert!(post_create.contains("npm ci --prefix tests/interop/nomp"));
    assert!(workspace::path("tests/interop/nomp/package-lock.json").is_file());
}

/// A Dockerfile's instructions (keyword, arguments), continuation lines joined and
/// comments dropped; an error names the first line that is not an instruction.
fn dockerfile_instructions(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut instructions = Vec::new();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(body) => (body.trim_end(), true),
            None => (trimmed, false),
        };
        let logical = match current.take() {
            Some(previous) => previous + " " + body,
            None => {
                let keyword = body.split_whitespace().next().unwrap_or_default();
                if !DOCKERFILE_INSTRUCTIONS.contains(&keyword.to_ascii_uppercase().as_str()) {
                    return Err(format!("line {}: {line:?} is no instruction", number + 1));
                }
                body.to_owned()
            }
        };
        if continues {
            current = Some(logical);
        } else {
            let (keyword, args) = logical
                .split_once(char::is_whitespace)
                .unwrap_or((&logical, ""));
            instructions.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
        }
    }
    if current.is_some() {
        return Err("the last instruction ends in a continuation".into());
    }
    match instructions.iter().find(|(keyword, _)| keyword != "ARG") {
        Some((keyword, _)) if keyword == "FROM" => Ok(instructions),
        _ => Err("the first instruction (after ARGs) is not FROM".into()),
    }
}

#[test]
fn dockerfile_parser_rejects_what_docker_would() {
    let good = "# c\nFROM rust:1\n\nRUN apt-get update \\\n    # inside\n    && apt-get install -y gdb\nENV A=1\n";
    let parsed = dockerfile_instructions(good).unwrap();
    assert_eq!(
        parsed[1],
        (
            "RUN".into(),
            "apt-get update && apt-get install -y gdb".into()
        )
    );
    for bad in [
        "RUN true\nFROM rust:1\n",
        "FROM rust:1\nINSTALL gdb\n",
        "FROM rust:1\nRUN a \\\n",
    ] {
        assert!(dockerfile_instructions(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn dockerfile_installs_what_ci_installs_and_debuggers() {
    let instructions =
        dockerfile_instructions(&workspace::read(".devcontainer/Dockerfile")).unwrap();
    let from = instructions.iter().find(|(keyword, _)| keyword == "FROM");
    assert!(
        from.is_some_and(|(_, image)| image.starts_with("rust:")),
        "not a Rust image: {from:?}"
    );
    let run: Vec<&str> = instructions
        .iter()
        .filter(|(keyword, _)| keyword == "RUN")
        .flat_map(|(_, args)| args.split_whitespace())
        .collect();
    let ci = workspace::read(".ci/run");
    for package in CI_PACKAGES {
        assert!(
            ci.contains(package),
            ".ci/run no longer installs {package}: update CI_PACKAGES"
        );
    }
    for package in CI_PACKAGES
        .iter()
        .chain(&["gdb", "lldb", "rustfmt", "clippy"])
    {
        assert!(
            run.contains(package),
            "the Dockerfile does not install {package}"
        );
    }
}

#[test]
fn launch_configurations_start_and_attach_to_both_binaries() {
    let launch = jsonc(".vscode/launch.json");
    let configs = launch["configurations"].as_array().expect("configurations");
    let mut names: Vec<&str> = configs.iter().filter_map(|c| c["name"].as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        configs.len(),
        "every configuration has its own name"
    );
    assert!(
        configs.iter().all(|c| c["type"] == "lldb"),
        "all are CodeLLDB's"
    );
    for binary in ["quarry-pool", "quarry-miner"] {
        let start = configs
            .iter()
            .find(|c| {
                c["request"] == "launch"
                    && c["cargo"]["args"]
                        .as_array()
                        .is_some_and(|args| args.windows(2).any(|w| w[0] == "-p" && w[1] == binary))
            })
            .unwrap_or_else(|| panic!("no launch configuration builds {binary}"));
        assert_eq!(start["cargo"]["filter"]["name"], binary);
        let attach = configs.iter().any(|c| {
            c["request"] == "attach"
                && c["program"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("/target/release/{binary}")))
        });
        assert!(attach, "no attach configuration for {binary}");
    }
    let miner = configs
        .iter()
        .find(|c| c["request"] == "launch" && c["cargo"]["filter"]["name"] == "quarry-miner")
        .unwrap();
    assert!(
        miner["args"]
            .to_string()
            .contains("stratum+tcp://127.0.0.1:3333"),
        "the miner mines on the launched pool: {}",
        miner["args"]
    );
    assert!(
        configs
            .iter()
            .any(|c| c["request"] == "attach" && c["pid"] == "${command:pickProcess}"),
        "an attach configuration that picks any process"
    );
}

#[test]
fn a_build_without_the_feature_refuses_console_and_says_how_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolProcess::start_error(dir.path(), &["--console", "127.0.0.1:6669"]);
    let miner = Command::new(binary("quarry-miner", "quarry-miner"))
        .args(["-o", "stratum+tcp://127.0.0.1:1", "-u", "a.b", "-t", "1"])
        .args(["--console", "127.0.0.1:6669"])
        .output()
        .expect("running quarry-miner");
    assert!(!miner.status.success(), "quarry-miner started: {miner:?}");
    let miner = String::from_utf8_lossy(&miner.stderr);
    for stderr in [pool.as_str(), &miner] {
        for needle in [
            "--console 127.0.0.1:6669",
            "--features console",
            "--cfg tokio_unstable",
        ] {
            assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
        }
    }
}

/// A loopback port nothing listens on (the kernel's pick, released at once).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The HTTP/2 client preface and an empty SETTINGS frame (RFC 9113 §3.4, §6.5).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Whether `addr` answers the HTTP/2 preface with a frame header of a SETTINGS
/// frame (type 4), as tonic's gRPC server does before anything else.
fn answers_http2(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if stream.write_all(H2_PREFACE).is_err() {
        return false;
    }
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).is_ok() && header[3] == 0x04
}

/// Runs `program args…` and waits until `console` answers HTTP/2, while the
/// program keeps running.
fn console_answers(program: &str, args: &[&str], console: SocketAddr) {
    let mut child = Command::new(program)
        .args(args)
        .args(["--console", &console.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    let (tx, lines) = mpsc::channel();
    forward(child.stderr.take().expect("piped stderr"), tx);
    let mut child = Killed(child);
    let answered = poll(WAIT, || {
        if let Some(status) = child.0.try_wait().unwrap() {
            let stderr: Vec<String> = lines.try_iter().collect();
            panic!("{program} exited ({status}):\n{}", stderr.join("\n"));
        }
        answers_http2(console).then_some(())
    });
    assert!(
        answered.is_some(),
        "{program}: no HTTP/2 on {console} within {WAIT:?}"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "{program} still runs"
    );
}

fn console_binary(variable: &str) -> Option<String> {
    let program = std::env::var(variable).ok().filter(|p| !p.is_empty());
    if program.is_none() {
        skip_unless_required(
            REQUIRE_CONSOLE,
            &format!("{variable} does not name a build with the `console` feature"),
        );
    }
    program
}

#[test]
fn pool_built_with_console_serves_tokio_console() {
    let Some(pool) = console_binary("QUARRY_CONSOLE_POOL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = [
        "run",
        "--stratum-tcp",
        "127.0.0.1:0",
        "--stratum-tls",
        "off",
        "--stratum-v2",
        "off",
    ];
    let args = [&args[..], &["--api", "off", "--data-dir", data_dir]].concat();
    console_answers(&pool, &args, console);
}

#[test]
fn miner_built_with_console_serves_tokio_console_while_it_retries() {
    let Some(miner) = console_binary("QUARRY_CONSOLE_MINER") else {
        return;
    };
    let closed = format!("stratum+tcp://127.0.0.1:{}", free_port());
    let args = [
        "-o",
        &closed,
        "-u",
        "a.b",
        "-t",
        "1",
        "--share-interval",
        "0",
    ];
    let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
    console_answers(&miner, &args, console);
}
