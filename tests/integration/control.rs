//! Control is for the daemon's group alone (SPEC sections 3 `admin.socket` and 8): the
//! TCP endpoint is read-only and answers only its own `Host`; the operator controls live
//! on the control socket, mode 0660.

use std::io::{Read, Write};
use std::time::Duration;

use crate::helpers::*;
use crate::history::held_after_its_first_chunk;

/// One raw HTTP/1.1 exchange on `admin` with the given method and Host: (status, text).
pub(crate) fn raw(admin: &str, method: &str, path: &str, host: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(admin).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_endpoint_is_read_only_and_answers_only_its_own_host() {
    let (mut app, admin, socket) = held_after_its_first_chunk().await;

    // A POST over TCP changes nothing: 405, the manifest runs on.
    for path in ["/manifests/held/cancel", "/manifests/held/pause", "/backup"] {
        let (status, text) = raw(&admin, "POST", path, &admin);
        assert_eq!(status, 405, "{text}");
        assert!(
            text.to_ascii_lowercase().contains("allow: get, head"),
            "{text}"
        );
    }
    let (status, text) = raw(&admin, "DELETE", "/manifests/held", "localhost");
    assert_eq!(status, 405, "{text}");
    let (status, text) = raw(&admin, "GET", "/manifests/held", &admin);
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.contains("\"state\":\"canceled\""),
        "not canceled: {text}"
    );
    assert!(!text.contains("\"state\":\"paused\""), "not paused: {text}");

    // A foreign Host gets 421 and no data; loopback names are fine.
    for path in [
        "/status",
        "/manifests",
        "/manifests/held",
        "/metrics",
        "/healthz",
    ] {
        let (status, text) = raw(&admin, "GET", path, "evil.example");
        assert_eq!(status, 421, "{text}");
        assert!(!text.contains("held"), "no data: {text}");
    }
    let (status, _) = raw(&admin, "GET", "/status", "evil.example:80");
    assert_eq!(status, 421);
    let port = admin.rsplit(':').next().expect("a port");
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let (status, text) = raw(&admin, "GET", "/status", &host);
        assert_eq!(status, 200, "{host}: {text}");
        assert!(text.contains("held"), "{text}");
    }
    let (status, _) = raw(&admin, "HEAD", "/healthz", &admin);
    assert_eq!(status, 200);

    // The socket is for the daemon's user and group alone, and carries the controls.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&socket).expect("the control socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let (status, answer) = socket_post(&socket, "/manifests/held/cancel").await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("canceled"),
        "{answer}"
    );
    app.wait_result("held", WAIT).await;
    app.stop_daemon().await;
    assert!(!socket.exists(), "a stopped daemon leaves no socket behind");
}

#[test]
fn a_control_socket_that_cannot_be_bound_stops_start_up_with_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Its folder would have to be made inside a plain file.
    std::fs::write(dir.path().join("plain"), "").expect("write");
    let socket = dir.path().join("plain/control.sock");
    let config = write_config(
        dir.path(),
        &TestConfig::new(dir.path(), "http://127.0.0.1:9").set(
            "admin",
            "socket",
            socket.display().to_string(),
        ),
    );
    let output = command(["run", "--config"])
        .arg(&config)
        .env("TENTED_API_KEY", "k")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("admin.socket"), "{stderr}");
}
