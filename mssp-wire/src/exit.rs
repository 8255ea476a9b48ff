//! Exit codes of every mssp command (sysexits.h), so scripts and systemd can tell a refusal
//! from an outage. The agent's unit keeps systemd from restarting on the ones that need a
//! person (`RestartPreventExitStatus=`).

/// Success.
pub const OK: u8 = 0;
/// Something failed that has no more specific code (an edge of a push failed, ...).
pub const FAILURE: u8 = 1;
/// Bad command line or configuration.
pub const USAGE: u8 = 64;
/// Bad input data: a refused document, an invalid value, unreadable state.
pub const DATAERR: u8 = 65;
/// The agent (or controller) does not answer.
pub const UNAVAILABLE: u8 = 69;
/// An internal error, or a reply that does not parse.
pub const SOFTWARE: u8 = 70;
/// Pins the agent must not touch: an operator decides (`--replace-pins`).
pub const TEMPFAIL: u8 = 75;
/// Not allowed: e.g. the socket refuses this user (not in group mssp).
pub const NOPERM: u8 = 77;

/// The exit code for an API reply status: client errors are the caller's data (65), the rest
/// the agent's (70).
pub fn for_http_status(status: u16) -> u8 {
    if (400..500).contains(&status) {
        DATAERR
    } else {
        SOFTWARE
    }
}
