//! Content filtering's userspace half. The customer-interface XDP program steers the packets
//! that name a destination (DNS questions, the first TLS and HTTP segments of a flow) to
//! AF_XDP sockets; the [`inspector`] reads the name ([`dns`], [`tls`], [`http`]), looks it
//! up in the customer's and the global lists ([`table`]), and either re-injects the packet
//! unchanged ([`inject`]) or answers for the destination ([`reply`]): NXDOMAIN or a sinkhole
//! address for DNS, a TCP reset for TLS and HTTP.

pub mod dns;
mod flow;
pub mod http;
pub mod inject;
pub mod inspector;
pub mod names;
pub mod offline;
pub mod packet;
pub mod reply;
pub mod stats;
pub mod table;
pub mod tls;
mod xsk;

pub use inspector::{Inspector, Settings};
pub use table::{Decision, FilterTable};
