//! Switchyard: a multi-protocol network gateway. One listener port sniffs the
//! protocol of each connection and sends every request through one pipeline:
//!
//! `net → detect → (codec) → proxy (stream driver) → router → upstream`
//!
//! See `docs/architecture.md` for the layers and how a request flows.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod config;
pub mod detect;
pub mod error;
pub mod filters;
pub mod gateway;
pub mod net;
pub mod observe;
pub mod proxy;
pub mod router;
pub mod stream;
pub mod upstream;
