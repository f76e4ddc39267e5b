//! The fleet's certificate authority in memory: its certificate and key, the certificates it
//! issues (devices and services authenticate as clients, the broker as a server) and its
//! revocation list. Pure: no files (`pki_dir.rs` keeps them) and no clock (times are arguments,
//! epoch seconds). Keys are ECDSA P-256.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate authority: {0}")]
    Crypto(#[from] rcgen::Error),
    #[error("certificate authority: time {0} out of range")]
    Time(i64),
    #[error("certificate authority: cannot read a certificate: {0}")]
    Certificate(String),
}

/// A certificate's serial number (positive, 63 bits), shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(pub u64);

impl Serial {
    /// A fresh random serial.
    pub fn random() -> Serial {
        Serial(uuid::Uuid::new_v4().as_u64_pair().0 >> 1)
    }

    pub fn parse(hex: &str) -> Option<Serial> {
        u64::from_str_radix(hex, 16).ok().map(Serial)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A till: client authentication; the broker takes its user name (= device id) from the CN.
    Device,
    /// A service or operator (the bridge, admin): client authentication, like a device.
    Service,
    /// The MQTT broker: server authentication for the given names (DNS names or IP addresses).
    Broker,
}

impl Role {
    /// Its name in a certificate's OU and in the register.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Service => "service",
            Role::Broker => "broker",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        [Role::Device, Role::Service, Role::Broker]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// Whether the certificate `cert_pem` names every one of `names` (DNS names or IP addresses) among
/// its subject alternative names.
pub fn names_cover(cert_pem: &str, names: &[String]) -> Result<bool, CaError> {
    use x509_parser::extensions::GeneralName;
    let bad = |e: String| CaError::Certificate(e);
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let mut has: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => has.push(d.to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => has.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => has.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(names.iter().all(|n| has.iter().any(|h| h == n)))
}

/// A certificate just issued, with its private key (shown or stored once, then never again).
#[derive(Debug, Clone)]
pub struct Issued {
    pub serial: Serial,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: i64,
}

/// The CA: its certificate and key.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("key", &"<redacted>").finish()
    }
}

fn at(epoch_s: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(epoch_s).map_err(|_| CaError::Time(epoch_s))
}

const DAY_S: i64 = 86_400;
/// Certificates are valid from an hour before they are issued: a device whose clock runs a little
/// behind must not refuse a certificate issued "in its future".
const BACKDATE_S: i64 = 3_600;

impl Ca {
    /// A new self-signed CA named `name`, valid for `days` from `now`.
    pub fn generate(name: &str, now: i64, days: u32) -> Result<Ca, CaError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.serial_number = Some(SerialNumber::from(Serial::random().0));
        p.not_before = at(now - BACKDATE_S)?;
        p.not_after = at(now + i64::from(days) * DAY_S)?;
        let cert = p.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA as stored (PEM certificate and PKCS#8 key); both are checked by parsing.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM): only for storing it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        Ok(Issuer::from_ca_cert_pem(
            &self.cert_pem,
            KeyPair::from_pem(&self.key_pem)?,
        )?)
    }

    /// Issues a certificate with a new key for `name` (the CN; a device's id), valid `days`.
    /// `server_names` are the broker's DNS names and addresses (ignored for other roles).
    pub fn issue(
        &self,
        name: &str,
        role: Role,
        serial: Serial,
        now: i64,
        days: u32,
        server_names: &[String],
    ) -> Result<Issued, CaError> {
        let key = KeyPair::generate()?;
        let sans = if role == Role::Broker {
            server_names.to_vec()
        } else {
            Vec::new()
        };
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, role.as_str());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![match role {
            Role::Broker => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Device | Role::Service => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(SerialNumber::from(serial.0));
        let not_after = now + i64::from(days) * DAY_S;
        p.not_before = at(now - BACKDATE_S)?;
        p.not_after = at(not_after)?;
        let cert = p.signed_by(&key, &self.issuer()?)?;
        Ok(Issued {
            serial,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// The revocation list of `revoked` (serial, when), numbered `number` (must grow with every
    /// list). Its next update is far away on purpose: the broker refuses every client once the
    /// list it holds has expired, so an operator who forgets to re-issue it must not lock out the
    /// fleet; the list is re-issued at every change instead.
    pub fn crl(&self, revoked: &[(Serial, i64)], number: u64, now: i64) -> Result<String, CaError> {
        let params = CertificateRevocationListParams {
            this_update: at(now - BACKDATE_S)?,
            next_update: at(now + 3_650 * DAY_S)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, when)| {
                    Ok(RevokedCertParams {
                        serial_number: SerialNumber::from(serial.0),
                        revocation_time: at(*when)?,
                        reason_code: Some(RevocationReason::CessationOfOperation),
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_, CaError>>()?,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.pem()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000;

    #[test]
    fn a_ca_issues_device_and_broker_certificates_and_reloads_from_pem() {
        let ca = Ca::generate("tillstream test CA", NOW, 3650).unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let d = again
            .issue("s001-d01", Role::Device, Serial(42), NOW, 730, &[])
            .unwrap();
        assert!(d.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(d.key_pem.contains("PRIVATE KEY"));
        assert_eq!(d.not_after, NOW + 730 * DAY_S);
        let b = ca
            .issue(
                "broker",
                Role::Broker,
                Serial(43),
                NOW,
                730,
                &["127.0.0.1".into(), "localhost".into()],
            )
            .unwrap();
        assert_ne!(b.key_pem, d.key_pem);
        assert!(names_cover(&b.cert_pem, &["localhost".into()]).unwrap());
        assert!(names_cover(&b.cert_pem, &["127.0.0.1".into(), "localhost".into()]).unwrap());
        assert!(!names_cover(&b.cert_pem, &["mosquitto".into()]).unwrap());
        let crl = ca.crl(&[(Serial(42), NOW)], 7, NOW).unwrap();
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"));
    }

    #[test]
    fn serials_are_positive_and_round_trip_as_hex() {
        for _ in 0..100 {
            let s = Serial::random();
            assert!(s.0 < 1 << 63);
            assert_eq!(Serial::parse(&s.to_string()), Some(s));
        }
    }
}
