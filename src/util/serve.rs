//! Serving HTTP to clients we do not trust (the sandbox, `cards serve`,
//! which faces the internet): at most [`MAX_CONNECTIONS`] connections at
//! once, a request head within [`HEADER_TIMEOUT`], a graceful stop.

use std::sync::Arc;

use axum::Router;

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send a request's head within this long; a slow client is
/// closed, not waited on.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accept and serve connections until `stop` fires: at most
/// [`MAX_CONNECTIONS`] at once, each closed if its request head is slower
/// than [`HEADER_TIMEOUT`]; then let the open ones finish (briefly).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    serve_with(listener, app, stop, false).await
}

/// Requests handed to their own tasks when they arrive, before anything
/// can drop them, at most this many at once (more are answered 503).
pub const MAX_DETACHED: usize = 4096;

/// [`serve`], with every request run to its end on a task of its own,
/// started as soon as its head is read: a client that closes its
/// connection at once (a member closing the page) never cuts the work
/// short. hyper drops a handler's future when the connection goes, and a
/// future not yet polled has done nothing, so the task is spawned in the
/// service's `call`, not in the handler.
pub async fn serve_detached(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    serve_with(listener, app, stop, true).await
}

/// A router whose requests run on tasks of their own (see [`serve_detached`]).
#[derive(Clone)]
struct Detached {
    app: Router,
    slots: Arc<tokio::sync::Semaphore>,
    /// The connection's peer, handed to handlers as a [`Peer`] extension.
    peer: Option<std::net::SocketAddr>,
}

/// The address a request came from (the TCP peer: behind a reverse proxy,
/// the proxy's), as a request extension under [`serve_detached`].
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

type Answer = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>>
            + Send,
    >,
>;

impl tower_service::Service<axum::http::Request<hyper::body::Incoming>> for Detached {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: axum::http::Request<hyper::body::Incoming>) -> Answer {
        use axum::response::IntoResponse;
        if let Some(p) = self.peer {
            req.extensions_mut().insert(Peer(p));
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Box::pin(async {
                Ok(axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response())
            });
        };
        let mut app = self.app.clone();
        let task = tokio::spawn(async move {
            let answer = tower_service::Service::call(&mut app, req).await;
            drop(permit);
            answer
        });
        Box::pin(async move {
            Ok(match task.await {
                Ok(Ok(r)) => r,
                _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            })
        })
    }
}

async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    detached: bool,
) {
    let detached = detached.then(|| Detached {
        app: app.clone(),
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_DETACHED)),
        peer: None,
    });
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        // A client that shuts its side right after its request (a member
        // closing the page) still has that request dispatched: without
        // this, hyper closes the connection on the EOF and drops it.
        .half_close(detached.is_some());
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("bug: the slots are never closed"),
            _ = &mut stop => break,
        };
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                // Out of file descriptors and the like: the connection is
                // lost, the server is not; pause rather than spin while
                // the condition lasts.
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                        _ = &mut stop => break,
                    }
                }
            },
            _ = &mut stop => break,
        };
        // Answers go out at once (no Nagle delay waiting on the client's ACK).
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(tcp);
        match &detached {
            Some(d) => {
                let service = hyper_util::service::TowerToHyperService::new(Detached {
                    peer: Some(peer),
                    ..d.clone()
                });
                let conn = graceful.watch(http.serve_connection(io, service));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            None => {
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = graceful.watch(http.serve_connection(io, service));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
        }
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}
