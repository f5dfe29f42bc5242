//! TLS termination with rustls (ring provider): certificates and keys from
//! PEM files, ALPN, and optional client-certificate verification. (The TLS
//! clusters speak to their hosts is `upstream::tls`.)

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::{Problem, Tls};

/// Build the acceptor of a listener's `tls` block; files are relative to `base`.
pub fn acceptor(listener: &str, tls: &Tls, base: &Path) -> Result<TlsAcceptor, Problem> {
    let problem =
        |span: &serde_saphyr::Spanned<String>, f: &str, message: String, hint: &str| Problem {
            line: span.referenced.line(),
            column: span.referenced.column(),
            field: format!("listeners[{listener}].tls.{f}"),
            message,
            hint: Some(hint.into()),
        };
    let cert_path = base.join(&tls.cert.value);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            problem(
                &tls.cert,
                "cert",
                format!("cannot read certificates from {}: {e}", cert_path.display()),
                "a PEM file with the certificate chain, leaf first",
            )
        })?;
    if certs.is_empty() {
        return Err(problem(
            &tls.cert,
            "cert",
            format!("{} holds no certificate", cert_path.display()),
            "a PEM file with `-----BEGIN CERTIFICATE-----` blocks",
        ));
    }
    let key_path = base.join(&tls.key.value);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        problem(
            &tls.key,
            "key",
            format!("cannot read a private key from {}: {e}", key_path.display()),
            "a PEM file with one PKCS#8, PKCS#1 or SEC1 private key",
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            problem(
                &tls.cert,
                "cert",
                format!("TLS setup failed: {e}"),
                "report this",
            )
        })?;
    let builder = match &tls.client_ca {
        Some(ca) => {
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
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| {
                problem(
                    ca,
                    "client_ca",
                    format!("cannot verify clients with these CAs: {e}"),
                    "a PEM file of CA certificates",
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        problem(
            &tls.key,
            "key",
            format!("the key does not fit the certificate: {e}"),
            "use the key the certificate was issued for",
        )
    })?;
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
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
