//! A small read-only HTTP/1.1 server for the metrics and the status page: `GET` (and `HEAD`)
//! only, one request per connection, bounded like the control socket. A request head is read
//! at most [`MAX_REQUEST_BYTES`] long and must arrive within [`CLIENT_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] are served at once (more wait in the listen backlog), and accept errors
//! back off instead of spinning. Answers are computed on a blocking thread by the handler,
//! which sees only the path.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn ok(content_type: &'static str, body: String) -> Response {
        Response {
            status: 200,
            content_type,
            body,
        }
    }
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
        }
    }
}

pub type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// Serves `listener` until the task is aborted.
pub fn serve(listener: tokio::net::TcpListener, handler: Handler) -> tokio::task::JoinHandle<()> {
    crate::listener::serve_connections(
        "metrics listener",
        listener,
        MAX_CONNECTIONS,
        move |stream| {
            let handler = handler.clone();
            async move {
                let _ = serve_client(stream, handler).await;
            }
        },
    )
}

async fn serve_client(mut stream: tokio::net::TcpStream, handler: Handler) -> std::io::Result<()> {
    let head = tokio::time::timeout(CLIENT_TIMEOUT, read_head(&mut stream)).await;
    let (response, head_only) = match head {
        Err(_) => (Response::text(408, "request timeout"), false),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            (Response::text(431, "request header too large"), false)
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(head)) => match parse_request_line(&head) {
            Err(r) => (r, false),
            Ok((method, path)) => {
                let path = path.to_string();
                let response = match tokio::task::spawn_blocking(move || handler(&path)).await {
                    Ok(r) => r,
                    Err(_) => Response::text(500, "internal error"),
                };
                (response, method == "HEAD")
            }
        },
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nContent-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(response.body.as_bytes());
    }
    tokio::time::timeout(CLIENT_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Reads up to the end of the request head (`\r\n\r\n`); a head longer than
/// [`MAX_REQUEST_BYTES`] is `InvalidData`. A body, if any, is never read.
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// The method and the path (without its query) of a request head, or the error response.
pub fn parse_request_line(head: &[u8]) -> Result<(&str, &str), Response> {
    let bad = || Response::text(400, "bad request");
    let head = std::str::from_utf8(head).map_err(|_| bad())?;
    let line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::text(505, "HTTP version not supported"));
    }
    if method != "GET" && method != "HEAD" {
        return Err(Response::text(
            405,
            "only GET and HEAD: this page changes nothing",
        ));
    }
    if !target.starts_with('/') {
        return Err(bad());
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok((method, path))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"POST / HTTP/1.1").unwrap_err().status,
            405
        );
        assert_eq!(parse_request_line(b"GET / HTTP/2").unwrap_err().status, 505);
        assert_eq!(parse_request_line(b"GET /").unwrap_err().status, 400);
        assert_eq!(
            parse_request_line(b"GET http://x/ HTTP/1.1")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(parse_request_line(b"\xff\xfe").unwrap_err().status, 400);
    }
}
