//! The CLI's side of the agent's local API: HTTP/1.1 over the Unix socket (hyper), typed
//! requests and replies from [`mssp_wire`]. A reply that does not parse into its type is an
//! error, never a silent success.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use mssp_wire::{ErrorBody, exit};
use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no mssp agent answers at {path}: {reason} (is it running? `systemctl status mssp`; \
         another socket: --socket PATH or MSSP_SOCKET)"
    )]
    Unavailable { path: String, reason: String },
    #[error(
        "permission denied on {path}: this user may not use the agent's socket; \
         add it to group mssp (`usermod -aG mssp $USER`, then log in again) or use sudo"
    )]
    PermissionDenied { path: String },
    #[error("the agent at {path} did not answer within {}; it may be busy (a large push?) — try again, or raise --timeout", humantime::format_duration(*.after))]
    Timeout { path: String, after: Duration },
    #[error("{}", .body.error)]
    Api { status: u16, body: ErrorBody },
    #[error("unexpected reply from the agent at {path}: {reason}")]
    Protocol { path: String, reason: String },
}

impl ClientError {
    /// sysexits: 65 bad input, 69 agent unavailable, 77 not allowed, 70 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unavailable { .. } | ClientError::Timeout { .. } => exit::UNAVAILABLE,
            ClientError::PermissionDenied { .. } => exit::NOPERM,
            ClientError::Api { status, .. } => exit::for_http_status(*status),
            ClientError::Protocol { .. } => exit::SOFTWARE,
        }
    }
}

pub struct Client {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl Client {
    pub fn new(socket: &Path, timeout: Duration) -> Client {
        Client {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>)
    }

    pub fn post<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body))
    }

    pub fn delete<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, Some(body))
    }

    pub fn put<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<T, ClientError> {
        self.call(Method::PUT, path, Some(body))
    }

    /// A streaming GET (`/v1/monitor`): `line` gets each line of the reply as it arrives,
    /// until it returns false or the agent ends the stream. The timeout bounds the wait
    /// for the reply to start, not the stream.
    pub fn stream_lines(
        &self,
        path: &str,
        mut line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let sp = self.socket.display().to_string();
        let protocol = |reason: String| ClientError::Protocol {
            path: sp.clone(),
            reason,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| protocol(format!("cannot start the runtime: {e}")))?;
        rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::PermissionDenied => {
                        ClientError::PermissionDenied { path: sp.clone() }
                    }
                    _ => ClientError::Unavailable {
                        path: sp.clone(),
                        reason: e.to_string(),
                    },
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| protocol(format!("HTTP: {e}")))?;
            let driver = tokio::spawn(conn);
            let req = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header(hyper::header::HOST, "mssp")
                .body(Full::new(Bytes::new()))
                .map_err(|e| protocol(format!("building the request: {e}")))?;
            let resp = tokio::time::timeout(self.timeout, sender.send_request(req))
                .await
                .map_err(|_| ClientError::Timeout {
                    path: sp.clone(),
                    after: self.timeout,
                })?
                .map_err(|e| protocol(format!("the agent closed the connection: {e}")))?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            if !(200..300).contains(&status) {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| protocol(format!("reading the reply: {e}")))?
                    .to_bytes();
                let b: ErrorBody = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| ErrorBody::new(format!("HTTP {status}")));
                return Err(ClientError::Api { status, body: b });
            }
            let mut buf: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| protocol(format!("reading the stream: {e}")))?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.extend_from_slice(data);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let l: Vec<u8> = buf.drain(..=i).collect();
                    if !line(String::from_utf8_lossy(&l[..l.len() - 1]).as_ref()) {
                        driver.abort();
                        return Ok(());
                    }
                }
            }
            driver.abort();
            Ok(())
        })
    }

    /// One request on its own connection, within the client's timeout.
    pub fn call<Q: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Q>,
    ) -> Result<T, ClientError> {
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Protocol {
                path: self.socket.display().to_string(),
                reason: format!("encoding the request: {e}"),
            })?,
            None => Vec::new(),
        };
        self.call_raw(method, path, payload)
    }

    /// [`Client::call`] with a body that is JSON already (a policy document, as it is).
    pub fn call_raw<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        payload: Vec<u8>,
    ) -> Result<T, ClientError> {
        let sp = self.socket.display().to_string();
        let protocol = |reason: String| ClientError::Protocol {
            path: sp.clone(),
            reason,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| protocol(format!("cannot start the runtime: {e}")))?;
        let (status, bytes) = rt.block_on(async {
            tokio::time::timeout(self.timeout, self.exchange(method, path, payload))
                .await
                .map_err(|_| ClientError::Timeout {
                    path: sp.clone(),
                    after: self.timeout,
                })?
        })?;
        if !(200..300).contains(&status) {
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                ErrorBody::new(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes).trim()
                ))
            });
            return Err(ClientError::Api { status, body });
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            protocol(format!(
                "the reply is not what this CLI expects ({e}); is the agent the same version as the CLI? ({})",
                env!("CARGO_PKG_VERSION")
            ))
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        payload: Vec<u8>,
    ) -> Result<(u16, Bytes), ClientError> {
        let sp = self.socket.display().to_string();
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    ClientError::PermissionDenied { path: sp.clone() }
                }
                _ => ClientError::Unavailable {
                    path: sp.clone(),
                    reason: e.to_string(),
                },
            })?;
        let protocol = |reason: String| ClientError::Protocol {
            path: sp.clone(),
            reason,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "mssp")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| protocol(format!("building the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| protocol(format!("the agent closed the connection: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| protocol(format!("reading the reply: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }
}
