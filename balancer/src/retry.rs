//! Whether a failed attempt is sent again to another replica: one pure function,
//! [`retry`], over what is known of the attempt ([`Attempt`]).
//!
//! The rules:
//! - Nothing is replayed that is not at hand whole: a body is sent again only when all
//!   of it was kept (a JSON body always is: it is read whole before a replica is
//!   leased; an upload is kept up to 64 KiB).
//! - A failed connect is retried whatever the method: nothing reached a replica.
//! - A request that went out on a connection from the idle pool, and whose connection
//!   was closed or reset before a single byte of an answer came back within moments of
//!   the request (100 ms), is retried whatever the method **when the replica's TCP
//!   stack acknowledged none of its bytes**. That is the idle-close race: the replica
//!   closed the kept-alive connection just as the request was written, and its kernel
//!   answered the request with a reset, unacknowledged. pingora
//!   (`RetryType::ReusedOnly`) and browsers retry it for any method too, on the
//!   connection's reuse and the error alone, which also retries a write that a replica
//!   read and then died holding: CI saw a stock change applied twice so, with a rule
//!   of reuse and time alone. Here a killed replica's kernel closes with a FIN that
//!   acknowledges every byte the process read, so that write is not retried.
//!   What it still risks: a replica that read a write, and whose connection ends in a
//!   reset before its kernel's delayed acknowledgement went out (up to 40 ms or so):
//!   a replica that closes with `SO_LINGER` 0, or one that reads the request only in
//!   part. Ours do neither; keyed writes are safe whatever happens. (The count is
//!   Linux's `TCP_INFO` `tcpi_bytes_acked`, read before the request and after the
//!   failure through pingora-core, which reads `TCP_INFO` only at Linux 6.2's size: on
//!   older kernels it cannot be read, and the race is then not retried for writes, so
//!   the client gets a 502 with `Retry-After`. The fix belongs upstream, in
//!   `get_opt_sized`, which could accept the shorter struct.)
//! - Any other failure after the request went out is retried only for GET and HEAD,
//!   and for the REST writes that honour an `Idempotency-Key` and carry one (the
//!   replica answers a repeat with the first result). A GraphQL mutation, or a route
//!   that ignores the header, is never replayed (RFC 9112 §9.3.1).
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
    /// The idle-close race: a reused connection, closed within moments of the request,
    /// and the replica's TCP stack acknowledged no byte of it, so its process cannot
    /// have read any.
    pub unread: bool,
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
        Phase::Closed if attempt.unread => true,
        Phase::Closed | Phase::NoAnswer => attempt.safe || attempt.keyed,
    }
}

/// Whether the failure counts against the replica for passive ejection. A reused
/// connection closed before an answer is likely the idle-close race, not the replica's
/// fault (a replica that died shows at the next connect);
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
        // (phase, safe, keyed, body at hand, unread) → retry (with attempts left)
        let table = [
            // A failed connect: any method, when the body is at hand.
            (Connect, false, false, true, true, true),
            (Connect, false, false, true, false, true),
            (Connect, true, false, true, false, true),
            (Connect, false, false, false, true, false),
            // Closed before an answer, and the replica acknowledged none of the
            // request (the idle-close race): any method.
            (Closed, false, false, true, true, true),
            (Closed, false, true, true, true, true),
            (Closed, false, false, false, true, false),
            // Closed before an answer after the replica took the bytes (it may have
            // read them and died): only what may be repeated.
            (Closed, false, false, true, false, false),
            (Closed, true, false, true, false, true),
            (Closed, false, true, true, false, true),
            (Closed, true, false, false, false, false),
            // No answer in time, or nonsense: only what may be repeated, acknowledged
            // or not (a replica that is slow to take the bytes is still working).
            (NoAnswer, false, false, true, false, false),
            (NoAnswer, false, false, true, true, false),
            (NoAnswer, true, false, true, false, true),
            (NoAnswer, true, false, true, true, true),
            (NoAnswer, false, true, true, false, true),
            (NoAnswer, false, true, false, false, false),
            (NoAnswer, true, false, false, true, false),
        ];
        for (phase, safe, keyed, body_at_hand, unread, expected) in table {
            let attempt = Attempt {
                phase,
                safe,
                keyed,
                body_at_hand,
                unread,
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
