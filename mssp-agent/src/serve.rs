//! Serving HTTP/1.1 on the agent's listeners with bounds an unauthenticated client cannot
//! exhaust or use to lock others out: at most `max_connections` at once, and when full the
//! oldest connection that is not in the middle of a request makes room for the newcomer
//! (so idle connections held open cannot keep the CLI, a scraper or a controller out);
//! headers within `header_timeout`; no connection older than `max_lifetime`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Extension, Router,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::warn;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    task::{AbortHandle, JoinSet},
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
        max_connections: 256,
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

/// The connections of one listener, oldest first, each with whether it is serving a
/// request now.
#[derive(Default)]
pub struct Connections {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    conns: BTreeMap<u64, (Arc<AtomicBool>, Option<AbortHandle>)>,
}

/// A connection's place in [`Connections`]; leaving frees it.
pub struct Slot {
    table: Arc<Connections>,
    id: u64,
    pub busy: Arc<AtomicBool>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.conns.remove(&self.id);
    }
}

impl Connections {
    /// A place for one more connection among at most `max`: when full, the oldest idle one
    /// is closed to make room; `None` when every one is busy serving.
    pub fn admit(self: &Arc<Self>, max: usize, what: &str) -> Option<Slot> {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if t.conns.len() >= max {
            let oldest_idle = t
                .conns
                .iter()
                .find(|(_, (busy, _))| !busy.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            match oldest_idle {
                Some(id) => {
                    if let Some((_, Some(h))) = t.conns.remove(&id) {
                        h.abort();
                    }
                    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
                    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
                    if last.is_none_or(|x| x.elapsed() > Duration::from_secs(10)) {
                        warn!(
                            "{what}: {max} connections at once; closing the oldest idle ones to make room"
                        );
                        *last = Some(std::time::Instant::now());
                    }
                }
                None => return None,
            }
        }
        let id = t.next;
        t.next += 1;
        let busy = Arc::new(AtomicBool::new(false));
        t.conns.insert(id, (busy.clone(), None));
        Some(Slot {
            table: self.clone(),
            id,
            busy,
        })
    }

    /// Records the task serving a slot, so that it can be closed to make room.
    pub fn set_task(&self, slot_id: u64, h: AbortHandle) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = t.conns.get_mut(&slot_id) {
            e.1 = Some(h);
        }
    }
}

impl Slot {
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Marks the connection busy while a request is served (it is then never closed to make
/// room for another).
async fn mark_busy(State(busy): State<Arc<AtomicBool>>, req: Request, next: Next) -> Response {
    busy.store(true, Ordering::Relaxed);
    let r = next.run(req).await;
    busy.store(false, Ordering::Relaxed);
    r
}

/// Serves one connection until it ends, the client is too slow, or it is too old.
pub async fn connection<I>(io: I, app: Router, busy: Arc<AtomicBool>, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.layer(axum::middleware::from_fn_with_state(busy, mark_busy));
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

/// Accept errors (`Too many open files`) pause the loop briefly instead of spinning.
pub async fn accept_failed(what: &str, e: std::io::Error) {
    warn!("{what}: accept: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Spawns `fut` for a connection in `slot`, registered so that it can be closed to make room.
pub fn spawn<F>(conns: &mut JoinSet<()>, table: &Connections, slot: Slot, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let id = slot.id();
    let h = conns.spawn(async move {
        let _slot = slot;
        fut.await;
    });
    table.set_task(id, h);
}

/// The local API on a Unix socket; each request carries the peer's credentials.
pub async fn unix(
    listener: UnixListener,
    app: Router,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let table = Arc::new(Connections::default());
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { accept_failed("local API", e).await; continue; }
            },
            _ = stop.changed() => break,
        };
        let Some(slot) = table.admit(limits.max_connections, "local API") else {
            drop(stream);
            continue;
        };
        let cred = stream.peer_cred().ok();
        let peer = Peer {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        };
        let app = app.clone().layer(Extension(peer));
        let busy = slot.busy.clone();
        spawn(
            &mut conns,
            &table,
            slot,
            connection(stream, app, busy, limits),
        );
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
    let table = Arc::new(Connections::default());
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { accept_failed("metrics", e).await; continue; }
            },
            _ = stop.changed() => break,
        };
        let Some(slot) = table.admit(limits.max_connections, "metrics") else {
            drop(stream);
            continue;
        };
        let busy = slot.busy.clone();
        spawn(
            &mut conns,
            &table,
            slot,
            connection(stream, app.clone(), busy, limits),
        );
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}
