//! Per-tenant quotas, checked before every write that adds artifacts. The check reads the
//! store's counters (no scan); a write that starts under the quota may pass it by at most its
//! own size, which `max_body_bytes` bounds.
//!
//! And the header timeout's answer: hyper's header read timeout closes a connection without a
//! word, so each connection keeps a second handle on its socket ([`watch_headers`]) and, when
//! the timeout ends a connection in the middle of a request's headers, writes the 408 itself.

use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use axum::http::StatusCode;
use cairn::Store;

use crate::error::{ApiError, ApiResult};
use crate::extract::blocking;
use crate::state::AppState;

/// Refuses a write when the tenant already holds `quota_bytes` stored bytes or
/// `quota_artifacts` artifacts (`quota_exceeded`, 422).
pub async fn check_quota(st: &AppState, store: &Arc<Store>) -> ApiResult<()> {
    let l = &st.config().limits;
    if l.quota_bytes == 0 && l.quota_artifacts == 0 {
        return Ok(());
    }
    let (qb, qa) = (l.quota_bytes, l.quota_artifacts);
    let store = Arc::clone(store);
    let stats = blocking(move || store.stats()).await?;
    if qb > 0 && stats.stored_bytes >= qb {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "quota_exceeded",
            format!(
                "the tenant stores {} bytes, its quota is {qb} (quota_bytes); delete artifacts and run gc, or ask for a larger quota",
                stats.stored_bytes
            ),
        ));
    }
    if qa > 0 && stats.artifacts >= qa {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "quota_exceeded",
            format!(
                "the tenant holds {} artifacts, its quota is {qa} (quota_artifacts); delete some or ask for a larger quota",
                stats.artifacts
            ),
        ));
    }
    Ok(())
}

/// A connection's socket as hyper sees it: it remembers whether bytes of a request arrived that
/// no response has followed yet (reading sets the mark, writing clears it).
pub struct WatchedStream {
    inner: TcpStream,
    unanswered: Arc<AtomicBool>,
}

/// The second handle on a connection's socket, used only to answer 408 after hyper's header
/// read timeout ended the connection.
pub struct HeaderTimeoutAnswer {
    socket: std::net::TcpStream,
    unanswered: Arc<AtomicBool>,
}

/// Splits an accepted connection into the stream hyper serves and the handle that answers its
/// header timeout. Fails only if the socket cannot be duplicated (out of file descriptors).
pub fn watch_headers(stream: TcpStream) -> std::io::Result<(WatchedStream, HeaderTimeoutAnswer)> {
    let std_stream = stream.into_std()?;
    let socket = std_stream.try_clone()?;
    let inner = TcpStream::from_std(std_stream)?;
    let unanswered = Arc::new(AtomicBool::new(false));
    Ok((
        WatchedStream {
            inner,
            unanswered: Arc::clone(&unanswered),
        },
        HeaderTimeoutAnswer { socket, unanswered },
    ))
}

impl HeaderTimeoutAnswer {
    /// Called when hyper ended the connection on its header read timeout: if part of a request
    /// had arrived, writes `408 request_timeout` (JSON, `Connection: close`) and closes. An idle
    /// keep-alive connection is closed without a word, as before (no request, no response).
    /// Returns whether the 408 was written.
    pub fn answer(mut self, timeout: Duration) -> bool {
        if !self.unanswered.load(Ordering::SeqCst) {
            return false;
        }
        let body = serde_json::json!({"error": {
            "code": "request_timeout",
            "message": format!(
                "the request line and headers took longer than {} s to arrive (header_timeout_secs); send them at once",
                timeout.as_secs()
            ),
        }})
        .to_string();
        let msg = format!(
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        // The socket is non-blocking; a fresh connection's send buffer takes a few hundred
        // bytes at once, and if it does not the client was not reading anyway.
        let written = self.socket.write_all(msg.as_bytes()).is_ok();
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
        written
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.unanswered.store(true, Ordering::SeqCst);
        }
        r
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.unanswered.store(false, Ordering::SeqCst);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.unanswered.store(false, Ordering::SeqCst);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
