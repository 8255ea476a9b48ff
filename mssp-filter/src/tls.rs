//! The server name of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3), read from the
//! first bytes a client sends — possibly only part of them: a ClientHello with a
//! post-quantum key share is larger than one segment, and the name may sit in the second.

/// What the bytes so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sni {
    /// The server name (lower case, no trailing dot).
    Name(String),
    /// A whole ClientHello without a server name.
    Absent,
    /// The name may still come: more bytes are needed.
    Incomplete,
    /// Not a TLS handshake.
    NotTls,
}

const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;

/// The handshake bytes carried by the TLS records at the start of `stream` (a ClientHello
/// may span records); `Err(Sni::NotTls)` if it does not start like TLS.
fn handshake_bytes(stream: &[u8]) -> Result<Vec<u8>, Sni> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 5 <= stream.len() {
        let h = &stream[off..off + 5];
        if h[0] != CONTENT_HANDSHAKE || h[1] != 3 {
            return Err(if off == 0 {
                Sni::NotTls
            } else {
                Sni::Incomplete
            });
        }
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        let end = (off + 5 + len).min(stream.len());
        out.extend_from_slice(&stream[off + 5..end]);
        off += 5 + len;
    }
    if off == 0 && !stream.is_empty() && stream[0] != CONTENT_HANDSHAKE {
        return Err(Sni::NotTls);
    }
    Ok(out)
}

/// A cursor over possibly truncated bytes: running out means `Incomplete`.
struct Cur<'a> {
    b: &'a [u8],
    off: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Sni> {
        let s = self.b.get(self.off..self.off + n).ok_or(Sni::Incomplete)?;
        self.off += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<usize, Sni> {
        Ok(self.take(1)?[0] as usize)
    }
    fn u16(&mut self) -> Result<usize, Sni> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]) as usize)
    }
}

/// The ClientHello's server name, as far as `stream` (the flow's first bytes) tells.
pub fn sni(stream: &[u8]) -> Sni {
    match parse(stream) {
        Ok(s) | Err(s) => s,
    }
}

fn parse(stream: &[u8]) -> Result<Sni, Sni> {
    let hs = handshake_bytes(stream)?;
    let mut c = Cur { b: &hs, off: 0 };
    if c.u8()? != CLIENT_HELLO as usize {
        return Err(Sni::NotTls);
    }
    let body_len = {
        let s = c.take(3)?;
        (s[0] as usize) << 16 | (s[1] as usize) << 8 | s[2] as usize
    };
    let body_end = 4 + body_len;
    c.take(2 + 32)?; // legacy_version, random
    let sid = c.u8()?;
    c.take(sid)?;
    let suites = c.u16()?;
    c.take(suites)?;
    let comp = c.u8()?;
    c.take(comp)?;
    if c.off >= body_end {
        return Ok(Sni::Absent);
    }
    let ext_len = c.u16()?;
    let ext_end = (c.off + ext_len).min(body_end);
    while c.off < ext_end {
        let kind = c.u16()? as u16;
        let len = c.u16()?;
        if kind != EXT_SERVER_NAME {
            c.take(len)?;
            continue;
        }
        let data = c.take(len)?;
        let mut d = Cur { b: data, off: 0 };
        let list = d.u16().map_err(|_| Sni::NotTls)?;
        let list_end = 2 + list;
        while d.off < list_end.min(data.len()) {
            let name_type = d.u8().map_err(|_| Sni::NotTls)?;
            let n = d.u16().map_err(|_| Sni::NotTls)?;
            let name = d.take(n).map_err(|_| Sni::NotTls)?;
            if name_type == 0 {
                return Ok(match crate::names::canonical(name) {
                    Some(n) => Sni::Name(n),
                    None => Sni::Absent,
                });
            }
        }
        return Ok(Sni::Absent);
    }
    Ok(Sni::Absent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello, from rustls, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn the_name_of_a_real_client_hello_is_read_from_any_prefix_that_holds_it() {
        let ch = client_hello("WWW.Bad.Test");
        assert_eq!(sni(&ch), Sni::Name("www.bad.test".into()));
        let mut seen_name = false;
        for cut in 0..=ch.len() {
            match sni(&ch[..cut]) {
                Sni::Incomplete => assert!(!seen_name, "incomplete after the name at {cut}"),
                Sni::Name(n) => {
                    assert_eq!(n, "www.bad.test");
                    seen_name = true;
                }
                other => panic!("{other:?} at {cut} of {}", ch.len()),
            }
        }
        assert!(seen_name);
    }

    #[test]
    fn what_is_not_tls_says_so() {
        assert_eq!(sni(b"GET / HTTP/1.1\r\n"), Sni::NotTls);
        assert_eq!(sni(&[22, 3, 1, 0, 5, 2, 0, 0, 1, 0]), Sni::NotTls);
        assert_eq!(sni(&[22, 3]), Sni::Incomplete);
    }

    #[test]
    fn a_client_hello_split_over_two_records_is_read() {
        let ch = client_hello("bad.test");
        let body = &ch[5..];
        let (a, b) = body.split_at(40);
        let mut two = vec![22, 3, 1];
        two.extend_from_slice(&(a.len() as u16).to_be_bytes());
        two.extend_from_slice(a);
        two.extend_from_slice(&[22, 3, 1]);
        two.extend_from_slice(&(b.len() as u16).to_be_bytes());
        two.extend_from_slice(b);
        assert_eq!(sni(&two), Sni::Name("bad.test".into()));
    }
}
