//! The learner's TCP connections: at most `limits.max_connections` open at once (one
//! beyond is closed as soon as it is accepted, and counted), each with TCP keepalive so
//! that a peer that vanished without a FIN is found and its connection freed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics as m;

/// An accepted connection holding one of the limited slots until it closes.
#[derive(Debug)]
pub struct Conn {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    open: Arc<Semaphore>,
    max: usize,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // This connection's slot is released right after this.
        let open = self.max - self.open.available_permits() - 1;
        metrics::gauge!(m::CONNECTIONS).set(open as f64);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

/// The connections `listener` accepts, at most `max` open at once, with TCP keepalive
/// probes every `keepalive`.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    keepalive: Duration,
) -> ReceiverStream<io::Result<Conn>> {
    let open = Arc::new(Semaphore::new(max));
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = open.clone().try_acquire_owned() else {
                crate::server::refused("connection_limit");
                tracing::warn!(%peer, max, "refused a connection: limits.max_connections reached");
                continue;
            };
            let sock2 = socket2::SockRef::from(&sock);
            let ka = socket2::TcpKeepalive::new()
                .with_time(keepalive)
                .with_interval(keepalive);
            if let Err(e) = sock2.set_tcp_keepalive(&ka) {
                tracing::debug!(%peer, "setting TCP keepalive failed: {e}");
            }
            let _ = sock.set_nodelay(true);
            metrics::gauge!(m::CONNECTIONS).set((max - open.available_permits()) as f64);
            let conn = Conn {
                inner: sock,
                _slot: slot,
                open: open.clone(),
                max,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
