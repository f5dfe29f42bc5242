//! Stream mechanics shared by every protocol of a shape:
//! [`session`] binds a downstream to one upstream and copies both ways;
//! [`pipeline`] keeps an upstream connection busy with pipelined requests
//! and hands replies back in order.

pub mod multiplex;
pub mod pipeline;
pub mod session;
pub mod websocket;
