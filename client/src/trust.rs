//! Server authentication: which certificate a client accepts, and the rustls/quinn client
//! configuration built from it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::ClientError;

/// Which server certificate a client accepts.
#[derive(Clone)]
pub enum Trust {
    /// Trust exactly this DER certificate (for example the server's dev certificate at
    /// `<data_dir>/cert.der`). Equivalent to pinning its SHA-256 fingerprint: the server name
    /// and validity dates are not checked, the handshake signature is.
    Certificate(CertificateDer<'static>),
    /// Trust the end-entity certificate whose DER has this SHA-256 hash (pinned).
    Fingerprint([u8; 32]),
    /// Ordinary WebPKI validation (chain, name, dates) against these roots, for servers with
    /// certificates issued by a certificate authority.
    Roots(Arc<RootCertStore>),
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::Certificate(der) => f
                .debug_tuple("Certificate")
                .field(&hex(&fingerprint(der)))
                .finish(),
            Trust::Fingerprint(fp) => f.debug_tuple("Fingerprint").field(&hex(fp)).finish(),
            Trust::Roots(roots) => f.debug_tuple("Roots").field(&roots.len()).finish(),
        }
    }
}

impl Trust {
    /// Reads a DER certificate file (such as the server's `cert.der`) and trusts exactly it.
    pub fn certificate_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let der = std::fs::read(path).map_err(|source| ClientError::File {
            path: path.to_path_buf(),
            source,
        })?;
        if der.is_empty() {
            return Err(ClientError::Config(format!(
                "{}: empty certificate file",
                path.display()
            )));
        }
        Ok(Trust::Certificate(CertificateDer::from(der)))
    }

    /// Parses a fingerprint given as 64 hex digits (`:` separators allowed).
    pub fn parse_fingerprint(text: &str) -> Result<Self, ClientError> {
        parse_hex32(text)
            .map(Trust::Fingerprint)
            .ok_or_else(|| ClientError::Config(format!("fingerprint {text:?}: want 64 hex digits")))
    }

    /// The rustls certificate verifier implementing this trust decision.
    pub fn verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, ClientError> {
        let algorithms = provider.signature_verification_algorithms;
        Ok(match self {
            Trust::Certificate(der) => {
                Arc::new(PinnedCertVerifier::new(fingerprint(der), algorithms))
            }
            Trust::Fingerprint(fp) => Arc::new(PinnedCertVerifier::new(*fp, algorithms)),
            Trust::Roots(roots) => rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots.clone(),
                provider.clone(),
            )
            .build()
            .map_err(|e| ClientError::Config(format!("certificate roots: {e}")))?,
        })
    }
}

/// SHA-256 of a certificate's DER bytes (what [`Trust::Fingerprint`] pins).
pub fn fingerprint(der: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(der.as_ref()).into()
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Accepts exactly one end-entity certificate, identified by the SHA-256 of its DER, and
/// checks the handshake signatures against it with the crypto provider's algorithms.
///
/// Names and validity dates are deliberately not checked: the pin already says which
/// certificate is the server, and dev certificates are self-signed.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertVerifier {
    /// A verifier pinning `fingerprint`, verifying signatures with `algorithms`
    /// (normally `provider.signature_verification_algorithms`).
    pub fn new(fingerprint: [u8; 32], algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self {
            fingerprint,
            algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Not a secret comparison: the fingerprint is public, the certificate too.
        if fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered; kept correct anyway.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls client configuration: ring provider, TLS 1.3 only, ALPN
/// [`zonehost_protocol::ALPN`], server verified per `trust`.
pub fn rustls_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = trust.verifier(&provider)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![zonehost_protocol::ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_cert() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("generate")
    }

    fn verifier_for(der: &CertificateDer<'_>) -> PinnedCertVerifier {
        let provider = rustls::crypto::ring::default_provider();
        PinnedCertVerifier::new(fingerprint(der), provider.signature_verification_algorithms)
    }

    fn name() -> ServerName<'static> {
        ServerName::try_from("localhost").expect("name")
    }

    #[test]
    fn pinned_cert_is_accepted_and_others_refused() {
        let a = dev_cert();
        let b = dev_cert();
        let v = verifier_for(a.cert.der());
        let now = UnixTime::now();
        assert!(v
            .verify_server_cert(a.cert.der(), &[], &name(), &[], now)
            .is_ok());
        let err = v
            .verify_server_cert(b.cert.der(), &[], &name(), &[], now)
            .expect_err("other certificate");
        assert!(matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        ));
        // The name is not what is pinned.
        let other = ServerName::try_from("example.invalid").expect("name");
        assert!(v
            .verify_server_cert(a.cert.der(), &[], &other, &[], now)
            .is_ok());
    }

    #[test]
    fn fingerprint_parsing() {
        let der = dev_cert().cert.der().clone();
        let fp = fingerprint(&der);
        let text = hex(&fp);
        assert!(matches!(Trust::parse_fingerprint(&text), Ok(Trust::Fingerprint(x)) if x == fp));
        let colons: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
        assert!(
            matches!(Trust::parse_fingerprint(&colons.join(":")), Ok(Trust::Fingerprint(x)) if x == fp)
        );
        assert!(Trust::parse_fingerprint(&text[..62]).is_err());
        assert!(Trust::parse_fingerprint(&format!("{}zz", &text[..62])).is_err());
        assert!(Trust::parse_fingerprint("").is_err());
    }

    /// A full TLS 1.3 handshake in memory: the pinned verifier checks the server's
    /// CertificateVerify signature, and a wrong pin fails the handshake.
    #[test]
    fn tls13_handshake_with_pin() {
        let key = dev_cert();
        let good = Trust::Fingerprint(fingerprint(key.cert.der()));
        assert!(handshake(&key, &good).is_ok());
        let wrong = Trust::Fingerprint([7; 32]);
        assert!(handshake(&key, &wrong).is_err());
        let exact = Trust::Certificate(key.cert.der().clone());
        assert!(handshake(&key, &exact).is_ok());
    }

    /// The ALPN must match: a server without `zonehost/2` is refused.
    #[test]
    fn alpn_is_offered() {
        let key = dev_cert();
        let config = rustls_config(&Trust::Fingerprint(fingerprint(key.cert.der()))).expect("cfg");
        assert_eq!(config.alpn_protocols, vec![b"zonehost/2".to_vec()]);
    }

    fn handshake(
        key: &rcgen::CertifiedKey<rcgen::KeyPair>,
        trust: &Trust,
    ) -> Result<(), rustls::Error> {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
            )
            .expect("server config");
        server_cfg.alpn_protocols = vec![zonehost_protocol::ALPN.to_vec()];
        let client_cfg = rustls_config(trust).expect("client config");
        let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name())?;
        let mut server = rustls::ServerConnection::new(Arc::new(server_cfg))?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).expect("write");
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).expect("read");
            }
            server.process_new_packets()?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).expect("write");
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).expect("read");
            }
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                assert_eq!(client.alpn_protocol(), Some(zonehost_protocol::ALPN));
                return Ok(());
            }
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }
}
