//! The TLS a cluster speaks to its hosts (`clusters[].tls`), with rustls
//! (ring provider): the server verified against a CA file or the system's
//! roots (read with `rustls-native-certs`), SNI, a client certificate
//! (mutual TLS), ALPN, the oldest version accepted. Built once per config
//! snapshot; `Cluster` does the handshakes.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{Problem, UpstreamProtocol, UpstreamTls};

/// A cluster's TLS to its hosts, compiled once per config snapshot.
pub struct ClientTls {
    pub connector: tokio_rustls::TlsConnector,
    /// The name sent (SNI) and verified; `None`: each host's IP address
    /// (verified against the certificate's IP addresses; no SNI is sent).
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// The name host `addr`'s certificate is checked against.
    pub fn server_name(&self, addr: std::net::SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }
}

/// Build the TLS client config of cluster `cluster`'s `tls` block (`http`:
/// the HTTP version the cluster speaks, which its ALPN must agree with);
/// files are relative to `base`.
pub fn client(
    cluster: &str,
    tls: &UpstreamTls,
    http: Option<UpstreamProtocol>,
    base: &Path,
) -> Result<ClientTls, Problem> {
    let problem = |at: serde_saphyr::Location, f: &str, message: String, hint: &str| Problem {
        line: at.line(),
        column: at.column(),
        field: format!("clusters[{cluster}].tls.{f}"),
        message,
        hint: Some(hint.into()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match &tls.min_version {
        None => rustls::ALL_VERSIONS,
        Some(v) if v.value == "1.2" => rustls::ALL_VERSIONS,
        Some(v) if v.value == "1.3" => &[&rustls::version::TLS13],
        Some(v) => {
            return Err(problem(
                v.referenced,
                "min_version",
                format!("`{}` is not a TLS version this gateway speaks", v.value),
                "use \"1.2\" or \"1.3\"",
            ));
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            problem(
                serde_saphyr::Location::UNKNOWN,
                "min_version",
                format!("TLS setup failed: {e}"),
                "report this",
            )
        })?;
    let builder = if tls.skips_verify() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                let ca_path = base.join(&ca.value);
                let cas = CertificateDer::pem_file_iter(&ca_path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        problem(
                            ca.referenced,
                            "ca",
                            format!(
                                "cannot read CA certificates from {}: {e}",
                                ca_path.display()
                            ),
                            "a PEM file of the CAs that sign the hosts' certificates",
                        )
                    })?;
                let (added, _) = roots.add_parsable_certificates(cas);
                if added == 0 {
                    return Err(problem(
                        ca.referenced,
                        "ca",
                        format!("{} holds no usable CA certificate", ca_path.display()),
                        "a PEM file with `-----BEGIN CERTIFICATE-----` blocks",
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(problem(
                        serde_saphyr::Location::UNKNOWN,
                        "ca",
                        "no `ca` is set and the system has no root certificates".into(),
                        "install the ca-certificates package (or set SSL_CERT_FILE), or set `ca: FILE`",
                    ));
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&tls.cert, &tls.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let cert_path = base.join(&cert.value);
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    problem(
                        cert.referenced,
                        "cert",
                        format!("cannot read certificates from {}: {e}", cert_path.display()),
                        "a PEM file with the client certificate chain, leaf first",
                    )
                })?;
            if certs.is_empty() {
                return Err(problem(
                    cert.referenced,
                    "cert",
                    format!("{} holds no certificate", cert_path.display()),
                    "a PEM file with `-----BEGIN CERTIFICATE-----` blocks",
                ));
            }
            let key_path = base.join(&key.value);
            let private = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
                problem(
                    key.referenced,
                    "key",
                    format!("cannot read a private key from {}: {e}", key_path.display()),
                    "a PEM file with one PKCS#8, PKCS#1 or SEC1 private key",
                )
            })?;
            builder.with_client_auth_cert(certs, private).map_err(|e| {
                problem(
                    key.referenced,
                    "key",
                    format!("the key does not fit the certificate: {e}"),
                    "use the key the client certificate was issued for",
                )
            })?
        }
        (Some(cert), None) => {
            return Err(problem(
                cert.referenced,
                "key",
                "a client `cert` is set without its `key`".into(),
                "add `key: FILE` (the certificate's private key)",
            ));
        }
        (None, Some(key)) => {
            return Err(problem(
                key.referenced,
                "cert",
                "a client `key` is set without its `cert`".into(),
                "add `cert: FILE` (the client certificate chain)",
            ));
        }
    };
    let offers = |name: &str| tls.alpn.iter().any(|p| p.value == name);
    let at = tls
        .alpn
        .first()
        .map_or(serde_saphyr::Location::UNKNOWN, |p| p.referenced);
    match http {
        _ if tls.alpn.is_empty() => {}
        Some(UpstreamProtocol::Http2) if !offers("h2") => {
            return Err(problem(
                at,
                "alpn",
                "the cluster speaks HTTP/2 (`protocol: http2`) but does not offer `h2`".into(),
                "add `h2` to `alpn`, or drop `alpn`",
            ));
        }
        Some(UpstreamProtocol::Http1) if !offers("http/1.1") => {
            return Err(problem(
                at,
                "alpn",
                "the cluster speaks HTTP/1.1 (`protocol: http1`) but does not offer `http/1.1`"
                    .into(),
                "add `http/1.1` to `alpn`, or drop `alpn`",
            ));
        }
        None if offers("h2") && offers("http/1.1") => {
            return Err(problem(
                at,
                "alpn",
                "both `h2` and `http/1.1` are offered, and the cluster does not say which one it speaks"
                    .into(),
                "set the cluster's `protocol` (http1 or http2): the server's choice must match it",
            ));
        }
        _ => {}
    }
    config.alpn_protocols = tls
        .alpn
        .iter()
        .map(|p| p.value.as_bytes().to_vec())
        .collect();
    // HTTP/2 over TLS is negotiated with ALPN (RFC 9113 §3.2): a cluster
    // speaking it offers `h2` unless told otherwise.
    if tls.alpn.is_empty() && http == Some(UpstreamProtocol::Http2) {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let server_name = match &tls.sni {
        None => None,
        Some(sni) => Some(ServerName::try_from(sni.value.clone()).map_err(|e| {
            problem(
                sni.referenced,
                "sni",
                format!("`{}` is not a server name: {e}", sni.value),
                "a DNS name such as `api.internal`, or an IP address",
            )
        })?),
    };
    Ok(ClientTls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// `insecure_skip_verify`: accepts any certificate (the handshake
/// signatures are still checked, so the key exchange stays honest).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
