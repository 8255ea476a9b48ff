//! DNS: the question of a query (RFC 1035 §4.1), and the answer mssp gives for a blocked
//! name: NXDOMAIN, or the sinkhole address for A / AAAA (NOERROR without an answer for
//! other types).

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
const HEADER: usize = 12;
const RCODE_NXDOMAIN: u16 = 3;
/// Seconds a resolver may keep mssp's sinkhole answer.
const SINKHOLE_TTL: u32 = 60;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    pub flags: u16,
    /// Lower case, no trailing dot; `None` when a label is not a plain host-name label
    /// (nothing in a list can match it).
    pub name: Option<String>,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the question in the message.
    pub end: usize,
}

/// The first question of a DNS query message. `Err` names what is wrong (the packet is then
/// let through: the server answers malformed queries itself).
pub fn question(msg: &[u8]) -> Result<Question, &'static str> {
    if msg.len() < HEADER {
        return Err("shorter than a DNS header");
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & 0x8000 != 0 {
        return Err("a response, not a query");
    }
    if (flags >> 11) & 0xf != 0 {
        return Err("not a standard query");
    }
    if u16::from_be_bytes([msg[4], msg[5]]) == 0 {
        return Err("no question");
    }
    let mut off = HEADER;
    let mut name = String::new();
    let mut plain = true;
    loop {
        let len = *msg.get(off).ok_or("the name runs past the message")? as usize;
        off += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return Err("a compressed or extended label in the question");
        }
        let label = msg
            .get(off..off + len)
            .ok_or("a label runs past the message")?;
        off += len;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(b.to_ascii_lowercase() as char);
            } else {
                plain = false;
            }
        }
        if name.len() > 253 {
            return Err("the name is longer than 253 characters");
        }
    }
    let tail = msg.get(off..off + 4).ok_or("the question is cut short")?;
    Ok(Question {
        id,
        flags,
        name: (plain && !name.is_empty()).then_some(name),
        qtype: u16::from_be_bytes([tail[0], tail[1]]),
        qclass: u16::from_be_bytes([tail[2], tail[3]]),
        end: off + 4,
    })
}

/// What a blocked query is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    NxDomain,
    Sinkhole {
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
    },
}

/// The response to `msg` (whose question is `q`): the question echoed, recursion available,
/// and NXDOMAIN or the sinkhole record.
pub fn answer(msg: &[u8], q: &Question, a: Answer) -> Vec<u8> {
    let question = &msg[HEADER..q.end];
    let rd = q.flags & 0x0100;
    let record: Option<Vec<u8>> = match a {
        Answer::NxDomain => None,
        Answer::Sinkhole { v4, v6 } => match q.qtype {
            TYPE_A => v4.map(|a| a.octets().to_vec()),
            TYPE_AAAA => v6.map(|a| a.octets().to_vec()),
            _ => None,
        },
    };
    let rcode = if a == Answer::NxDomain {
        RCODE_NXDOMAIN
    } else {
        0
    };
    // QR, the query's opcode (0) and RD, RA, the rcode.
    let flags: u16 = 0x8000 | rd | 0x0080 | rcode;
    let mut out = Vec::with_capacity(HEADER + question.len() + 28);
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(record.is_some() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    if let Some(rdata) = record {
        out.extend_from_slice(&[0xc0, HEADER as u8]); // the question's name
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&q.qclass.to_be_bytes());
        out.extend_from_slice(&SINKHOLE_TTL.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as `dig +noedns www.Bad.test A` sends it.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn the_question_is_read_and_answered() {
        let m = query("www.Bad.test", TYPE_A);
        let q = question(&m).unwrap();
        assert_eq!(q.name.as_deref(), Some("www.bad.test"));
        assert_eq!(
            (q.id, q.qtype, q.qclass, q.end),
            (0x1234, TYPE_A, 1, m.len())
        );

        let r = answer(&m, &q, Answer::NxDomain);
        assert_eq!(&r[..4], &[0x12, 0x34, 0x81, 0x83]);
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[12..], &m[12..]);

        let sink = Answer::Sinkhole {
            v4: Some(Ipv4Addr::new(198, 18, 0, 9)),
            v6: None,
        };
        let r = answer(&m, &q, sink);
        assert_eq!(&r[2..8], &[0x81, 0x80, 0, 1, 0, 1]);
        assert_eq!(&r[r.len() - 4..], &[198, 18, 0, 9]);
        // AAAA without an IPv6 sinkhole: NOERROR, no answer.
        let m6 = query("bad.test", TYPE_AAAA);
        let r = answer(&m6, &question(&m6).unwrap(), sink);
        assert_eq!(&r[2..8], &[0x81, 0x80, 0, 1, 0, 0]);
    }

    #[test]
    fn what_is_not_a_plain_query_is_named() {
        assert!(question(&[0; 5]).is_err());
        let mut m = query("bad.test", TYPE_A);
        m[2] |= 0x80;
        assert_eq!(question(&m), Err("a response, not a query"));
        let m = query("bad.test", TYPE_A);
        assert!(question(&m[..m.len() - 2]).is_err());
        let mut m = query("bad.test", TYPE_A);
        m[12] = 0xc0;
        assert!(question(&m).is_err());
        let mut m = query("b d.test", TYPE_A);
        m[14] = b' ';
        assert_eq!(question(&m).unwrap().name, None);
    }
}
