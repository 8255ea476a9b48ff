//! Serving HTTP/1.1 on the agent's listeners with bounds an unauthenticated client cannot
//! exhaust: at most `max_connections` at once (a connection beyond that is closed at once,
//! so the accept loop never stalls), headers within `header_timeout`, and no connection
//! older than `max_lifetime` (an idle keep-alive client is cut off).

use std::{sync::Arc, time::Duration};

use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::warn;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::Semaphore,
    task::JoinSet,
};

/// How much one listener gives its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_lifetime: Duration,
}

impl Limits {
    /// The local API and the metrics endpoint: a CLI call or a scrape each takes one short
    /// connection. Generous for a 1M-entry listing, far short of "forever".
    pub const LOCAL: Limits = Limits {
        max_connections: 64,
        header_timeout: Duration::from_secs(10),
        max_lifetime: Duration::from_secs(600),
    };
}

/// Who is on the other end of the Unix socket.
#[derive(Clone, Debug)]
pub struct Peer {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

/// Serves one connection until it ends, the client is too slow, or it is too old.
pub async fn connection<I>(io: I, app: Router, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    let conn = http.serve_connection(TokioIo::new(io), svc);
    match tokio::time::timeout(limits.max_lifetime, conn).await {
        Ok(Err(e)) if !e.is_incomplete_message() && !e.is_timeout() => {
            log::debug!("connection ended: {e}");
        }
        _ => {}
    }
}

/// A permit for one more connection, or `None` (and a warning, at most every 10 s) when the
/// listener is full.
pub fn slot(slots: &Arc<Semaphore>, what: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match slots.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => {
            static LAST: std::sync::Mutex<Option<std::time::Instant>> =
                std::sync::Mutex::new(None);
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                warn!("{what}: too many connections at once; closing new ones until some end");
                *last = Some(std::time::Instant::now());
            }
            None
        }
    }
}

/// Accept errors (`Too many open files`) pause the loop briefly instead of spinning.
async fn accept_failed(what: &str, e: std::io::Error) {
    warn!("{what}: accept: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The local API on a Unix socket; each request carries the peer's credentials.
pub async fn unix(
    listener: UnixListener,
    app: Router,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { accept_failed("local API", e).await; continue; }
            },
            _ = stop.changed() => break,
        };
        let Some(permit) = slot(&slots, "local API") else {
            drop(stream);
            continue;
        };
        let cred = stream.peer_cred().ok();
        let peer = Peer {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        };
        let app = app.clone().layer(Extension(peer));
        conns.spawn(async move {
            let _permit = permit;
            connection(stream, app, limits).await;
        });
        while conns.try_join_next().is_some() {}
    }
    // In-flight requests finish (the caller bounds how long it waits for us).
    while conns.join_next().await.is_some() {}
}

/// Plain HTTP on TCP (the metrics endpoint).
pub async fn tcp(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { accept_failed("metrics", e).await; continue; }
            },
            _ = stop.changed() => break,
        };
        let Some(permit) = slot(&slots, "metrics") else {
            drop(stream);
            continue;
        };
        let app = app.clone();
        conns.spawn(async move {
            let _permit = permit;
            connection(stream, app, limits).await;
        });
        while conns.try_join_next().is_some() {}
    }
    // In-flight requests finish (the caller bounds how long it waits for us).
    while conns.join_next().await.is_some() {}
}
