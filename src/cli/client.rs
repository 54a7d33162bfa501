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
    let http = |source| SocketUnreachable::Http {
        socket: socket.to_path_buf(),
        source,
    };
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| SocketUnreachable::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(http)?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .body(axum::body::Body::empty())
            .map_err(|e| SocketUnreachable::Connect {
                socket: socket.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
        sender.send_request(request).await.map_err(http)
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
