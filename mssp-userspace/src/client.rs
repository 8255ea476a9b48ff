//! The CLI's side of the local API: one HTTP/1.1 request per connection over the agent's
//! Unix socket.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no mssp agent answers at {path}: {reason} (is it running? `systemctl status mssp`; \
         another socket: --socket PATH)"
    )]
    Unavailable { path: String, reason: String },
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected reply from the agent at {path}: {reason}")]
    Protocol { path: String, reason: String },
}

impl ClientError {
    /// sysexits: 65 bad input, 69 agent unavailable, 70 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unavailable { .. } => 69,
            ClientError::Api { status, .. } if (400..500).contains(status) => 65,
            _ => 70,
        }
    }
}

pub struct Client {
    pub socket: PathBuf,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(body, b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&body[..eol])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let sp = self.socket.display().to_string();
        let mut s = UnixStream::connect(&self.socket).map_err(|e| ClientError::Unavailable {
            path: sp.clone(),
            reason: e.to_string(),
        })?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: mssp\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        let proto = |reason: String| ClientError::Protocol {
            path: sp.clone(),
            reason,
        };
        s.write_all(req.as_bytes())
            .map_err(|e| proto(e.to_string()))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| proto(e.to_string()))?;
        let split = find(&raw, b"\r\n\r\n").ok_or_else(|| proto("no HTTP header".into()))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut body = raw[split + 4..].to_vec();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| proto(format!("bad status line {:?}", head.lines().next())))?;
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body).ok_or_else(|| proto("bad chunked body".into()))?;
        }
        let v: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| proto(format!("body is not JSON: {e}")))?
        };
        if !(200..300).contains(&status) {
            let message = v
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(ClientError::Api { status, message });
        }
        Ok(v)
    }
}
