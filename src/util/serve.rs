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
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("bug: the slots are never closed"),
            _ = &mut stop => break,
        };
        let (tcp, _) = tokio::select! {
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
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}
