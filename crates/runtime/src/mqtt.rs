//! How an MQTT client of tillstream reaches its broker: the URL's scheme picks plaintext
//! (`mqtt://`, `tcp://`) or TLS (`mqtts://`, `ssl://`), and with TLS the client presents its own
//! certificate. The broker takes the client's identity (its MQTT user name) from that certificate,
//! so a client can only ever be the one whose key it holds (`tillctl fleet` issues them).
//!
//! Files come either one by one or from a PKI folder as `tillctl fleet` lays it out (`ca.crt`,
//! `clients/<identity>.crt`, `clients/<identity>.key`), where the identity is the user name the
//! client logs in as. No delivery guarantee; no I/O beyond reading the three files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum MqttTlsError {
    #[error("mqtt url {0:?}: expected mqtt://, tcp://, mqtts:// or ssl:// and host:port")]
    BadUrl(String),
    #[error(
        "mqtt url {url:?} asks for TLS but no {what} is configured (mqtt.tls.{key} or mqtt.tls.dir)"
    )]
    Missing {
        url: String,
        what: &'static str,
        key: &'static str,
    },
    #[error("mqtt tls: cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl crate::Classify for MqttTlsError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Fatal
    }
}

/// TLS of an MQTT client. Used only when the URL's scheme is `mqtts://` (or `ssl://`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MqttTlsConfig {
    /// A PKI folder written by `tillctl fleet` (`ca.crt`, `clients/<user>.crt|key`); the default of
    /// each file below, for the user name the client logs in as. Empty: none.
    pub dir: PathBuf,
    /// The CA that signed the broker's certificate (PEM). Empty: `<dir>/ca.crt`.
    pub ca_file: PathBuf,
    /// This client's certificate (PEM). Empty: `<dir>/clients/<user>.crt`.
    pub cert_file: PathBuf,
    /// This client's private key (PEM, PKCS#8). Empty: `<dir>/clients/<user>.key`.
    pub key_file: PathBuf,
}

/// The three files a TLS client needs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TlsFiles {
    /// The files of `identity` in a PKI folder laid out by `tillctl fleet`.
    pub fn in_pki_dir(dir: &Path, identity: &str) -> TlsFiles {
        TlsFiles {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("clients").join(format!("{identity}.crt")),
            key_file: dir.join("clients").join(format!("{identity}.key")),
        }
    }

    /// The rumqttc transport presenting this client's certificate.
    pub fn transport(&self) -> Result<rumqttc::Transport, MqttTlsError> {
        // The workspace links rustls with two crypto providers (reqwest brings ring), so rustls
        // cannot pick one by itself: the process default is aws-lc-rs (rumqttc's own choice).
        // Installing it again is refused harmlessly.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| MqttTlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Ok(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca: read(&self.ca_file)?,
                alpn: None,
                client_auth: Some((read(&self.cert_file)?, read(&self.key_file)?)),
            },
        ))
    }
}

/// The transport of a client logging in as `identity`: TLS with its certificate from the PKI
/// folder `pki_dir`, or plaintext when there is none (the simulator, the oracle, test clients).
pub fn transport_in(
    pki_dir: Option<&Path>,
    identity: &str,
) -> Result<rumqttc::Transport, MqttTlsError> {
    match pki_dir {
        Some(dir) => TlsFiles::in_pki_dir(dir, identity).transport(),
        None => Ok(rumqttc::Transport::Tcp),
    }
}

impl MqttTlsConfig {
    /// The files for a client logging in as `identity`: each configured one, else the PKI folder's.
    pub fn files(&self, url: &str, identity: &str) -> Result<TlsFiles, MqttTlsError> {
        let from_dir =
            (!self.dir.as_os_str().is_empty()).then(|| TlsFiles::in_pki_dir(&self.dir, identity));
        let pick = |set: &PathBuf, dir: Option<&PathBuf>, what: &'static str, key: &'static str| {
            if !set.as_os_str().is_empty() {
                Ok(set.clone())
            } else {
                dir.cloned().ok_or_else(|| MqttTlsError::Missing {
                    url: url.to_string(),
                    what,
                    key,
                })
            }
        };
        Ok(TlsFiles {
            ca_file: pick(
                &self.ca_file,
                from_dir.as_ref().map(|f| &f.ca_file),
                "CA certificate",
                "ca_file",
            )?,
            cert_file: pick(
                &self.cert_file,
                from_dir.as_ref().map(|f| &f.cert_file),
                "client certificate",
                "cert_file",
            )?,
            key_file: pick(
                &self.key_file,
                from_dir.as_ref().map(|f| &f.key_file),
                "client key",
                "key_file",
            )?,
        })
    }
}

/// Where an MQTT URL points and whether it asks for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddress {
    /// Parses `mqtt://host:port`, `tcp://host:port`, `mqtts://host:port`, `ssl://host:port` or
    /// `host:port` (plaintext).
    pub fn parse(url: &str) -> Result<BrokerAddress, MqttTlsError> {
        let bad = || MqttTlsError::BadUrl(url.to_string());
        let (tls, rest) = match url.split_once("://") {
            Some(("mqtt" | "tcp", r)) => (false, r),
            Some(("mqtts" | "ssl", r)) => (true, r),
            Some(_) => return Err(bad()),
            None => (false, url),
        };
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(BrokerAddress {
            host: host.to_string(),
            port: port.parse().map_err(|_| bad())?,
            tls,
        })
    }

    /// The transport for this address: TCP, or TLS with `identity`'s certificate from `tls`.
    pub fn transport(
        &self,
        url: &str,
        tls: &MqttTlsConfig,
        identity: &str,
    ) -> Result<rumqttc::Transport, MqttTlsError> {
        if self.tls {
            tls.files(url, identity)?.transport()
        } else {
            Ok(rumqttc::Transport::Tcp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_plaintext_or_tls() {
        let a = BrokerAddress::parse("mqtts://127.0.0.1:8883").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls), ("127.0.0.1", 8883, true));
        let a = BrokerAddress::parse("ssl://broker:1").unwrap();
        assert!(a.tls);
        for plain in ["mqtt://h:1883", "tcp://h:1883", "h:1883"] {
            assert!(!BrokerAddress::parse(plain).unwrap().tls, "{plain}");
        }
        let a = BrokerAddress::parse("127.0.0.1:99").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 99));
        for bad in [
            "http://h:1",
            "mqtts://h",
            "mqtt://nohost",
            "mqtt://:1",
            "mqtt://h:x",
        ] {
            assert!(BrokerAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_come_from_the_pki_folder_unless_set_one_by_one() {
        let url = "mqtts://h:1";
        let c = MqttTlsConfig {
            dir: "/pki".into(),
            key_file: "/elsewhere/k.pem".into(),
            ..Default::default()
        };
        let f = c.files(url, "bridge").unwrap();
        assert_eq!(f.ca_file, PathBuf::from("/pki/ca.crt"));
        assert_eq!(f.cert_file, PathBuf::from("/pki/clients/bridge.crt"));
        assert_eq!(f.key_file, PathBuf::from("/elsewhere/k.pem"));
        let none = MqttTlsConfig::default().files(url, "bridge").unwrap_err();
        assert!(none.to_string().contains("CA certificate"), "{none}");
        // Plaintext needs none of it.
        let a = BrokerAddress::parse("mqtt://h:1").unwrap();
        assert!(matches!(
            a.transport("mqtt://h:1", &MqttTlsConfig::default(), "x"),
            Ok(rumqttc::Transport::Tcp)
        ));
    }
}
