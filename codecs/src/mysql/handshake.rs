//! The connection phase: the server greeting (HandshakeV10), the client's
//! HandshakeResponse41 and SSLRequest, AuthSwitchRequest, AuthMoreData, and
//! COM_CHANGE_USER. Parsing is lenient where servers are (trailing fields
//! may be missing) and strict where a proxy must be (every length checked).

use bytes::{BufMut, BytesMut};

use super::wire::{Reader, put_lenenc_str};
use super::{PROTO, cap};
use crate::CodecError;

/// The server's greeting (protocol version 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    /// The auth nonce (20 bytes from MySQL and MariaDB).
    pub nonce: Vec<u8>,
    pub capabilities: u32,
    /// MariaDB's extended capabilities ([`mariadb_cap`](super::mariadb_cap));
    /// 0 from MySQL (which sets `CLIENT_MYSQL`, bit 0).
    pub ext_capabilities: u32,
    /// Default collation id.
    pub collation: u8,
    pub status: u16,
    /// The default auth plugin (`mysql_native_password`, ...).
    pub plugin: Vec<u8>,
}

/// Parse a greeting payload.
pub fn parse_greeting(payload: &[u8]) -> Result<Greeting, CodecError> {
    let mut r = Reader::new(payload);
    match r.u8()? {
        10 => {}
        0xFF => {
            return Err(CodecError::malformed(
                PROTO,
                "server refused the connection",
            ));
        }
        _ => {
            return Err(CodecError::Unsupported {
                protocol: PROTO,
                reason: "protocol version other than 10",
            });
        }
    }
    let server_version = r.nul_str()?.to_vec();
    let connection_id = r.u32()?;
    let mut nonce = r.take(8)?.to_vec();
    r.take(1)?;
    let mut capabilities = u32::from(r.u16()?);
    if r.is_empty() {
        return Ok(Greeting {
            server_version,
            connection_id,
            nonce,
            capabilities,
            ext_capabilities: 0,
            collation: 0,
            status: 0,
            plugin: Vec::new(),
        });
    }
    let collation = r.u8()?;
    let status = r.u16()?;
    capabilities |= u32::from(r.u16()?) << 16;
    let auth_len = usize::from(r.u8()?);
    r.take(6)?;
    let ext = r.u32()?;
    let ext_capabilities = if capabilities & cap::LONG_PASSWORD == 0 {
        ext
    } else {
        0
    };
    if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = auth_len.saturating_sub(8).max(13);
        let part2 = r.take(n.min(r.rest().len()))?;
        // The second part ends with a NUL that is not part of the nonce.
        let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
        nonce.extend_from_slice(part2);
    }
    let plugin = if capabilities & cap::PLUGIN_AUTH != 0 {
        r.nul_str_or_rest().to_vec()
    } else {
        Vec::new()
    };
    Ok(Greeting {
        server_version,
        connection_id,
        nonce,
        capabilities,
        ext_capabilities,
        collation,
        status,
        plugin,
    })
}

/// Encode a greeting payload (the nonce must be 20 bytes). With extended
/// capabilities, `CLIENT_MYSQL` (bit 0) is cleared to announce them.
pub fn encode_greeting(g: &Greeting) -> BytesMut {
    let caps = if g.ext_capabilities != 0 {
        g.capabilities & !cap::LONG_PASSWORD
    } else {
        g.capabilities
    };
    let mut out = BytesMut::with_capacity(96);
    out.put_u8(10);
    out.put_slice(&g.server_version);
    out.put_u8(0);
    out.put_u32_le(g.connection_id);
    let (part1, part2) = g.nonce.split_at(8.min(g.nonce.len()));
    out.put_slice(part1);
    out.put_u8(0);
    out.put_u16_le(caps as u16);
    out.put_u8(g.collation);
    out.put_u16_le(g.status);
    out.put_u16_le((caps >> 16) as u16);
    out.put_u8((g.nonce.len() + 1) as u8);
    out.put_bytes(0, 6);
    out.put_u32_le(g.ext_capabilities);
    out.put_slice(part2);
    out.put_u8(0);
    out.put_slice(&g.plugin);
    out.put_u8(0);
    out
}

/// The client's HandshakeResponse41.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    /// MariaDB's extended capabilities (0 when the client set `CLIENT_MYSQL`).
    pub ext_capabilities: u32,
    pub max_packet: u32,
    pub collation: u8,
    pub user: Vec<u8>,
    pub auth: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub plugin: Option<Vec<u8>>,
    /// The connect attributes, as their length-encoded key/value list.
    pub attrs: Option<Vec<u8>>,
}

/// Whether a client payload is an SSLRequest (the 32-byte prefix of a
/// HandshakeResponse41 with CLIENT_SSL set): TLS starts right after it.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == 32 && Reader::new(payload).u32().is_ok_and(|c| c & cap::SSL != 0)
}

/// Parse a HandshakeResponse41 payload (pre-4.1 clients are refused).
pub fn parse_handshake_response(payload: &[u8]) -> Result<HandshakeResponse, CodecError> {
    let mut r = Reader::new(payload);
    let capabilities = r.u32()?;
    if capabilities & cap::PROTOCOL_41 == 0 {
        return Err(CodecError::Unsupported {
            protocol: PROTO,
            reason: "pre-4.1 client protocol",
        });
    }
    let max_packet = r.u32()?;
    let collation = r.u8()?;
    r.take(19)?;
    let ext = r.u32()?;
    let ext_capabilities = if capabilities & cap::LONG_PASSWORD == 0 {
        ext
    } else {
        0
    };
    let user = r.nul_str()?.to_vec();
    let auth = if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        r.lenenc_bytes()?
    } else if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = usize::from(r.u8()?);
        r.take(n)?
    } else {
        r.nul_str()?
    }
    .to_vec();
    let database = if capabilities & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
        Some(r.nul_str_or_rest().to_vec())
    } else {
        None
    };
    let plugin = if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
        Some(r.nul_str_or_rest().to_vec())
    } else {
        None
    };
    let attrs = if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
        Some(r.lenenc_bytes()?.to_vec())
    } else {
        None
    };
    Ok(HandshakeResponse {
        capabilities,
        ext_capabilities,
        max_packet,
        collation,
        user,
        auth,
        database,
        plugin,
        attrs,
    })
}

/// Encode a HandshakeResponse41 payload. CONNECT_WITH_DB, PLUGIN_AUTH and
/// CONNECT_ATTRS are set or cleared to match the fields given; the auth data
/// is length-encoded (PLUGIN_AUTH_LENENC_CLIENT_DATA is set).
pub fn encode_handshake_response(h: &HandshakeResponse) -> BytesMut {
    let mut caps = h.capabilities
        | cap::PROTOCOL_41
        | cap::SECURE_CONNECTION
        | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA;
    let set = |caps: &mut u32, flag: u32, on: bool| {
        if on {
            *caps |= flag;
        } else {
            *caps &= !flag;
        }
    };
    set(&mut caps, cap::CONNECT_WITH_DB, h.database.is_some());
    set(&mut caps, cap::PLUGIN_AUTH, h.plugin.is_some());
    set(&mut caps, cap::CONNECT_ATTRS, h.attrs.is_some());
    if h.ext_capabilities != 0 {
        caps &= !cap::LONG_PASSWORD;
    }
    let mut out = BytesMut::with_capacity(128);
    out.put_u32_le(caps);
    out.put_u32_le(h.max_packet);
    out.put_u8(h.collation);
    out.put_bytes(0, 19);
    out.put_u32_le(h.ext_capabilities);
    out.put_slice(&h.user);
    out.put_u8(0);
    put_lenenc_str(&mut out, &h.auth);
    if let Some(db) = &h.database {
        out.put_slice(db);
        out.put_u8(0);
    }
    if let Some(p) = &h.plugin {
        out.put_slice(p);
        out.put_u8(0);
    }
    if let Some(a) = &h.attrs {
        put_lenenc_str(&mut out, a);
    }
    out
}

/// An AuthSwitchRequest payload: `0xFE`, plugin name, auth data (+ NUL).
pub fn encode_auth_switch(plugin: &[u8], nonce: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(2 + plugin.len() + nonce.len() + 1);
    out.put_u8(0xFE);
    out.put_slice(plugin);
    out.put_u8(0);
    out.put_slice(nonce);
    out.put_u8(0);
    out
}

/// Parse an AuthSwitchRequest payload (`0xFE` first): plugin and auth data
/// (the trailing NUL of the nonce dropped).
pub fn parse_auth_switch(payload: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != 0xFE {
        return Err(CodecError::malformed(PROTO, "not an AuthSwitchRequest"));
    }
    let plugin = r.nul_str_or_rest().to_vec();
    let data = r.rest();
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    Ok((plugin, data.to_vec()))
}

/// COM_CHANGE_USER, after its command byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeUser {
    pub user: Vec<u8>,
    pub auth: Vec<u8>,
    pub database: Vec<u8>,
    pub collation: Option<u16>,
    pub plugin: Option<Vec<u8>>,
    pub attrs: Option<Vec<u8>>,
}

/// Parse a COM_CHANGE_USER payload (`0x11` first), given the session's capabilities.
pub fn parse_change_user(payload: &[u8], capabilities: u32) -> Result<ChangeUser, CodecError> {
    let mut r = Reader::new(payload);
    r.u8()?;
    let user = r.nul_str()?.to_vec();
    let auth = if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = usize::from(r.u8()?);
        r.take(n)?
    } else {
        r.nul_str()?
    }
    .to_vec();
    let database = r.nul_str_or_rest().to_vec();
    let collation = if r.rest().len() >= 2 {
        Some(r.u16()?)
    } else {
        None
    };
    let plugin = (capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty())
        .then(|| r.nul_str_or_rest().to_vec());
    let attrs = if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
        Some(r.lenenc_bytes()?.to_vec())
    } else {
        None
    };
    Ok(ChangeUser {
        user,
        auth,
        database,
        collation,
        plugin,
        attrs,
    })
}
