//! Whether a failed attempt is sent again to another replica: one pure function,
//! [`retry`], over what is known of the attempt ([`Attempt`]).
//!
//! The rules:
//! - Nothing is replayed that is not at hand whole: a body is sent again only when all
//!   of it was kept (a JSON body always is: it is read whole before a replica is
//!   leased; an upload is kept up to 64 KiB).
//! - A failed connect is retried whatever the method: nothing reached a replica.
//! - A connection taken from the idle pool that was closed or reset before a single
//!   byte of an answer came back, within moments of the request (100 ms: a round trip
//!   and then some), is retried whatever the method. That is the race with a replica
//!   closing an idle connection just as the request is written, which pingora
//!   (`RetryType::ReusedOnly`) and browsers retry the same way. What it risks: a replica
//!   that read the request and died within those moments, before answering a byte, is
//!   indistinguishable from that race, so such a write may be applied twice. Keyed
//!   writes are safe whatever happens; an unkeyed write is at risk only when its
//!   replica dies within that instant, on a reused connection. A close that comes later
//!   is a replica that held the request: only what may be repeated is retried then.
//! - Any other failure after the request went out is retried only for GET and HEAD,
//!   and for the REST writes that honour an `Idempotency-Key` and carry one (the
//!   replica answers a repeat with the first result). A GraphQL mutation, or a route
//!   that ignores the header, is never replayed.
//! - Never more than `--max-tries` attempts, never twice on one replica.

/// How far an attempt got before it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No connection to the replica: nothing was sent.
    Connect,
    /// The request went out (some or all of it), and the connection was closed or
    /// reset before any byte of an answer came back.
    Closed,
    /// The request went out, and no answer came in time, or a malformed one did.
    NoAnswer,
}

/// What is known of a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub phase: Phase,
    /// GET or HEAD.
    pub safe: bool,
    /// The route honours `Idempotency-Key`, and the request carries one.
    pub keyed: bool,
    /// The body can be sent again whole: there is none, all of it was kept, or none of
    /// it has been read from the client yet.
    pub body_at_hand: bool,
    /// The connection came from the idle pool.
    pub reused: bool,
    /// Attempts remain under `--max-tries`.
    pub more: bool,
}

/// Whether to send the request again, to another replica.
pub fn retry(attempt: Attempt) -> bool {
    if !attempt.more || !attempt.body_at_hand {
        return false;
    }
    match attempt.phase {
        Phase::Connect => true,
        Phase::Closed if attempt.reused => true,
        Phase::Closed | Phase::NoAnswer => attempt.safe || attempt.keyed,
    }
}

/// Whether the failure counts against the replica for passive ejection. A reused
/// connection closed before its answer is the idle-close race, not the replica's fault;
/// everything else that reaches here (a refused connect, a reset, a timeout, nonsense)
/// is. What the client did or failed to do never reaches here.
pub fn counts_against_replica(phase: Phase, reused: bool) -> bool {
    !(phase == Phase::Closed && reused)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination, against the rule written out case by case.
    #[test]
    fn the_table() {
        use Phase::*;
        // (phase, safe, keyed, body at hand, reused) → retry (with attempts left)
        let table = [
            // A failed connect: any method, when the body is at hand.
            (Connect, false, false, true, false, true),
            (Connect, false, false, true, true, true),
            (Connect, true, false, true, false, true),
            (Connect, false, false, false, false, false),
            // The idle-close race on a reused connection: any method.
            (Closed, false, false, true, true, true),
            (Closed, false, true, true, true, true),
            (Closed, false, false, false, true, false),
            // Closed on a fresh connection: only what may be repeated.
            (Closed, false, false, true, false, false),
            (Closed, true, false, true, false, true),
            (Closed, false, true, true, false, true),
            // No answer in time, or nonsense: only what may be repeated, reused or not.
            (NoAnswer, false, false, true, false, false),
            (NoAnswer, false, false, true, true, false),
            (NoAnswer, true, false, true, false, true),
            (NoAnswer, true, false, true, true, true),
            (NoAnswer, false, true, true, false, true),
            (NoAnswer, false, true, false, false, false),
            (NoAnswer, true, false, false, true, false),
        ];
        for (phase, safe, keyed, body_at_hand, reused, expected) in table {
            let attempt = Attempt {
                phase,
                safe,
                keyed,
                body_at_hand,
                reused,
                more: true,
            };
            assert_eq!(retry(attempt), expected, "{attempt:?}");
            assert!(
                !retry(Attempt {
                    more: false,
                    ..attempt
                }),
                "no attempts left: {attempt:?}"
            );
        }
    }

    #[test]
    fn only_the_idle_close_race_is_not_the_replicas_fault() {
        assert!(!counts_against_replica(Phase::Closed, true));
        assert!(counts_against_replica(Phase::Closed, false));
        assert!(counts_against_replica(Phase::Connect, false));
        assert!(counts_against_replica(Phase::NoAnswer, true));
    }
}
