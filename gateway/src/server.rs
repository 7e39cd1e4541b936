//! Accepting connections: a connection limit, the TLS handshake under a
//! time limit, the caller's identity from its certificate, then HTTP/1.1
//! with a header-read timeout (slowloris) and an idle timeout, until the
//! client leaves, goes idle, or its session is closed from outside.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::body::{BoxError, GatewayBody};
use crate::framing::{Heads, Watcher};
use crate::pipeline::Gateway;
use crate::sessions::{self, Sessions};
use crate::tls::{Caller, TlsState};

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub handshake: Duration,
    pub header_read: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(300),
        }
    }
}

pub struct Server {
    pub gateway: Arc<Gateway>,
    pub tls: Arc<TlsState>,
    pub sessions: Sessions,
    pub timeouts: Timeouts,
    pub max_connections: usize,
    /// One per open connection, shared by every serving thread.
    pub slots: Arc<Semaphore>,
}

impl Server {
    pub fn new(
        gateway: Arc<Gateway>,
        tls: Arc<TlsState>,
        sessions: Sessions,
        timeouts: Timeouts,
        max_connections: usize,
    ) -> Server {
        Server {
            gateway,
            tls,
            sessions,
            timeouts,
            max_connections,
            slots: Arc::new(Semaphore::new(max_connections)),
        }
    }

    /// Serves on one thread per listener until `shutdown` resolves, then
    /// waits for them to stop (their open connections are dropped).
    ///
    /// Each thread runs its own single-threaded runtime with its own accept
    /// loop, as nginx runs one worker per core: a connection's handshake,
    /// calls, engine connections and (when the log is quiet) audit commit
    /// all stay on the thread that accepted it, so a call crosses no thread
    /// boundary of the gateway's own. Measured with the harness's `proxy`
    /// scenario: a work-stealing runtime spent most of the added latency
    /// handing a call between its threads. The listeners share one port
    /// (`SO_REUSEPORT`, see [`bind_listeners`]) so the kernel spreads
    /// connections over the threads; with one shared socket, the thread
    /// that won a burst of connections kept them all.
    pub async fn serve_on_threads(
        self: Arc<Self>,
        listeners: Vec<std::net::TcpListener>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut serving = Vec::with_capacity(listeners.len());
        for (n, listener) in listeners.into_iter().enumerate() {
            listener.set_nonblocking(true)?;
            let server = self.clone();
            let mut stopped = stopped.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let thread = std::thread::Builder::new()
                .name(format!("moat-gateway-{n}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let listener = match TcpListener::from_std(listener) {
                            Ok(listener) => listener,
                            Err(err) => {
                                tracing::error!("serving thread {n}: {err}");
                                return;
                            }
                        };
                        let stop = async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        };
                        server.serve(listener, stop).await;
                    })
                })?;
            serving.push(thread);
        }
        shutdown.await;
        let _ = stop.send(true);
        tokio::task::spawn_blocking(move || {
            for thread in serving {
                if thread.join().is_err() {
                    tracing::error!("a serving thread panicked");
                }
            }
        })
        .await
        .map_err(std::io::Error::other)
    }

    /// Accepts on this thread's runtime until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: wait, go on.
                        tracing::warn!("accept: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => return,
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!("refusing {peer}: {} connections open", self.max_connections);
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move { server.connection(tcp, peer, slot).await });
        }
    }

    async fn connection(&self, tcp: TcpStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(self.tls.config());
        let stream = match tokio::time::timeout(self.timeouts.handshake, acceptor.accept(tcp)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::info!("TLS handshake with {peer} failed: {err}");
                return;
            }
            Err(_) => {
                tracing::info!("TLS handshake with {peer} timed out");
                return;
            }
        };
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        let caller = match certificate.map(|cert| Caller::from_certificate(cert)) {
            Some(Ok(caller)) => Some(caller),
            Some(Err(err)) => {
                tracing::info!("refusing {peer}: {err}");
                return;
            }
            // Only possible with bearer tokens configured: each request
            // then names its caller.
            None if self.gateway.bearer_tokens() => None,
            None => {
                tracing::info!("refusing {peer}: no client certificate");
                return;
            }
        };
        // A CRL swapped in during the handshake: the verifier used the old one.
        if caller
            .as_ref()
            .and_then(|c| c.serial.as_deref())
            .is_some_and(|s| self.tls.is_revoked(s))
        {
            return;
        }
        let registration = Arc::new(self.sessions.register(caller, peer.to_string()));
        let activity = Arc::new(Activity::new());
        let heads = Heads::default();
        let io = Watched {
            inner: stream,
            activity: activity.clone(),
            framing: Watcher::new(heads.clone()),
        };
        let gateway = self.gateway.clone();
        let conn_registration = registration.clone();
        let service_activity = activity.clone();
        let service = hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            let registration = conn_registration.clone();
            let guard = InFlight::new(service_activity.clone());
            let framing = heads.next();
            async move {
                let response = gateway.call(registration, request, framing).await;
                let (parts, body) = response.into_parts();
                let body: GatewayBody = http_body_util::BodyExt::boxed(Guarded {
                    inner: body,
                    _guard: guard,
                });
                Ok::<_, Infallible>(hyper::Response::from_parts(parts, body))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeouts.header_read)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let idle = idle_watch(activity, self.timeouts.idle);
        tokio::select! {
            result = connection => {
                if let Err(err) = result {
                    tracing::debug!("connection from {peer}: {err}");
                }
            }
            _ = sessions::closed(registration.closed.clone()) => {
                let user = registration.session.caller.as_ref().map_or("?", |c| c.user.as_str());
                tracing::info!("closed the session of {user} from {peer}");
            }
            _ = idle => {}
        }
    }
}

/// `count` listening sockets on one address, each with `SO_REUSEPORT`, so
/// each serving thread accepts on its own and the kernel spreads new
/// connections over them. Port 0 gets one port for all.
///
/// A port in use stays an error, as with a plain bind: the address is
/// first bound without `SO_REUSEPORT` (which also picks the port for 0),
/// and released just before the group binds it, so a second gateway
/// started on the same port fails instead of sharing its connections.
pub fn bind_listeners(
    address: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let socket = |address: SocketAddr| {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        Ok::<_, std::io::Error>(socket)
    };
    let probe = socket(address)?;
    probe.bind(address)?;
    let address = probe.local_addr()?;
    drop(probe);
    let mut listeners = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        let socket = socket(address)?;
        socket.set_reuseport(true)?;
        socket.bind(address)?;
        listeners.push(socket.listen(1024)?.into_std()?);
    }
    Ok(listeners)
}

/// When a connection last moved a byte, and how many calls it has open.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Resolves once the connection has had no call open and moved no byte
/// for `limit`.
async fn idle_watch(activity: Arc<Activity>, limit: Duration) {
    let tick = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        if activity.in_flight.load(Ordering::Relaxed) == 0 && activity.idle_for() >= limit {
            return;
        }
    }
}

thread_local! {
    /// Calls in flight on this thread, over all its connections.
    static CALLS_HERE: Arc<AtomicUsize> = Arc::default();
}

/// Whether this thread may wait on the disk for an audit commit: only
/// while it serves no call but the one asking (the others would wait too).
pub fn may_wait_here() -> bool {
    CALLS_HERE.with(|calls| calls.load(Ordering::Relaxed)) <= 1
}

/// Counts a call as open, on its connection and on its thread, from its
/// request until its response body ends.
struct InFlight {
    activity: Arc<Activity>,
    thread: Arc<AtomicUsize>,
}

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        let thread = CALLS_HERE.with(Arc::clone);
        thread.fetch_add(1, Ordering::Relaxed);
        InFlight { activity, thread }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.thread.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Guarded {
    inner: GatewayBody,
    _guard: InFlight,
}

impl Body for Guarded {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TLS stream, noting activity on every byte moved and following the
/// framing of what the client sends.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    framing: Watcher,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
            let this = &mut *self;
            this.framing.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_share_one_port_and_a_taken_port_stays_taken() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert!(port != 0);
        assert!(
            listeners
                .iter()
                .all(|l| l.local_addr().unwrap().port() == port)
        );
        let again = bind_listeners(SocketAddr::from(([127, 0, 0, 1], port)), 2);
        assert_eq!(
            again.unwrap_err().kind(),
            std::io::ErrorKind::AddrInUse,
            "a second gateway could share the port"
        );
    }
}
