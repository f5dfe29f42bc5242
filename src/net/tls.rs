//! TLS termination with rustls (ring provider): certificates and keys from
//! PEM files, chosen per connection by the client's SNI server name
//! ([`Certificates`], a lock-free lookup in an `ArcSwap`'d table), reloaded
//! when their files change ([`Certificates::watch`]), ALPN, and optional
//! client-certificate verification. (The TLS
//! clusters speak to their hosts is `upstream::tls`.)

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{Problem, Tls};

/// A listener's TLS termination: the rustls acceptor and the certificates
/// its resolver chooses from.
pub struct Terminator {
    pub acceptor: TlsAcceptor,
    pub certificates: Arc<Certificates>,
}

impl Terminator {
    /// Handshake with a client whose first bytes are a ClientHello. With a
    /// default certificate every client is served; without one, a server
    /// name no certificate covers (or none) is refused with a fatal
    /// `unrecognized_name` alert (RFC 6066) before any handshake work.
    pub async fn accept(&self, mut tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        if self.certificates.table.load().default.is_some() {
            return self.acceptor.accept(tcp).await;
        }
        let mut hello = rustls::server::Acceptor::default();
        let mut buf = [0u8; 4096];
        let accepted = loop {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut rest = buf.get(..n).unwrap_or_default();
            let mut done = None;
            while !rest.is_empty() {
                hello.read_tls(&mut rest)?;
                match hello.accept() {
                    Ok(Some(a)) => {
                        done = Some(a);
                        break;
                    }
                    Ok(None) => {}
                    Err((e, mut alert)) => {
                        let mut out = Vec::new();
                        let _ = alert.write(&mut out);
                        let _ = tcp.write_all(&out).await;
                        return Err(std::io::Error::other(e));
                    }
                }
            }
            if let Some(a) = done {
                break a;
            }
        };
        let known = {
            let table = self.certificates.table.load();
            table.pick(accepted.client_hello().server_name()).is_some()
        };
        if !known {
            // A plaintext alert record: fatal (2), unrecognized_name (112).
            let _ = tcp
                .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112])
                .await;
            let _ = tcp.shutdown().await;
            return Err(std::io::Error::other(
                "no certificate for the client's server name",
            ));
        }
        let config = self.acceptor.config().clone();
        tokio_rustls::StartHandshake::from_parts(accepted, tcp)
            .into_stream(config)
            .await
    }
}

/// What a certificate says of itself: read from its DER at load time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject common name.
    pub subject: Option<String>,
    /// DNS names of the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// Serial number, hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: Option<i64>,
}

impl CertInfo {
    /// Read a leaf certificate; fields it does not have stay empty.
    pub fn of(der: &[u8]) -> Self {
        Self {
            subject: subject_common_name(der),
            dns_names: dns_names(der).unwrap_or_default(),
            serial: serial_hex(der).unwrap_or_default(),
            not_after: not_after(der),
        }
    }

    /// Whether the certificate is valid for `name` (a configured server
    /// name, maybe a wildcard) by its subjectAltName DNS names.
    pub fn covers(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.dns_names.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            if d == name {
                return true;
            }
            match (d.strip_prefix("*."), name.split_once('.')) {
                (Some(suffix), Some((label, rest))) => label != "*" && rest == suffix,
                _ => false,
            }
        })
    }
}

/// One certificate and key as served, with where they came from.
pub struct Entry {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
    /// The names it is chosen for (empty: the default certificate).
    pub server_names: Vec<String>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The files' contents as loaded.
    stamp: PairStamp,
}

/// The certificates of one listener, as served now.
pub struct Table {
    exact: HashMap<String, usize>,
    /// `*.b.example` is keyed by `b.example`.
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
    pub entries: Vec<Arc<Entry>>,
}

impl Table {
    fn new(entries: Vec<Arc<Entry>>) -> Self {
        let mut table = Table {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
            entries,
        };
        for (i, e) in table.entries.iter().enumerate() {
            if e.server_names.is_empty() {
                table.default = Some(i);
            }
            for name in &e.server_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => table.wildcard.insert(suffix.to_owned(), i),
                    None => table.exact.insert(name, i),
                };
            }
        }
        table
    }

    /// The certificate for a client's server name: an exact name, else a
    /// wildcard over its first label, else the default.
    pub fn pick(&self, server_name: Option<&str>) -> Option<&Arc<Entry>> {
        let found = server_name.and_then(|name| {
            // rustls hands the name lower-cased; keep others cheap too.
            let lower;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            self.exact.get(name).copied().or_else(|| {
                let (_, suffix) = name.split_once('.')?;
                self.wildcard.get(suffix).copied()
            })
        });
        self.entries.get(found.or(self.default)?)
    }

    /// The default certificate, if there is one.
    pub fn default_entry(&self) -> Option<&Arc<Entry>> {
        self.entries.get(self.default?)
    }
}

/// A listener's certificates: the rustls resolver (one `ArcSwap` load and
/// two hash lookups per handshake), swapped whole when a file changes.
pub struct Certificates {
    listener: String,
    table: ArcSwap<Table>,
    provider: Arc<CryptoProvider>,
    check_interval: Duration,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        table.pick(hello.server_name()).map(|e| e.key.clone())
    }
}

impl Certificates {
    /// The certificates served now.
    pub fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// Look at the certificate and key files every `check_interval` until
    /// `stop`; a pair whose contents changed is loaded and swapped in (new
    /// handshakes get it; connections open keep theirs). A pair that does
    /// not load (unparsable, key not the certificate's) is retried once at
    /// the next look (a rotation may have replaced one file of two), then
    /// logged with the file and counted; the old pair stays.
    pub async fn watch(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.check_interval.is_zero() {
            return;
        }
        // Per entry: the pair that failed to load and whether it was reported.
        let mut failed: Vec<Option<(PairStamp, bool)>> =
            vec![None; self.table.load().entries.len()];
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                // At most ten looks a second, whatever the config says.
                () = tokio::time::sleep(self.check_interval.max(Duration::from_millis(100))) => {}
            }
            let table = self.table.load_full();
            let mut entries = table.entries.clone();
            let mut swapped = false;
            for (i, entry) in table.entries.iter().enumerate() {
                let now = PairStamp::read(&entry.cert_path, &entry.key_path);
                if now == entry.stamp {
                    failed[i] = None;
                    continue;
                }
                let slot = failed.get_mut(i);
                let Some(slot) = slot else { continue };
                if let Some((stamp, true)) = slot
                    && *stamp == now
                {
                    continue; // reported already; wait for the next change
                }
                match load_pair(&entry.cert_path, &entry.key_path, &self.provider) {
                    Ok((key, info, stamp)) => {
                        tracing::info!(
                            listener = %self.listener,
                            cert = %entry.cert_path.display(),
                            serial = %info.serial,
                            not_after = %info.not_after.map(rfc3339).unwrap_or_default(),
                            "TLS certificate reloaded"
                        );
                        metrics::counter!("switchyard_tls_cert_reloads_total", "listener" => self.listener.clone(), "result" => "ok").increment(1);
                        if let Some(e) = entries.get_mut(i) {
                            *e = Arc::new(Entry {
                                key,
                                info,
                                server_names: entry.server_names.clone(),
                                cert_path: entry.cert_path.clone(),
                                key_path: entry.key_path.clone(),
                                stamp,
                            });
                        }
                        *slot = None;
                        swapped = true;
                    }
                    Err(e) => {
                        let retried = matches!(slot, Some((stamp, false)) if *stamp == now);
                        if retried {
                            tracing::error!(
                                listener = %self.listener,
                                file = %e.file.display(),
                                "TLS certificate reload failed, serving the previous certificate: {}",
                                e.message
                            );
                            metrics::counter!("switchyard_tls_cert_reloads_total", "listener" => self.listener.clone(), "result" => "error").increment(1);
                        }
                        *slot = Some((now, retried));
                    }
                }
            }
            if swapped {
                self.table.store(Arc::new(Table::new(entries)));
            }
        }
    }
}

/// A file's contents, as far as telling a change goes: its size and a hash
/// (not its modification time: a touch, or a copy with the same bytes,
/// loads nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    hash: u64,
}

impl FileStamp {
    fn of(bytes: &[u8]) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        FileStamp {
            len: bytes.len() as u64,
            hash: h.finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PairStamp(Option<FileStamp>, Option<FileStamp>);

impl PairStamp {
    fn read(cert: &Path, key: &Path) -> Self {
        let stamp = |p: &Path| std::fs::read(p).ok().map(|b| FileStamp::of(&b));
        PairStamp(stamp(cert), stamp(key))
    }
}

/// Why a certificate or key file did not load.
#[derive(Debug)]
pub struct LoadError {
    pub file: PathBuf,
    /// Which of the pair: `cert` or `key`.
    pub which: &'static str,
    pub message: String,
    pub hint: &'static str,
}

/// Read, parse and match a certificate chain and its key.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, CertInfo, PairStamp), LoadError> {
    let cert_err = |message: String, hint| LoadError {
        file: cert_path.to_owned(),
        which: "cert",
        message,
        hint,
    };
    let key_err = |message: String, hint| LoadError {
        file: key_path.to_owned(),
        which: "key",
        message,
        hint,
    };
    let cert_bytes = std::fs::read(cert_path).map_err(|e| {
        cert_err(
            format!("cannot read {}: {e}", cert_path.display()),
            "a PEM file with the certificate chain, leaf first",
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            cert_err(
                format!("cannot read certificates from {}: {e}", cert_path.display()),
                "a PEM file with the certificate chain, leaf first",
            )
        })?;
    let Some(leaf) = certs.first() else {
        return Err(cert_err(
            format!("{} holds no certificate", cert_path.display()),
            "a PEM file with `-----BEGIN CERTIFICATE-----` blocks",
        ));
    };
    let info = CertInfo::of(leaf.as_ref());
    let key_bytes = std::fs::read(key_path).map_err(|e| {
        key_err(
            format!("cannot read {}: {e}", key_path.display()),
            "a PEM file with one PKCS#8, PKCS#1 or SEC1 private key",
        )
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        key_err(
            format!("cannot read a private key from {}: {e}", key_path.display()),
            "a PEM file with one PKCS#8, PKCS#1 or SEC1 private key",
        )
    })?;
    let certified = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        key_err(
            format!(
                "the key in {} does not fit the certificate in {}: {e}",
                key_path.display(),
                cert_path.display()
            ),
            "use the key the certificate was issued for",
        )
    })?;
    let stamp = PairStamp(
        Some(FileStamp::of(&cert_bytes)),
        Some(FileStamp::of(&key_bytes)),
    );
    Ok((Arc::new(certified), info, stamp))
}

/// Build a listener's TLS termination from its `tls` block; files are
/// relative to `base`. Also returns warnings: a certificate whose
/// subjectAltName does not cover a server name it is listed for.
pub fn terminator(
    listener: &str,
    tls: &Tls,
    base: &Path,
) -> Result<(Terminator, Vec<Problem>), Vec<Problem>> {
    let field = |f: &str| format!("listeners[{listener}].tls.{f}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut entries = Vec::new();
    let pairs = tls
        .cert
        .iter()
        .zip(&tls.key)
        .map(|(c, k)| (String::new(), c, k, &[][..]))
        .chain(tls.certificates.iter().enumerate().map(|(i, e)| {
            (
                format!("certificates[{i}]."),
                &e.cert,
                &e.key,
                &e.server_names[..],
            )
        }));
    for (prefix, cert, key, names) in pairs {
        let (cert_path, key_path) = (base.join(&cert.value), base.join(&key.value));
        match load_pair(&cert_path, &key_path, &provider) {
            Ok((certified, info, stamp)) => {
                for (j, name) in names.iter().enumerate() {
                    if !info.covers(&name.value) {
                        warnings.push(Problem {
                            line: name.referenced.line(),
                            column: name.referenced.column(),
                            field: field(&format!("{prefix}server_names[{j}]")),
                            message: format!(
                                "the certificate in {} is not valid for `{}` (its DNS names: {})",
                                cert_path.display(),
                                name.value,
                                if info.dns_names.is_empty() {
                                    "none".to_owned()
                                } else {
                                    info.dns_names.join(", ")
                                }
                            ),
                            hint: Some(
                                "clients will reject it for this name: list the name in the certificate's subjectAltName, or serve the name with another certificate"
                                    .into(),
                            ),
                        });
                    }
                }
                entries.push(Arc::new(Entry {
                    key: certified,
                    info,
                    server_names: names.iter().map(|n| n.value.clone()).collect(),
                    cert_path,
                    key_path,
                    stamp,
                }));
            }
            Err(e) => {
                let span = if e.which == "cert" { cert } else { key };
                problems.push(Problem {
                    line: span.referenced.line(),
                    column: span.referenced.column(),
                    field: field(&format!("{prefix}{}", e.which)),
                    message: e.message,
                    hint: Some(e.hint.into()),
                });
            }
        }
    }
    let problem =
        |span: &serde_saphyr::Spanned<String>, f: &str, message: String, hint: &str| Problem {
            line: span.referenced.line(),
            column: span.referenced.column(),
            field: field(f),
            message,
            hint: Some(hint.into()),
        };
    let builder = match rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            problems.push(Problem {
                line: 0,
                column: 0,
                field: field("cert"),
                message: format!("TLS setup failed: {e}"),
                hint: Some("report this".into()),
            });
            return Err(problems);
        }
    };
    let builder = match &tls.client_ca {
        Some(ca) => {
            let verifier = (|| {
                let ca_path = base.join(&ca.value);
                let mut roots = RootCertStore::empty();
                let cas = CertificateDer::pem_file_iter(&ca_path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        problem(
                            ca,
                            "client_ca",
                            format!(
                                "cannot read CA certificates from {}: {e}",
                                ca_path.display()
                            ),
                            "a PEM file of the CAs that sign client certificates",
                        )
                    })?;
                for c in cas {
                    roots.add(c).map_err(|e| {
                        problem(
                            ca,
                            "client_ca",
                            format!("bad CA certificate: {e}"),
                            "a PEM CA certificate",
                        )
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = if tls.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                verifier.build().map_err(|e| {
                    problem(
                        ca,
                        "client_ca",
                        format!("cannot verify clients with these CAs: {e}"),
                        "a PEM file of CA certificates",
                    )
                })
            })();
            match verifier {
                Ok(v) => builder.with_client_cert_verifier(v),
                Err(p) => {
                    problems.push(p);
                    return Err(problems);
                }
            }
        }
        None => builder.with_no_client_auth(),
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let certificates = Arc::new(Certificates {
        listener: listener.to_owned(),
        table: ArcSwap::from_pointee(Table::new(entries)),
        provider,
        check_interval: tls.check_interval.get(),
    });
    let mut config = builder.with_cert_resolver(certificates.clone());
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok((
        Terminator {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificates,
        },
        warnings,
    ))
}

/// `2026-12-04T20:00:00Z` for seconds since the Unix epoch.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The TBSCertificate's fields after the version: serial, signature,
/// issuer, validity, subject, subjectPublicKeyInfo, then the optional ones.
fn tbs_fields(der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = tlv(der, 0x30)?;
    let (mut tbs, _) = tlv(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs)?;
    }
    Some(tbs)
}

/// The serial number in hex capitals (`openssl x509 -serial`).
fn serial_hex(der: &[u8]) -> Option<String> {
    let (serial, _) = tlv(tbs_fields(der)?, 0x02)?;
    let serial = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        s => s,
    };
    Some(serial.iter().map(|b| format!("{b:02X}")).collect())
}

/// notAfter of the validity, in seconds since the Unix epoch.
fn not_after(der: &[u8]) -> Option<i64> {
    let mut tbs = tbs_fields(der)?;
    for _ in 0..3 {
        tbs = skip(tbs)?; // serial, signature, issuer
    }
    let (validity, _) = tlv(tbs, 0x30)?;
    let after = skip(validity)?;
    let tag = *after.first()?;
    let (text, _) = tlv(after, tag)?;
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
    let days = days_from_civil(year, num(0..2)?, num(2..4)?);
    Some(days * 86_400 + num(4..6)? * 3600 + num(6..8)? * 60 + num(8..10)?)
}

/// The dNSName entries of the subjectAltName extension (OID 2.5.29.17).
fn dns_names(der: &[u8]) -> Option<Vec<String>> {
    let mut tbs = tbs_fields(der)?;
    for _ in 0..6 {
        tbs = skip(tbs)?; // serial .. subjectPublicKeyInfo
    }
    // [1] issuerUniqueID, [2] subjectUniqueID, then [3] extensions.
    while let Some(&tag) = tbs.first() {
        if tag == 0xa3 {
            break;
        }
        tbs = skip(tbs)?;
    }
    let (explicit, _) = tlv(tbs, 0xa3)?;
    let (mut extensions, _) = tlv(explicit, 0x30)?;
    let mut names = Vec::new();
    while !extensions.is_empty() {
        let (ext, rest) = tlv(extensions, 0x30)?;
        extensions = rest;
        let (oid, mut ext) = tlv(ext, 0x06)?;
        if oid != [0x55, 0x1d, 0x11] {
            continue;
        }
        if ext.first() == Some(&0x01) {
            ext = skip(ext)?; // critical
        }
        let (octets, _) = tlv(ext, 0x04)?;
        let (mut general, _) = tlv(octets, 0x30)?;
        while !general.is_empty() {
            let tag = *general.first()?;
            let (value, rest) = tlv(general, tag)?;
            general = rest;
            if tag == 0x82 {
                names.push(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    Some(names)
}

/// The subject common name (OID 2.5.4.3) of a DER certificate.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serial,
    //   signature, issuer, validity, subject, ... }, ... }
    let (cert, _) = tlv(der, 0x30)?;
    let (mut tbs, _) = tlv(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs)?;
    }
    for _ in 0..4 {
        tbs = skip(tbs)?; // serial, signature, issuer, validity
    }
    let (mut subject, _) = tlv(tbs, 0x30)?;
    let mut cn = None;
    while !subject.is_empty() {
        let (set, rest) = tlv(subject, 0x31)?;
        subject = rest;
        let (attr, _) = tlv(set, 0x30)?;
        let (oid, value) = tlv(attr, 0x06)?;
        if oid == [0x55, 0x04, 0x03] {
            let tag = *value.first()?;
            let (text, _) = tlv(value, tag)?;
            cn = Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    cn
}

/// Split one DER element with tag `tag` off `input`: (contents, rest).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*input.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let contents = input.get(header..header.checked_add(len)?)?;
    Some((contents, input.get(header + len..)?))
}

fn skip(input: &[u8]) -> Option<&[u8]> {
    let tag = *input.first()?;
    tlv(input, tag).map(|(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -newkey ec ... -subj /CN=a.example -set_serial
    /// 0x0ABCDEF123 -days 3650 -addext subjectAltName=DNS:a.example,DNS:*.b.example,IP:127.0.0.1`
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBljCCAT2gAwIBAgIFCrze8SMwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJYS5l
eGFtcGxlMB4XDTI2MTIwNDIwNTgxNloXDTM2MTIwMTIwNTgxNlowFDESMBAGA1UE
AwwJYS5leGFtcGxlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEP92BuWXlZB8P
gtHHK3Bf39UrMSoqoqG2DRe1Kf4NNuUZsO7sE1xpRQEK5+fK7JtFR773DY1cbPLo
10KOrp45EaN8MHowHQYDVR0OBBYEFO8EWoWWmLL+bDfwUnOKYUo10ov8MB8GA1Ud
IwQYMBaAFO8EWoWWmLL+bDfwUnOKYUo10ov8MA8GA1UdEwEB/wQFMAMBAf8wJwYD
VR0RBCAwHoIJYS5leGFtcGxlggsqLmIuZXhhbXBsZYcEfwAAATAKBggqhkjOPQQD
AgNHADBEAiBP6ijq9TAItwL9SMw6SNUYC9Cs4aPfp2i0xBBOLos3DgIgTtcG0u37
jywiCYL1dMOC5Mm3KEyaq5F58EfDZSbWrNc=
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQ1WbctriNeI+7mrZ
f2uDpUJA9rKL17cQc9RGR3ReB+uhRANCAAQ/3YG5ZeVkHw+C0ccrcF/f1SsxKiqi
obYNF7Up/g025Rmw7uwTXGlFAQrn58rsm0VHvvcNjVxs8ujXQo6unjkR
-----END PRIVATE KEY-----
";

    fn der() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap()
    }

    #[test]
    fn reads_what_openssl_prints() {
        let info = CertInfo::of(der().as_ref());
        assert_eq!(info.subject.as_deref(), Some("a.example"));
        assert_eq!(info.serial, "0ABCDEF123");
        assert_eq!(info.dns_names, ["a.example", "*.b.example"]);
        // `date -d "Dec  1 20:58:16 2036 GMT" +%s`
        assert_eq!(info.not_after, Some(2_111_777_896));
        assert_eq!(rfc3339(2_111_777_896), "2036-12-01T20:58:16Z");
    }

    #[test]
    fn garbage_and_truncated_certificates_read_as_empty_without_panicking() {
        let der = der();
        let bytes = der.as_ref();
        for n in 0..bytes.len() {
            let _ = CertInfo::of(&bytes[..n]);
        }
        assert_eq!(
            CertInfo::of(b"\x30\x84\xff\xff\xff\xff"),
            CertInfo::default()
        );
    }

    #[test]
    fn san_coverage_follows_wildcards_one_label_deep() {
        let info = CertInfo::of(der().as_ref());
        for name in ["a.example", "A.Example", "x.b.example", "*.b.example"] {
            assert!(info.covers(name), "{name}");
        }
        for name in [
            "b.example",
            "y.x.b.example",
            "c.example",
            "*.example",
            "127.0.0.1",
        ] {
            assert!(!info.covers(name), "{name}");
        }
    }

    fn entry(names: &[&str]) -> Arc<Entry> {
        let provider = rustls::crypto::ring::default_provider();
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let certified = CertifiedKey::from_der(vec![der()], key, &provider).unwrap();
        Arc::new(Entry {
            key: Arc::new(certified),
            info: CertInfo::default(),
            server_names: names.iter().map(|n| (*n).to_owned()).collect(),
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            stamp: PairStamp(None, None),
        })
    }

    fn picked(table: &Table, name: Option<&str>) -> Option<Vec<String>> {
        table.pick(name).map(|e| e.server_names.clone())
    }

    #[test]
    fn exact_names_before_wildcards_before_the_default() {
        let table = Table::new(vec![
            entry(&[]),
            entry(&["*.b.example"]),
            entry(&["x.b.example", "a.example"]),
        ]);
        let exact = Some(vec!["x.b.example".to_owned(), "a.example".to_owned()]);
        let wild = Some(vec!["*.b.example".to_owned()]);
        let default = Some(Vec::new());
        assert_eq!(picked(&table, Some("x.b.example")), exact);
        assert_eq!(picked(&table, Some("A.EXAMPLE")), exact);
        assert_eq!(picked(&table, Some("y.b.example")), wild);
        assert_eq!(picked(&table, Some("z.y.b.example")), default);
        assert_eq!(picked(&table, Some("b.example")), default);
        assert_eq!(picked(&table, None), default);

        let no_default = Table::new(vec![entry(&["*.b.example"])]);
        assert_eq!(picked(&no_default, Some("y.b.example")), wild);
        assert_eq!(picked(&no_default, Some("a.example")), None);
        assert_eq!(picked(&no_default, None), None);
    }

    #[test]
    fn a_key_that_is_not_the_certificate_s_names_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, CERT).unwrap();
        // Another P-256 key (from `openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256`).
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgKaXa6QdMc4wlfBod
fJJ/q64yQJRkWq12fTg0YE6fNvmhRANCAARfkLVOfdF9XrysoScJbpzdwkmxt+A2
CyK2kx4BQSG2ACJhHp5GXJ/cjrX+xNhjiV469tGG9tH4AI+uIuGEU8Vb
-----END PRIVATE KEY-----
",
        )
        .unwrap();
        let provider = rustls::crypto::ring::default_provider();
        match load_pair(&cert, &key, &provider) {
            Err(e) => {
                assert_eq!((e.which, e.file.as_path()), ("key", key.as_path()));
            }
            Ok(_) => panic!("a foreign key must not load"),
        }
        std::fs::write(&key, KEY).unwrap();
        let (_, info, _) = load_pair(&cert, &key, &provider).unwrap();
        assert_eq!(info.serial, "0ABCDEF123");
        std::fs::write(&cert, "not PEM").unwrap();
        let e = load_pair(&cert, &key, &provider).err().unwrap();
        assert_eq!((e.which, e.file.as_path()), ("cert", cert.as_path()));
    }
}
