//! What a load connection reads, in words both protocols share: a job on a new
//! tip, and the pool's answers to shares. `hold` and `shares` act on these and
//! never on the wire.

/// What the pool said of shares.
pub enum Answer {
    /// One share (V1 request id, or V2 sequence number): accepted, or the code.
    One {
        token: u64,
        result: Result<(), String>,
    },
    /// V2: `count` of the shares with sequence numbers up to `last` were accepted.
    Batch { last: u64, count: u64 },
}

/// Something a connection read.
pub enum Event {
    /// A job on a new tip (a clean notify, a `SetNewPrevHash`): its id.
    NewTip(String),
    Answer(Answer),
    Other,
}
