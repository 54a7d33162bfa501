//! How the commands reach the running daemon: the reading commands (`status`, `list`,
//! `show`) GET its read-only TCP endpoint with reqwest; the operator controls (`cancel`,
//! `pause`, `resume`, `backup`) speak HTTP/1.1 over the control socket with hyper.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// Why the control socket could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum SocketUnreachable {
    #[error("the daemon on {} did not answer within {} s (it may be overloaded or stuck)", .socket.display(), .timeout.as_secs())]
    Timeout {
        socket: PathBuf,
        timeout: std::time::Duration,
    },
    #[error("cannot reach the daemon on {} (is it running? are you in its group?)", .socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon on {} broke off the exchange", .socket.display())]
    Http {
        socket: PathBuf,
        #[source]
        source: hyper::Error,
    },
}

/// The operator controls' one way to the daemon: an HTTP/1.1 `method path` over the
/// control socket, answered (status and headers) within `timeout`; the body streams after.
pub async fn ask_socket(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    timeout: std::time::Duration,
) -> Result<hyper::Response<hyper::body::Incoming>, SocketUnreachable> {
    let request = control_request(method, path).map_err(|e| SocketUnreachable::Connect {
        socket: socket.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| SocketUnreachable::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        send(hyper_util::rt::TokioIo::new(stream), request)
            .await
            .map_err(|source| SocketUnreachable::Http {
                socket: socket.to_path_buf(),
                source,
            })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(SocketUnreachable::Timeout {
                socket: socket.to_path_buf(),
                timeout,
            })
        })
}

/// A control's request: `method path`, no body, for the host the socket stands for.
fn control_request(
    method: hyper::Method,
    path: &str,
) -> Result<hyper::Request<axum::body::Body>, hyper::http::Error> {
    hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .body(axum::body::Body::empty())
}

/// Sends `request` over `io`, one HTTP/1.1 connection, and returns the answer's head (the
/// connection is driven by a task of its own while the body streams).
async fn send<IO>(
    io: IO,
    request: hyper::Request<axum::body::Body>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    sender.send_request(request).await
}

/// The next data chunk of an answer's body; `None` at its end.
pub async fn next_chunk(
    body: &mut hyper::body::Incoming,
) -> Result<Option<hyper::body::Bytes>, hyper::Error> {
    use hyper::body::Body;
    loop {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// A whole (small) answer's body.
pub async fn read_body(body: &mut hyper::body::Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(body).await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
enum DaemonUnreachable {
    #[error("the daemon at {base} did not answer within {} s (it may be overloaded or stuck)", .timeout.as_secs())]
    Timeout {
        base: String,
        timeout: std::time::Duration,
    },
    #[error("cannot reach the daemon at {base} (is it running?)")]
    Connect {
        base: String,
        #[source]
        source: reqwest::Error,
    },
}

/// How the reading commands (`status`, `list`, `show`) reach the running daemon: a GET
/// to its read-only TCP endpoint.
async fn ask_daemon(
    base: &str,
    method: reqwest::Method,
    path: &str,
    timeout: std::time::Duration,
) -> Result<reqwest::Response, DaemonUnreachable> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|source| DaemonUnreachable::Connect {
            base: base.to_string(),
            source,
        })?;
    client
        .request(method, format!("{base}{path}"))
        .send()
        .await
        .map_err(|source| {
            if source.is_timeout() {
                DaemonUnreachable::Timeout {
                    base: base.to_string(),
                    timeout,
                }
            } else {
                DaemonUnreachable::Connect {
                    base: base.to_string(),
                    source,
                }
            }
        })
}

/// GETs a JSON document from the daemon; a 404's error text becomes the error.
pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
    base: &str,
    path: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<T> {
    let response = ask_daemon(base, reqwest::Method::GET, path, timeout).await?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<crate::admin::HistoryError>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        bail!("the daemon answered {status}: {message}");
    }
    response
        .json()
        .await
        .with_context(|| format!("the daemon's answer to {path} is not what this version reads"))
}
/// A NAME as one path segment (names are letters, digits, `.`, `-`, `_` and `~`, but a
/// mistyped one must not change the path).
pub(super) fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio_test::io::Builder;

    /// What a control writes on the socket, byte for byte (the mock refuses anything
    /// else), and an answer whose body comes in chunks read back whole.
    #[tokio::test]
    async fn a_control_is_one_http_request_and_its_chunked_answer_is_read_whole() {
        let path = format!("/manifests/{}/pause", path_segment("a b/../c"));
        assert_eq!(path, "/manifests/a%20b%2F..%2Fc/pause");
        let socket = Builder::new()
            .write(format!("POST {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
            .read(b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\n")
            .read(b"transfer-encoding: chunked\r\n\r\n")
            .read(b"E\r\n{\"manifest\":\"a\r\n")
            .read(b"7\r\n b\"...}\r\n0\r\n\r\n")
            .build();
        let request = control_request(hyper::Method::POST, &path).expect("a valid request");
        let mut response = send(TokioIo::new(socket), request)
            .await
            .expect("an answer");
        assert_eq!(response.status(), hyper::StatusCode::CONFLICT);
        let body = read_body(response.body_mut())
            .await
            .expect("the whole body");
        assert_eq!(body, b"{\"manifest\":\"a b\"...}");
    }

    /// An answer cut short (the daemon stopped mid-body) is an error, never a short body.
    #[tokio::test]
    async fn an_answer_cut_short_is_an_error() {
        let socket = Builder::new()
            .write(b"POST /backup HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .read(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            .build();
        let request = control_request(hyper::Method::POST, "/backup").expect("a valid request");
        let mut response = send(TokioIo::new(socket), request)
            .await
            .expect("an answer's head");
        assert_eq!(response.status(), hyper::StatusCode::OK);
        assert!(read_body(response.body_mut()).await.is_err());
    }
}
