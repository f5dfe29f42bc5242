//! The invocation at the start of a Hessian 2 request body, as Dubbo's
//! `DubboCodec.encodeRequestData` writes it:
//!
//! ```text
//! string dubbo version, string service path, string service version,
//! string method name, string parameter descriptor (JVM form, e.g. "Ljava/lang/String;I"),
//! one value per parameter, map attachments (string -> string)
//! ```
use std::borrow::Cow;

use bytes::Bytes;

use nom::bytes::complete::{tag, take_till1, take_while};
use nom::number::complete::u8;

use super::PROTO;
use crate::CodecError;
use crate::hessian2::{self, Reader};
use crate::parse::{Parsed, expected};

/// What a Dubbo request calls: views into the request body.
///
/// Null strings (a service version of `N`, as some clients write) read as empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    dubbo_version: Bytes,
    path: Bytes,
    service_version: Bytes,
    method: Bytes,
    parameter_types: Bytes,
    parameter_count: usize,
    args: Bytes,
    attachments_wire: Bytes,
    /// Where the attachments map starts in the body.
    attachments_at: usize,
    attachments: Vec<(Bytes, Bytes)>,
}

/// A string read from `body`, as a view when it was one chunk.
fn view(body: &Bytes, s: Option<Cow<'_, [u8]>>) -> Bytes {
    match s {
        None => Bytes::new(),
        Some(Cow::Borrowed(b)) => body.slice_ref(b),
        Some(Cow::Owned(v)) => Bytes::from(v),
    }
}

impl Invocation {
    /// Read the invocation from a Hessian 2 request body.
    pub(super) fn parse(body: &Bytes) -> Result<Invocation, CodecError> {
        let mut r = Reader::new(body, hessian2::Limits::default());
        let dubbo_version = view(body, r.read_string_or_null()?);
        let path = view(body, r.read_string_or_null()?);
        let service_version = view(body, r.read_string_or_null()?);
        let method = view(body, Some(r.read_string()?));
        let parameter_types = view(body, r.read_string_or_null()?);
        let parameter_count = parameter_count(&parameter_types)?;
        let args_start = r.position();
        for _ in 0..parameter_count {
            r.skip_value()?;
        }
        let args_end = r.position();
        // Old clients send no attachments at all.
        let attachments = if r.is_at_end() {
            Vec::new()
        } else {
            r.read_string_map()?
                .into_iter()
                .map(|(k, v)| (view(body, Some(k)), view(body, Some(v))))
                .collect()
        };
        let attachments_end = r.position();
        Ok(Invocation {
            dubbo_version,
            path,
            service_version,
            method,
            parameter_types,
            parameter_count,
            args: body.slice(args_start..args_end),
            attachments_wire: body.slice(args_end..attachments_end),
            attachments_at: args_end,
            attachments,
        })
    }

    /// The Dubbo protocol version the client sent (e.g. `2.0.2`).
    pub fn dubbo_version(&self) -> &[u8] {
        &self.dubbo_version
    }

    /// The service path (usually the interface name).
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The service version (empty when none).
    pub fn service_version(&self) -> &[u8] {
        &self.service_version
    }

    /// The method name.
    pub fn method(&self) -> &[u8] {
        &self.method
    }

    /// The parameter types as a JVM descriptor (e.g. `Ljava/lang/String;I`).
    pub fn parameter_types(&self) -> &[u8] {
        &self.parameter_types
    }

    /// The number of arguments, from the descriptor.
    pub fn parameter_count(&self) -> usize {
        self.parameter_count
    }

    /// The arguments, still encoded (a view into the body).
    pub fn args(&self) -> &Bytes {
        &self.args
    }

    /// The attachments map, still encoded (a view into the body; empty when
    /// the client sent none).
    pub fn attachments_wire(&self) -> &Bytes {
        &self.attachments_wire
    }

    /// Where the attachments map starts in the body (its end when there is none).
    pub fn attachments_at(&self) -> usize {
        self.attachments_at
    }

    /// The attachments whose key and value are both strings, in wire order.
    pub fn attachments(&self) -> &[(Bytes, Bytes)] {
        &self.attachments
    }

    /// The first attachment named `name` (ignoring ASCII case).
    pub fn attachment(&self, name: &str) -> Option<&[u8]> {
        self.attachments
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &v[..])
    }

    /// The service to route on: the `interface` attachment, else the path.
    pub fn service(&self) -> &[u8] {
        self.attachment("interface")
            .filter(|i| !i.is_empty())
            .unwrap_or(&self.path)
    }
}

/// The number of parameters in a JVM method descriptor's parameter list,
/// such as `Ljava/lang/String;I[J` (3). An empty descriptor has none.
pub fn parameter_count(desc: &[u8]) -> Result<usize, CodecError> {
    let mut count = 0usize;
    let mut rest = desc;
    while !rest.is_empty() {
        let Ok((after, ())) = parameter_type(rest) else {
            return Err(CodecError::malformed(PROTO, "bad parameter descriptor"));
        };
        rest = after;
        count += 1;
    }
    Ok(count)
}

/// One JVM field type (complete input): array dimensions, then a primitive
/// letter or `L` + class name + `;`.
fn parameter_type(input: &[u8]) -> Parsed<'_, ()> {
    let (rest, _dimensions) = take_while(|b| b == b'[')(input)?;
    let (rest, letter) = u8(rest)?;
    match letter {
        b'Z' | b'B' | b'C' | b'D' | b'F' | b'I' | b'J' | b'S' => Ok((rest, ())),
        b'L' => {
            let (rest, _class) = take_till1(|b| b == b';')(rest)?;
            let (rest, _semi) = tag(&b";"[..])(rest)?;
            Ok((rest, ()))
        }
        _ => expected(input, "a JVM type letter"),
    }
}
