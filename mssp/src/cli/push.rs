//! `mssp push`: the controller's side of the push API. Validates the document locally while
//! sending it to every edge at once (bounded concurrency), with a timeout per attempt and
//! retries with backoff for what can heal (unreachable edge, 5xx). Prints one row per edge
//! and exits non-zero if any edge does not enforce the document afterwards.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use serde::Serialize;
use serde_json::Value;
use tokio_rustls::TlsConnector;

use clap::Args;
use mssp_core::policy::{Capacity, document_digest, parse_policy};
use mssp_wire::{
    ErrorBody,
    exit::{DATAERR, USAGE},
    views::{PolicyCheck, PushApplied},
};

#[derive(Args)]
pub struct PushArgs {
    /// Policy document (JSON); validated here while the uploads start (a refusal cancels them)
    #[arg(long)]
    policy: PathBuf,
    /// This controller's client certificate (PEM), signed by the edges' client_ca.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The CA that signed the edges' certificates (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Edges at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Per attempt: connect, send, apply and reply (e.g. 60s, 2m).
    #[arg(long, default_value = "120s", value_parser = super::parse_duration)]
    timeout: Duration,
    /// Further attempts for an edge that cannot be reached or answers 5xx.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    #[arg(long)]
    json: bool,
    /// Accept a version of 2^63 or more (refused otherwise: it would leave no room for later pushes).
    #[arg(long)]
    force_version: bool,
    /// Ask each edge whether it would apply the document, and what it would change; apply nothing.
    #[arg(long)]
    dry_run: bool,
    /// The edges' push API URLs, e.g. https://edge1.example.net:9443
    #[arg(required = true)]
    urls: Vec<String>,
}

/// Capacity is each edge's business: it checks the document against its own maps.
const UNLIMITED: Capacity = Capacity {
    customers: u32::MAX,
    source_entries: u32::MAX,
};

/// The one field needed before the document is validated in full.
#[derive(serde::Deserialize)]
struct VersionOnly {
    version: u64,
}

/// Where one edge's push API is.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    host: String,
    port: u16,
    path: String,
    server_name: ServerName<'static>,
}

fn target(url: &str) -> Result<Target, String> {
    let uri: Uri = url.parse().map_err(|e| {
        format!("{url:?} is not a URL ({e}); write e.g. https://edge1.example.net:9443")
    })?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "{url:?}: the push API is HTTPS only; write https://{}",
            url.trim_start_matches("http://")
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| format!("{url:?}: {host:?} is not a host name or address ({e})"))?;
    let base = uri.path().trim_end_matches('/');
    Ok(Target {
        url: url.to_string(),
        port: uri.port_u16().unwrap_or(443),
        path: format!("{base}/v1/policy"),
        host,
        server_name,
    })
}

/// What became of one edge.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeResult {
    pub url: String,
    /// "applied", "already_in_force", "refused" or "failed".
    pub outcome: &'static str,
    pub ok: bool,
    pub http_status: Option<u16>,
    /// The version the edge reports in force afterwards, when it said.
    pub version: Option<u64>,
    pub digest: Option<String>,
    pub attempts: u32,
    pub elapsed_ms: f64,
    /// What the edge reported of its work (receive, validate, apply), in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_ms: Option<Value>,
    pub error: Option<String>,
    /// `--dry-run`: the edge's verdict on the document and what it would change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<PolicyCheck>,
}

/// A failure below HTTP: connecting, TLS, or the connection breaking.
struct Transport(String);

async fn attempt(
    tls: &TlsConnector,
    t: &Target,
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), Transport> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| Transport(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream = tls
            .connect(t.server_name.clone(), tcp)
            .await
            .map_err(|e| Transport(tls_hint(&e.to_string())))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Transport(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::PUT)
            .uri(&t.path)
            .header(hyper::header::HOST, format!("{}:{}", t.host, t.port))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|e| Transport(format!("building the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Transport(tls_hint(&format!("{e}: {}", source_chain(&e)))))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| Transport(format!("reading the reply: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(Transport(format!(
            "no reply within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// TLS failures in words an operator can act on.
fn tls_hint(msg: &str) -> String {
    let hint = if msg.contains("UnknownIssuer") {
        " (the edge's certificate is not signed by --ca)"
    } else if msg.contains("NotValidForName") {
        " (the edge's certificate does not name the host in the URL)"
    } else if msg.contains("Expired") {
        " (a certificate has expired)"
    } else if msg.contains("alert") || msg.contains("CertificateRequired") {
        " (the edge refused our client certificate: is --cert signed by the edge's client_ca?)"
    } else {
        ""
    };
    format!("TLS: {msg}{hint}")
}

async fn push_one(
    tls: TlsConnector,
    t: Target,
    body: Bytes,
    version: u64,
    digest: String,
    opts: (Duration, u32),
) -> EdgeResult {
    let (timeout, retries) = opts;
    let started = Instant::now();
    let mut attempts = 0;
    let mut r = EdgeResult {
        url: t.url.clone(),
        outcome: "failed",
        ok: false,
        http_status: None,
        version: None,
        digest: None,
        attempts: 0,
        elapsed_ms: 0.0,
        edge_ms: None,
        error: None,
        check: None,
    };
    let dry_run = t.path.contains("dry_run=true");
    loop {
        attempts += 1;
        let retry = match attempt(&tls, &t, body.clone(), timeout).await {
            Err(Transport(e)) => {
                r.error = Some(e);
                true
            }
            Ok((status, bytes)) => {
                r.http_status = Some(status.as_u16());
                if status == StatusCode::OK && dry_run {
                    match serde_json::from_slice::<PolicyCheck>(&bytes) {
                        Ok(c) => {
                            r.ok = c.valid;
                            r.outcome = if c.valid {
                                "would_apply"
                            } else {
                                "would_refuse"
                            };
                            r.error = (!c.valid).then(|| {
                                c.errors
                                    .iter()
                                    .map(|e| {
                                        if e.path.is_empty() {
                                            e.message.clone()
                                        } else {
                                            format!("{}: {}", e.path, e.message)
                                        }
                                    })
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            });
                            r.check = Some(c);
                        }
                        Err(e) => {
                            r.error =
                                Some(format!("the edge's dry-run reply does not parse ({e})"));
                        }
                    }
                    break;
                }
                if status == StatusCode::OK {
                    match serde_json::from_slice::<PushApplied>(&bytes) {
                        Ok(a) => {
                            r.version = Some(a.version);
                            r.digest = Some(a.digest.clone());
                            r.error = None;
                            r.edge_ms = Some(serde_json::json!({
                                "received": a.received_ms,
                                "validate": a.validate_ms,
                                "apply": a.apply_ms,
                            }));
                        }
                        Err(e) => {
                            r.error = Some(format!(
                                "the edge answered 200 with a reply this client does not understand ({e}); is it the same mssp version?"
                            ));
                            r.outcome = "failed";
                            break;
                        }
                    }
                } else {
                    let b: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                        ErrorBody::new(String::from_utf8_lossy(&bytes).into_owned())
                    });
                    r.version = b.version;
                    r.digest = b.digest;
                    r.error = Some(b.error);
                }
                match status {
                    StatusCode::OK => {
                        if r.digest.as_deref() == Some(digest.as_str()) {
                            r.outcome = "applied";
                            r.ok = true;
                        } else {
                            r.error = Some(format!(
                                "the edge reports digest {} for what it applied; we sent {digest}",
                                r.digest.as_deref().unwrap_or("(none)")
                            ));
                        }
                        false
                    }
                    StatusCode::CONFLICT => {
                        if r.version == Some(version) && r.digest.as_deref() == Some(&digest) {
                            // A retried push that had already landed.
                            r.outcome = "already_in_force";
                            r.ok = true;
                            r.error = None;
                        } else {
                            r.outcome = "refused";
                        }
                        false
                    }
                    s if s.is_server_error() && s != StatusCode::INSUFFICIENT_STORAGE => true,
                    _ => {
                        r.outcome = "refused";
                        false
                    }
                }
            }
        };
        if !retry || attempts > retries {
            break;
        }
        // 0.5 s, 1 s, 2 s, … capped at 8 s, with jitter so edges do not retry in lockstep.
        let base = 500u64.saturating_mul(1 << (attempts - 1).min(4)).min(8_000);
        let jitter = rand::random_range(0..=base / 5);
        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
    }
    r.attempts = attempts;
    r.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    r
}

/// One document on its way to the edges.
#[derive(Clone)]
pub struct Push {
    pub body: Bytes,
    pub version: u64,
    pub digest: String,
    pub concurrency: usize,
    pub timeout: Duration,
    pub retries: u32,
}

/// Pushes to every edge; the results in the order the URLs were given.
async fn push_all(cfg: Arc<ClientConfig>, targets: Vec<Target>, p: &Push) -> Vec<EdgeResult> {
    let tls = TlsConnector::from(cfg);
    let mut results: Vec<(usize, EdgeResult)> = stream::iter(targets.into_iter().enumerate())
        .map(|(i, t)| {
            let (tls, body, digest) = (tls.clone(), p.body.clone(), p.digest.clone());
            let (version, timeout, retries) = (p.version, p.timeout, p.retries);
            async move {
                (
                    i,
                    push_one(tls, t, body, version, digest, (timeout, retries)).await,
                )
            }
        })
        .buffer_unordered(p.concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

pub fn run(opts: PushArgs) -> ExitCode {
    let bytes = match std::fs::read(&opts.policy) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mssp push: {}: cannot read: {e}", opts.policy.display());
            return ExitCode::from(USAGE);
        }
    };
    // A document that is not even JSON with a version is never sent anywhere. The full validation of a large document takes a second or more, so it runs while the
    // uploads start: every edge runs the same validation (at least as strict, since it also
    // checks capacity) before touching anything, so a document refused here is refused
    // there too. A refusal here cancels the uploads still in flight.
    let version = match serde_json::from_slice::<VersionOnly>(&bytes) {
        Ok(v) => v.version,
        Err(_) => match parse_policy(&bytes, &UNLIMITED) {
            Ok(p) => p.version,
            Err(e) => {
                eprintln!("mssp push: {}: {e}; nothing pushed", opts.policy.display());
                return ExitCode::from(DATAERR);
            }
        },
    };
    let digest = document_digest(&bytes);
    let cfg = match mssp_agent::tls::client_config(&opts.cert, &opts.key, &opts.ca) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("mssp push: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let targets = match opts
        .urls
        .iter()
        .map(|u| target(u))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(mut t) => {
            let mut q = Vec::new();
            if opts.force_version {
                q.push("force_version=true");
            }
            if opts.dry_run {
                q.push("dry_run=true");
            }
            if !q.is_empty() {
                for x in &mut t {
                    x.path.push('?');
                    x.path.push_str(&q.join("&"));
                }
            }
            t
        }
        Err(e) => {
            eprintln!("mssp push: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mssp push: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let push = Push {
        body: Bytes::from(bytes),
        version,
        digest: digest.clone(),
        concurrency: opts.concurrency,
        timeout: opts.timeout,
        retries: opts.retries,
    };
    let bytes = push.body.clone();
    let results = rt.block_on(async {
        let check = tokio::task::spawn_blocking(move || {
            parse_policy(&bytes, &UNLIMITED)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let pushes = push_all(cfg, targets, &push);
        tokio::pin!(pushes, check);
        let (checked, results) = tokio::select! {
            biased;
            checked = &mut check => match checked {
                Ok(Ok(())) => (Ok(()), pushes.await),
                Ok(Err(e)) => (Err(e), Vec::new()),
                Err(e) => (Err(format!("local validation failed: {e}")), Vec::new()),
            },
            // Every edge answered before the local check finished (each refused a broken
            // document itself); the local verdict still decides the exit status.
            results = &mut pushes => (
                check.await.unwrap_or_else(|e| Err(format!("local validation failed: {e}"))),
                results,
            ),
        };
        checked.map(|()| results)
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "mssp push: {}: {e}; nothing applied (uploads cancelled; every edge validates before it applies)",
                opts.policy.display()
            );
            return ExitCode::from(DATAERR);
        }
    };
    let failed = results.iter().filter(|r| !r.ok).count();
    print_results(&opts, version, &digest, &results, started.elapsed());
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One row per edge, or one JSON object with `--json`.
fn print_results(
    opts: &PushArgs,
    version: u64,
    digest: &str,
    results: &[EdgeResult],
    elapsed: Duration,
) {
    let failed = results.iter().filter(|r| !r.ok).count();
    if opts.json {
        let v = serde_json::json!({
            "policy": {"file": opts.policy.display().to_string(), "version": version, "digest": digest},
            "edges": results,
            "ok": results.len() - failed,
            "failed": failed,
            "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!(
        "policy {} version {version} ({digest})",
        opts.policy.display()
    );
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["edge", "result", "in force", "attempts", "time", "detail"]);
    for r in results {
        t.add_row([
            r.url.clone(),
            r.outcome.replace('_', " "),
            r.version.map_or("-".into(), |v| format!("v{v}")),
            r.attempts.to_string(),
            format!("{:.1} s", r.elapsed_ms / 1000.0),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    if opts.dry_run {
        for r in results {
            if let Some(d) = r.check.as_ref().and_then(|c| c.diff.as_ref()) {
                println!("{}:", r.url);
                super::policy::print_diff(d);
            }
        }
        println!(
            "{} of {} edges would apply version {version} (dry run: nothing was applied)",
            results.len() - failed,
            results.len()
        );
        return;
    }
    println!(
        "{} of {} edges enforce version {version}{}",
        results.len() - failed,
        results.len(),
        if failed > 0 {
            "; see the failures above"
        } else {
            ""
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = target("https://edge1.example.net:9443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("edge1.example.net", 9443, "/v1/policy")
        );
        let t = target("https://[2001:db8::1]/mssp/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("2001:db8::1", 443, "/mssp/v1/policy")
        );
        assert!(
            target("http://edge1:9443")
                .unwrap_err()
                .contains("HTTPS only")
        );
        assert!(target("edge1 9443").is_err());
    }
}
