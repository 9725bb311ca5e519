//! The admin endpoint over real HTTP on loopback: what it refuses, and when.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// An endpoint with token `secret` that takes uploads of up to 1 KiB and
/// gives the job `timeout` to apply a request, and the requests it passes on.
fn start(
    config: AdminConfig,
    timeout: Duration,
) -> (tokio::runtime::Runtime, SocketAddr, mpsc::Receiver<RulesRequest>) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (requests_tx, requests) = mpsc::channel();
    let config = AdminConfig { request_timeout: timeout, ..config };
    let addr = runtime.block_on(serve(&config, "secret", 1024, requests_tx)).unwrap();
    (runtime, addr, requests)
}

/// [`start`] on loopback.
fn start_here(
    timeout: Duration,
) -> (tokio::runtime::Runtime, SocketAddr, mpsc::Receiver<RulesRequest>) {
    start(AdminConfig::default(), timeout)
}

/// Answers every request as the job would, on a thread of its own: deploys
/// with the size of what was uploaded.
fn answer_requests(requests: mpsc::Receiver<RulesRequest>) {
    std::thread::spawn(move || {
        for request in requests {
            let answer = match request.action {
                RulesAction::Deploy(Candidate::Uploaded { name, bytes }) => {
                    Ok(serde_json::json!({ "name": name, "size": bytes.len() }))
                }
                RulesAction::Deploy(Candidate::File(_)) => Err("no files".into()),
                RulesAction::Status => Ok(serde_json::json!({ "active": "rules@1" })),
                RulesAction::Rollback => Err(Refusal::TimedOut("not applied: too late".into())),
            };
            let _ = request.reply.send(answer);
        }
    });
}

/// Sends `head` and `body` (no more, whatever the head declares) and returns
/// the status and body of the answer, or why none came.
fn exchange(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
    wait: Duration,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    stream.write_all(format!("{head}\r\n").as_bytes()).map_err(|e| e.to_string())?;
    stream.write_all(body).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).map_err(|e| format!("no answer in {wait:?}: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(text.clone())?;
    Ok((status, text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned())))
}

#[test]
fn a_wrong_token_is_refused_before_the_body_is_read() {
    let (_runtime, addr, _requests) = start_here(Duration::from_secs(60));
    let head = "POST /plugin/deploy HTTP/1.1\r\nHost: job\r\nAuthorization: Bearer wrong\r\n\
                Content-Type: application/wasm\r\nContent-Length: 10737418240\r\n";
    let started = Instant::now();
    let (status, body) = exchange(addr, head, b"{\"path\":", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_job_that_does_not_answer_in_time_gets_the_client_a_sentence() {
    // The job never serves its requests.
    let (_runtime, addr, _requests) = start_here(Duration::from_secs(1));
    let head = "GET /plugin/status HTTP/1.1\r\nHost: job\r\nAuthorization: Bearer secret\r\n";
    let (status, body) = exchange(addr, head, b"", Duration::from_secs(10)).unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("did not answer"), "{body}");
}

const UPLOAD: &str =
    "POST /plugin/deploy HTTP/1.1\r\nHost: job\r\nAuthorization: Bearer secret\r\n\
                      Content-Type: application/wasm\r\n";

#[test]
fn a_deploy_uploads_the_bytes_within_the_limit() {
    let (_runtime, addr, requests) = start_here(Duration::from_secs(60));
    answer_requests(requests);
    let head = format!("{UPLOAD}{COMPONENT_NAME_HEADER}: rules.wasm\r\nContent-Length: 1024\r\n");
    let (status, body) = exchange(addr, &head, &[7; 1024], Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""name":"rules.wasm""#) && body.contains(r#""size":1024"#), "{body}");
}

#[test]
fn an_upload_over_the_limit_is_refused_with_the_flag_to_raise_it() {
    let (_runtime, addr, requests) = start_here(Duration::from_secs(60));
    answer_requests(requests);
    // Declared: refused before a byte of the body is read.
    let head = format!("{UPLOAD}Content-Length: 10737418240\r\n");
    let (status, body) = exchange(addr, &head, b"\0asm", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("10737418240 bytes, over the limit of 1024 bytes"), "{body}");
    assert!(body.contains("--max-component-mib"), "{body}");
    // Not declared: refused once the limit is passed.
    let head = format!("{UPLOAD}Transfer-Encoding: chunked\r\n");
    let chunked = format!("{:x}\r\n{}\r\n", 2000, "x".repeat(2000));
    let (status, body) = exchange(addr, &head, chunked.as_bytes(), Duration::from_secs(5)).unwrap();
    assert_eq!(status, 413, "{body}");
}

#[test]
fn a_token_of_any_other_length_or_content_is_refused() {
    let (_runtime, addr, requests) = start_here(Duration::from_secs(60));
    answer_requests(requests);
    for auth in [
        "",
        "Authorization: Bearer \r\n",
        "Authorization: Bearer secreT\r\n",
        "Authorization: Bearer secret2\r\n",
        "Authorization: secret\r\n",
    ] {
        let head = format!("GET /plugin/status HTTP/1.1\r\nHost: job\r\n{auth}");
        let (status, _) = exchange(addr, &head, b"", Duration::from_secs(5)).unwrap();
        assert_eq!(status, 401, "{auth:?}");
    }
    let head = "GET /plugin/status HTTP/1.1\r\nHost: job\r\nAuthorization: Bearer secret\r\n";
    assert_eq!(exchange(addr, head, b"", Duration::from_secs(5)).unwrap().0, 200);
}

#[test]
fn a_request_the_job_could_not_apply_in_time_gets_a_gateway_timeout() {
    let (_runtime, addr, requests) = start_here(Duration::from_secs(60));
    answer_requests(requests);
    let head = "POST /plugin/rollback HTTP/1.1\r\nHost: job\r\nAuthorization: Bearer secret\r\n\
                Content-Length: 0\r\n";
    let (status, body) = exchange(addr, head, b"", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("not applied"), "{body}");
}

#[test]
fn an_address_beyond_loopback_needs_the_operators_word() {
    let anywhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let refused = check_addr(&AdminConfig { addr: anywhere, ..AdminConfig::default() });
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("0.0.0.0:0 is not a loopback address"), "{error}");
    assert!(error.contains("--admin-allow-remote"), "{error}");
    let allowed = AdminConfig { addr: anywhere, allow_remote: true, ..AdminConfig::default() };
    assert!(check_addr(&allowed).unwrap());
    let (_runtime, addr, _requests) = start(allowed, Duration::from_secs(60));
    assert!(addr.ip().is_unspecified());
    let ipv6 = AdminConfig { addr: "[::1]:0".parse().unwrap(), ..AdminConfig::default() };
    assert!(!check_addr(&ipv6).unwrap());
}

#[test]
fn the_client_uploads_the_file_and_refuses_what_is_not_one() {
    let (_runtime, addr, requests) = start_here(Duration::from_secs(60));
    answer_requests(requests);
    let dir = tempfile::tempdir().unwrap();
    publish_credentials(dir.path(), addr, "secret").unwrap();
    let file = dir.path().join("my rules.wasm");
    std::fs::write(&file, [1u8; 100]).unwrap();
    let call = AdminCall::Deploy(file);
    let answer = ask_job(dir.path(), None, &call, Duration::from_secs(10)).unwrap();
    assert_eq!(answer, serde_json::json!({ "name": "my rules.wasm", "size": 100 }));
    // Over the job's limit: the job's sentence, before the body was sent.
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, vec![1u8; 4096]).unwrap();
    let error = ask_job(dir.path(), None, &AdminCall::Deploy(big), Duration::from_secs(10));
    let error = error.unwrap_err().to_string();
    assert!(error.contains("4096 bytes, over the limit of 1024 bytes"), "{error}");
    let error =
        ask_job(dir.path(), None, &AdminCall::Deploy("/dev/zero".into()), Duration::from_secs(10));
    let error = error.unwrap_err().to_string();
    assert!(error.contains("cannot read plugin /dev/zero: not a regular file"), "{error}");
    let error = ask_job(dir.path(), Some("wrong"), &AdminCall::Status, Duration::from_secs(10));
    assert!(error.unwrap_err().to_string().contains("missing or wrong token"));
}
