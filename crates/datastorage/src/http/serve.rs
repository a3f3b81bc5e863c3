//! The listeners: one accept loop per listener over hyper, with what `axum::serve` lacks:
//! - a header read timeout: a client that trickles its headers (slowloris) is cut off after
//!   `server.headerReadTimeout`;
//! - a bound on open connections (`server.maxConnections`): past it, new connections wait in
//!   the kernel's backlog instead of taking memory and file descriptors;
//! - a [`Gate`] that answers the probes while the service is still starting (waiting for the
//!   database), and the whole router once it is ready;
//! - TLS ([`Tls`]) on the API listener when `server.tls` is set, with the handshake bounded by
//!   the header read timeout and the client certificate's identity in every request;
//! - the peer address in every request's extensions (`ConnectInfo`);
//! - graceful shutdown: stop accepting, let in-flight requests finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

use super::tls::{peer_certificate, Tls};
use crate::auth::mtls::PeerCertificate;

/// Routes requests to the service's router once it is open, and to the start-up router (the
/// probes, and 503 for the rest) until then. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    open: Arc<OnceLock<Router>>,
    starting: Router,
}

impl Gate {
    /// A gate that answers with `starting` until [`Gate::open`].
    pub fn new(starting: Router) -> Self {
        Self {
            open: Arc::new(OnceLock::new()),
            starting,
        }
    }

    /// From now on every request goes to `router`.
    pub fn open(&self, router: Router) {
        let _ = self.open.set(router);
    }

    fn router(&self) -> Router {
        self.open.get().unwrap_or(&self.starting).clone()
    }
}

/// One connection's view of the gate: adds the peer address, and the client certificate of a
/// TLS connection, to each request.
#[derive(Clone)]
struct ConnService {
    gate: Gate,
    peer: SocketAddr,
    certificate: Option<PeerCertificate>,
}

impl tower::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = tower::util::Oneshot<Router, Request<Incoming>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(cert) = &self.certificate {
            req.extensions_mut().insert(cert.clone());
        }
        self.gate.router().oneshot(req)
    }
}

/// Connection limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// `server.headerReadTimeout`.
    pub header_read_timeout: Duration,
    /// `server.maxConnections`.
    pub max_connections: usize,
}

/// Serves `listener` through `gate` until `stop` turns true, then stops accepting and waits
/// for the open connections to finish their requests (idle keep-alive connections close at
/// once). The caller bounds that wait.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    gate: Gate,
    limits: ConnLimits,
    tls: Option<Tls>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut stopped = std::pin::pin!(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut stopped => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: wait a moment
                // instead of spinning.
                tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gate = gate.clone();
        let Some(tls) = &tls else {
            let service = TowerToHyperService::new(ConnService {
                gate,
                peer,
                certificate: None,
            });
            let conn = graceful.watch(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
            continue;
        };
        let acceptor = tls.acceptor();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                    return;
                }
            };
            let certificate = peer_certificate(stream.get_ref().1);
            let service = TowerToHyperService::new(ConnService {
                gate,
                peer,
                certificate,
            });
            let conn = watcher.watch(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            if let Err(e) = conn.await {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
