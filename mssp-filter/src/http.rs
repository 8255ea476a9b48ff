//! The Host of an HTTP/1.x request (RFC 9112 §3.2), read with `httparse` once the request's
//! header block is complete.

/// What the bytes so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// The host (lower case, no port, no trailing dot).
    Name(String),
    /// A whole request head without a usable Host.
    Absent,
    Incomplete,
    NotHttp,
}

/// Heads longer than this are not waited for.
const MAX_HEAD: usize = 16 * 1024;

pub fn host(stream: &[u8]) -> Host {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(stream) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            // A request line must look like one early on, or this is not HTTP.
            let line_ok = stream
                .iter()
                .take(16)
                .take_while(|b| **b != b' ')
                .all(|b| b.is_ascii_uppercase());
            return if !line_ok {
                Host::NotHttp
            } else if stream.len() > MAX_HEAD {
                Host::Absent
            } else {
                Host::Incomplete
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Host::Absent,
        Err(_) => return Host::NotHttp,
    }
    let Some(h) = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
    else {
        return Host::Absent;
    };
    let v = h.value.trim_ascii();
    // "[2001:db8::1]:8080", "name:8080", "name".
    let name = if v.first() == Some(&b'[') {
        return Host::Absent;
    } else {
        v.split(|b| *b == b':').next().unwrap_or(v)
    };
    match crate::names::canonical(name) {
        Some(n) => Host::Name(n),
        None => Host::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_read_once_the_head_is_whole() {
        let r = b"GET / HTTP/1.1\r\nUser-Agent: curl/8\r\nHost: WWW.Bad.test:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(host(r), Host::Name("www.bad.test".into()));
        assert_eq!(host(&r[..30]), Host::Incomplete);
        assert_eq!(host(b"GET / HTTP/1.1\r\n\r\n"), Host::Absent);
        assert_eq!(host(&[0x16, 3, 1, 2, 0, 1]), Host::NotHttp);
        assert_eq!(host(b"\x00\x01garbage\r\n\r\n"), Host::NotHttp);
    }
}
