//! The learner's TCP connections: at most `limits.max_connections` open at once and
//! `limits.max_connections_per_address` from one IP address, each with TCP keepalive
//! so that a peer that vanished without a FIN is found and its connection freed.
//!
//! A connection that has sent nothing yet (no HTTP/2 preface, no TLS hello) is *silent*:
//! it is closed after `limits.handshake_timeout_s`, and when every slot is taken a new
//! connection takes the slot of the oldest silent one. So silent sockets, which cost an
//! attacker nothing and need no token, cannot lock actors (or the kubelet's probes) out:
//! only connections that speak hold their slots.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics as m;

/// What the accept loop enforces.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max: usize,
    pub per_address: usize,
    /// How long a connection may stay silent.
    pub handshake: Duration,
    /// TCP keepalive probes.
    pub keepalive: Duration,
}

/// How a connection is told to close from outside its task.
#[derive(Debug, Default)]
struct Gate {
    /// The peer has sent bytes.
    spoke: AtomicBool,
    /// A newer connection took this silent one's slot.
    evicted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

/// The open connections, by the number the accept loop gave them.
#[derive(Debug, Default)]
struct Open {
    conns: HashMap<u64, (IpAddr, Instant, Arc<Gate>)>,
    per_address: HashMap<IpAddr, usize>,
    next: u64,
}

impl Open {
    fn remove(&mut self, id: u64) {
        if let Some((ip, _, _)) = self.conns.remove(&id) {
            if let Some(n) = self.per_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
        metrics::gauge!(m::CONNECTIONS).set(self.conns.len() as f64);
    }

    /// The oldest connection that has not spoken (from `ip` only, when given), if any.
    fn oldest_silent(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, (from, _, g))| {
                !g.spoke.load(Ordering::SeqCst) && ip.is_none_or(|ip| *from == ip)
            })
            .min_by_key(|(_, (_, opened, _))| *opened)
            .map(|(id, _)| *id)
    }

    /// Closes the oldest silent connection (from `ip`, when given) to make room; false
    /// when there is none.
    fn evict_silent(&mut self, ip: Option<IpAddr>) -> bool {
        let Some(victim) = self.oldest_silent(ip) else {
            return false;
        };
        if let Some((_, _, gate)) = self.conns.get(&victim) {
            gate.evict();
        }
        self.remove(victim);
        crate::server::refused("evicted_silent");
        true
    }
}

type Registry = Arc<Mutex<Open>>;

fn lock(r: &Registry) -> std::sync::MutexGuard<'_, Open> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// An accepted connection holding one of the limited slots until it closes.
#[derive(Debug)]
pub struct Conn {
    inner: TcpStream,
    id: u64,
    gate: Arc<Gate>,
    /// Until the peer speaks: when it must have.
    deadline: Option<Pin<Box<Sleep>>>,
    open: Registry,
}

impl Drop for Conn {
    fn drop(&mut self) {
        lock(&self.open).remove(self.id);
    }
}

impl Conn {
    /// Refuses to go on with a connection that was evicted or stayed silent too long.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.gate.evicted.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed while silent: a new connection needed its slot",
            ));
        }
        if let Some(deadline) = self.deadline.as_mut() {
            *self.gate.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if deadline.as_mut().poll(cx).is_ready() {
                crate::server::refused("handshake_timeout");
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no handshake within limits.handshake_timeout_s",
                ));
            }
        }
        Ok(())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && this.deadline.is_some()
        {
            this.gate.spoke.store(true, Ordering::SeqCst);
            this.deadline = None;
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
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

/// Whether a connection from `ip` may open, making room by closing the oldest silent
/// connection (of that address, for its share) when the slots are taken; the refusal's
/// reason otherwise.
fn admit(open: &mut Open, ip: IpAddr, l: &ConnectionLimits) -> Result<(), &'static str> {
    if open.per_address.get(&ip).copied().unwrap_or(0) >= l.per_address
        && !open.evict_silent(Some(ip))
    {
        return Err("address_limit");
    }
    if open.conns.len() >= l.max && !open.evict_silent(None) {
        return Err("connection_limit");
    }
    Ok(())
}

/// The connections `listener` accepts, within `limits`.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> ReceiverStream<io::Result<Conn>> {
    let open: Registry = Arc::default();
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
            let gate = Arc::new(Gate::default());
            let id = {
                let mut o = lock(&open);
                if let Err(reason) = admit(&mut o, peer.ip(), &limits) {
                    drop(o);
                    crate::server::refused(reason);
                    tracing::warn!(%peer, reason, "refused a connection (limits.max_connections, limits.max_connections_per_address)");
                    continue;
                }
                let id = o.next;
                o.next += 1;
                o.conns
                    .insert(id, (peer.ip(), Instant::now(), gate.clone()));
                *o.per_address.entry(peer.ip()).or_insert(0) += 1;
                metrics::gauge!(m::CONNECTIONS).set(o.conns.len() as f64);
                id
            };
            let sock2 = socket2::SockRef::from(&sock);
            let ka = socket2::TcpKeepalive::new()
                .with_time(limits.keepalive)
                .with_interval(limits.keepalive);
            if let Err(e) = sock2.set_tcp_keepalive(&ka) {
                tracing::debug!(%peer, "setting TCP keepalive failed: {e}");
            }
            let _ = sock.set_nodelay(true);
            let conn = Conn {
                inner: sock,
                id,
                gate,
                deadline: Some(Box::pin(tokio::time::sleep(limits.handshake))),
                open: open.clone(),
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_address: usize) -> ConnectionLimits {
        ConnectionLimits {
            max,
            per_address,
            handshake: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
        }
    }

    fn add(open: &mut Open, ip: &str, spoke: bool) -> (u64, Arc<Gate>) {
        let gate = Arc::new(Gate::default());
        gate.spoke.store(spoke, Ordering::SeqCst);
        let ip: IpAddr = ip.parse().unwrap();
        let id = open.next;
        open.next += 1;
        open.conns.insert(id, (ip, Instant::now(), gate.clone()));
        *open.per_address.entry(ip).or_insert(0) += 1;
        (id, gate)
    }

    #[test]
    fn a_full_house_evicts_its_oldest_silent_connection_and_never_one_that_spoke() {
        let mut o = Open::default();
        let l = limits(3, 10);
        let (_, talker) = add(&mut o, "10.0.0.1", true);
        let (_, first_silent) = add(&mut o, "10.0.0.2", false);
        std::thread::sleep(Duration::from_millis(2));
        let (_, second_silent) = add(&mut o, "10.0.0.2", false);
        assert_eq!(admit(&mut o, "10.0.0.3".parse().unwrap(), &l), Ok(()));
        assert!(first_silent.evicted.load(Ordering::SeqCst));
        assert!(!second_silent.evicted.load(Ordering::SeqCst));
        assert_eq!(o.conns.len(), 2);
        assert_eq!(o.per_address[&"10.0.0.2".parse::<IpAddr>().unwrap()], 1);
        // Once only speakers are left, a newcomer is refused.
        second_silent.spoke.store(true, Ordering::SeqCst);
        add(&mut o, "10.0.0.3", true);
        assert_eq!(
            admit(&mut o, "10.0.0.4".parse().unwrap(), &l),
            Err("connection_limit")
        );
        assert!(!talker.evicted.load(Ordering::SeqCst));
    }

    #[test]
    fn one_address_has_a_share_of_the_slots() {
        let mut o = Open::default();
        let l = limits(10, 2);
        let (_, other) = add(&mut o, "10.0.0.2", false);
        let (_, silent) = add(&mut o, "10.0.0.1", false);
        add(&mut o, "10.0.0.1", true);
        // The address's own silent connection makes room, not another's.
        assert_eq!(admit(&mut o, "10.0.0.1".parse().unwrap(), &l), Ok(()));
        assert!(silent.evicted.load(Ordering::SeqCst));
        assert!(!other.evicted.load(Ordering::SeqCst));
        add(&mut o, "10.0.0.1", true);
        assert_eq!(
            admit(&mut o, "10.0.0.1".parse().unwrap(), &l),
            Err("address_limit")
        );
        assert_eq!(admit(&mut o, "10.0.0.3".parse().unwrap(), &l), Ok(()));
    }
}
