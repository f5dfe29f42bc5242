//! The multiplexed RPC targets' (`driver_dubbo`, `driver_bolt`) check that
//! every request got exactly its own answer: one copy of the matching rules,
//! over each protocol's frame type.

use std::fmt::Debug;

use bytes::Bytes;

/// What a client's request must get back.
#[derive(Debug)]
pub enum Expect<Id> {
    /// A heartbeat response with this id.
    Heartbeat(Id),
    /// The upstream's answer (its payload) with this id, or a gateway error.
    Response(Id, Vec<u8>),
}

/// A response frame as the matching rules see it.
pub enum Answer {
    /// Not a response (a request), or a response with no status.
    Other,
    /// A heartbeat response.
    Heartbeat,
    /// A response with the OK status and this payload.
    Ok(Bytes),
    /// A response with an error status (a gateway error).
    Error,
}

/// A protocol's frame, read as an answer.
pub trait AnswerFrame {
    type Id: PartialEq + Copy + Debug;
    fn id(&self) -> Self::Id;
    fn answer(&self) -> Answer;
    /// Id, status and payload, for failure messages.
    fn describe(&self) -> String;
}

/// `f` is exactly what `e` asks for (the upstream's answer, or a heartbeat's).
fn exact<F: AnswerFrame>(e: &Expect<F::Id>, f: &F) -> bool {
    match (e, f.answer()) {
        (Expect::Heartbeat(id), Answer::Heartbeat) => f.id() == *id,
        (Expect::Response(id, payload), Answer::Ok(p)) => f.id() == *id && p[..] == payload[..],
        _ => false,
    }
}

/// `f` is an answer to `e`: exact, or a gateway error with its id.
fn answers<F: AnswerFrame>(e: &Expect<F::Id>, f: &F) -> bool {
    exact(e, f)
        || matches!((e, f.answer()), (Expect::Response(id, _), Answer::Error) if f.id() == *id)
}

/// Every expected answer is in `got`, once, and `got` holds nothing else
/// (with `reset`, the client may have lost some answers). Two passes: first
/// every exact answer, then gateway errors by id (one greedy pass could hand
/// a request's error to another with the same id).
pub fn check<F: AnswerFrame>(expect: Vec<Expect<F::Id>>, mut got: Vec<F>, reset: bool) {
    let show = |got: &[F]| got.iter().map(F::describe).collect::<Vec<_>>();
    let mut left = Vec::new();
    for e in expect {
        match got.iter().position(|f| exact(&e, f)) {
            Some(i) => {
                got.swap_remove(i);
            }
            None => left.push(e),
        }
    }
    for e in &left {
        match got.iter().position(|f| answers(e, f)) {
            Some(i) => {
                got.swap_remove(i);
            }
            None => assert!(
                reset,
                "{e:?} got no answer of its own; the client got {:?}",
                show(&got)
            ),
        }
    }
    assert!(
        got.is_empty(),
        "the client got answers to nothing it asked: {:?}",
        show(&got)
    );
}
