//! Dev certificate and dev token-signing key: created in the data directory on first run,
//! reused afterwards. Production deployments point `cert_file`/`key_file` at real files and
//! list their account backend's verifying keys.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// File name of the dev certificate (DER) in the data directory.
pub const DEV_CERT_FILE: &str = "cert.der";
/// File name of the dev certificate's private key (PKCS#8 DER).
pub const DEV_KEY_FILE: &str = "key.der";
/// File name of the dev token-signing key: the 32-byte Ed25519 secret seed.
pub const DEV_SIGNING_KEY_FILE: &str = "dev-signing.key";
/// File name of the QUIC stateless-reset secret in the data directory.
pub const RESET_KEY_FILE: &str = "stateless-reset.key";
/// Length of the stateless-reset secret, bytes.
pub const RESET_KEY_LEN: usize = 64;
/// Key id of the dev signing key in tokens.
pub const DEV_KEY_ID: u32 = 0;

/// Why keys or certificates could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not usable.
    #[error("{path}: {reason}")]
    Invalid {
        /// Path involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("generating dev certificate: {0}")]
    Generate(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file + rename), readable only by the owner.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// A server certificate chain and key, with the SHA-256 fingerprint of the leaf.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
    /// Where the leaf certificate (DER) can be found by clients, when it is the dev cert.
    pub dev_cert_path: Option<PathBuf>,
}

impl ServerIdentity {
    /// Lowercase hex SHA-256 of the leaf certificate DER (what clients pin).
    pub fn fingerprint(&self) -> String {
        self.certs
            .first()
            .map(|c| hex(&Sha256::digest(c.as_ref())))
            .unwrap_or_default()
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex characters into 32 bytes.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Loads the dev certificate from `data_dir`, creating it (SANs `localhost`, `127.0.0.1`,
/// `::1`) on first use.
pub fn load_or_create_dev_identity(data_dir: &Path) -> Result<ServerIdentity, KeyError> {
    fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let cert_path = data_dir.join(DEV_CERT_FILE);
    let key_path = data_dir.join(DEV_KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        write_private(&key_path, &generated.signing_key.serialize_der())?;
        fs::write(&cert_path, generated.cert.der()).map_err(io_err(&cert_path))?;
        fs::write(data_dir.join("cert.pem"), generated.cert.pem()).map_err(io_err(&cert_path))?;
    }
    let cert = fs::read(&cert_path).map_err(io_err(&cert_path))?;
    let key = fs::read(&key_path).map_err(io_err(&key_path))?;
    if cert.is_empty() || key.is_empty() {
        return Err(KeyError::Invalid {
            path: cert_path,
            reason: "empty certificate or key".into(),
        });
    }
    Ok(ServerIdentity {
        certs: vec![CertificateDer::from(cert)],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        dev_cert_path: Some(cert_path),
    })
}

/// Loads a PEM certificate chain and private key.
pub fn load_pem_identity(cert_file: &Path, key_file: &Path) -> Result<ServerIdentity, KeyError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| KeyError::Invalid {
            path: cert_file.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(KeyError::Invalid {
            path: cert_file.into(),
            reason: "no certificate".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| KeyError::Invalid {
        path: key_file.into(),
        reason: e.to_string(),
    })?;
    Ok(ServerIdentity {
        certs,
        key,
        dev_cert_path: None,
    })
}

/// Loads the dev signing key from `data_dir`, creating it on first use.
pub fn load_or_create_signing_key(data_dir: &Path) -> Result<SigningKey, KeyError> {
    fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let path = data_dir.join(DEV_SIGNING_KEY_FILE);
    if !path.exists() {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Generate(e.to_string()))?;
        write_private(&path, &seed)?;
        let public = SigningKey::from_bytes(&seed).verifying_key();
        let pub_path = data_dir.join("dev-signing.pub");
        fs::write(&pub_path, hex(public.as_bytes()) + "\n").map_err(io_err(&pub_path))?;
    }
    read_signing_key(&path)
}

/// Reads the signing key file at `path` (32 raw bytes), creating it with a random key
/// (owner-only permissions) if it does not exist.
pub fn load_or_create_key_file(path: &Path) -> Result<SigningKey, KeyError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    if !path.exists() {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Generate(e.to_string()))?;
        write_private(path, &seed)?;
    }
    read_signing_key(path)
}

/// Reads a signing key file (32 raw bytes).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Invalid {
        path: path.into(),
        reason: format!("expected 32 bytes, found {}", bytes.len()),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The QUIC stateless-reset secret: `file` when given (it must exist and hold
/// [`RESET_KEY_LEN`] bytes: a cluster distributes one file to every server), else
/// `data_dir/`[`RESET_KEY_FILE`], created with random bytes on first use and reused by
/// every later run, so that a restarted server resets the connections of its previous run.
pub fn load_reset_secret(
    file: Option<&Path>,
    data_dir: &Path,
) -> Result<[u8; RESET_KEY_LEN], KeyError> {
    let path = match file {
        Some(path) => path.to_path_buf(),
        None => {
            fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
            let path = data_dir.join(RESET_KEY_FILE);
            if !path.exists() {
                let mut secret = [0u8; RESET_KEY_LEN];
                getrandom::fill(&mut secret).map_err(|e| KeyError::Generate(e.to_string()))?;
                write_private(&path, &secret)?;
            }
            path
        }
    };
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    bytes.as_slice().try_into().map_err(|_| KeyError::Invalid {
        path,
        reason: format!("expected {RESET_KEY_LEN} bytes, found {}", bytes.len()),
    })
}

/// Parses a verifying key from hex.
pub fn parse_verifying_key(hex_key: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&parse_hex32(hex_key)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_files_are_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("zh-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = load_or_create_dev_identity(&dir).expect("create");
        let b = load_or_create_dev_identity(&dir).expect("reuse");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        let k1 = load_or_create_signing_key(&dir).expect("key");
        let k2 = load_or_create_signing_key(&dir).expect("key again");
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        let public = fs::read_to_string(dir.join("dev-signing.pub")).expect("pub");
        assert_eq!(parse_verifying_key(public.trim()), Some(k1.verifying_key()));
        fs::write(dir.join(DEV_SIGNING_KEY_FILE), b"short").expect("write");
        assert!(matches!(
            load_or_create_signing_key(&dir),
            Err(KeyError::Invalid { .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reset_secret_survives_a_restart_and_a_given_file_is_checked() {
        let dir = std::env::temp_dir().join(format!("zh-reset-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = load_reset_secret(None, &dir).expect("create");
        let b = load_reset_secret(None, &dir).expect("reuse");
        assert_eq!(a, b);
        assert_ne!(a, [0u8; RESET_KEY_LEN]);
        let shared = dir.join("cluster-reset.key");
        assert!(matches!(
            load_reset_secret(Some(&shared), &dir),
            Err(KeyError::Io { .. })
        ));
        fs::write(&shared, [7u8; 10]).expect("write");
        assert!(matches!(
            load_reset_secret(Some(&shared), &dir),
            Err(KeyError::Invalid { .. })
        ));
        fs::write(&shared, [7u8; RESET_KEY_LEN]).expect("write");
        assert_eq!(
            load_reset_secret(Some(&shared), &dir).expect("shared"),
            [7u8; RESET_KEY_LEN]
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
