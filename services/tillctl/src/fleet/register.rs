//! The register of every certificate the fleet's CA issued (`issued.csv` in the PKI folder): whose
//! it is, until when it is valid, and whether it is active, retiring (superseded by a rotation,
//! still accepted until its grace period ends) or revoked. The revocation list is derived from it.
//! Pure: parsing, formatting and the state changes; no files, no clock.

use super::ca::{Role, Serial};

/// Where a certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// In use.
    Active,
    /// Superseded by a rotation; accepted until `retire_at`, then revoked by the next command.
    Retiring { retire_at: i64 },
    /// On the revocation list since `at`.
    Revoked { at: i64 },
}

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub serial: Serial,
    /// The CN: a device id, a service's user name, or `broker`.
    pub name: String,
    pub role: Role,
    pub issued_at: i64,
    pub not_after: i64,
    pub state: CertState,
}

#[derive(Debug, thiserror::Error)]
#[error("issued.csv line {line}: {detail}")]
pub struct RegisterError {
    pub line: usize,
    pub detail: String,
}

const HEADER: &str = "serial,name,role,issued_at,not_after,state,state_at";

/// Every certificate issued, in issue order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Register {
    pub entries: Vec<Entry>,
}

impl Register {
    pub fn parse(text: &str) -> Result<Register, RegisterError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line == HEADER {
                continue;
            }
            let err = |detail: &str| RegisterError {
                line: i + 1,
                detail: format!("{detail}: {line:?}"),
            };
            let f: Vec<&str> = line.split(',').collect();
            let [serial, name, role, issued_at, not_after, state, state_at] = f[..] else {
                return Err(err("expected 7 fields"));
            };
            let num = |s: &str| s.parse::<i64>().map_err(|_| err("bad number"));
            let state = match state {
                "active" => CertState::Active,
                "retiring" => CertState::Retiring {
                    retire_at: num(state_at)?,
                },
                "revoked" => CertState::Revoked { at: num(state_at)? },
                _ => return Err(err("bad state")),
            };
            entries.push(Entry {
                serial: Serial::parse(serial).ok_or_else(|| err("bad serial"))?,
                name: name.to_string(),
                role: Role::parse(role).ok_or_else(|| err("bad role"))?,
                issued_at: num(issued_at)?,
                not_after: num(not_after)?,
                state,
            });
        }
        Ok(Register { entries })
    }

    pub fn to_csv(&self) -> String {
        let mut s = format!("{HEADER}\n");
        for e in &self.entries {
            let (state, at) = match e.state {
                CertState::Active => ("active", String::new()),
                CertState::Retiring { retire_at } => ("retiring", retire_at.to_string()),
                CertState::Revoked { at } => ("revoked", at.to_string()),
            };
            s.push_str(&format!(
                "{},{},{},{},{},{state},{at}\n",
                e.serial,
                e.name,
                e.role.as_str(),
                e.issued_at,
                e.not_after
            ));
        }
        s
    }

    /// Whether `name` has a certificate in use (active, not expired at `now`).
    pub fn has_active(&self, name: &str, now: i64) -> bool {
        self.entries
            .iter()
            .any(|e| e.name == name && e.state == CertState::Active && e.not_after > now)
    }

    /// `name`'s certificates still accepted (active or retiring).
    pub fn accepted(&self, name: &str) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| e.name == name && !matches!(e.state, CertState::Revoked { .. }))
    }

    pub fn add(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// A rotation: `name`'s active certificates retire at `retire_at` (the new one is added
    /// separately). Returns how many.
    pub fn retire_active(&mut self, name: &str, retire_at: i64) -> usize {
        let mut n = 0;
        for e in &mut self.entries {
            if e.name == name && e.state == CertState::Active {
                e.state = CertState::Retiring { retire_at };
                n += 1;
            }
        }
        n
    }

    /// Revokes every certificate of `name` still accepted (or only `serial`). Returns how many.
    pub fn revoke(&mut self, name: &str, serial: Option<Serial>, now: i64) -> usize {
        let mut n = 0;
        for e in &mut self.entries {
            if e.name == name
                && serial.is_none_or(|s| s == e.serial)
                && !matches!(e.state, CertState::Revoked { .. })
            {
                e.state = CertState::Revoked { at: now };
                n += 1;
            }
        }
        n
    }

    /// Revokes the retiring certificates whose grace period has ended. Returns how many.
    pub fn retire_due(&mut self, now: i64) -> usize {
        let mut n = 0;
        for e in &mut self.entries {
            if let CertState::Retiring { retire_at } = e.state
                && retire_at <= now
            {
                e.state = CertState::Revoked { at: retire_at };
                n += 1;
            }
        }
        n
    }

    /// The revocation list's content: (serial, revoked at) of every revoked certificate that has
    /// not expired anyway.
    pub fn revoked(&self, now: i64) -> Vec<(Serial, i64)> {
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                CertState::Revoked { at } if e.not_after > now => Some((e.serial, at)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: u64, name: &str) -> Entry {
        Entry {
            serial: Serial(serial),
            name: name.into(),
            role: Role::Device,
            issued_at: 100,
            not_after: 10_000,
            state: CertState::Active,
        }
    }

    #[test]
    fn a_rotation_keeps_both_certificates_until_the_grace_period_ends() {
        let mut r = Register::default();
        r.add(entry(1, "d1"));
        assert_eq!(r.retire_active("d1", 500), 1);
        r.add(entry(2, "d1"));
        assert_eq!(r.accepted("d1").count(), 2, "old and new during the grace");
        assert!(r.has_active("d1", 200));
        assert_eq!(r.retire_due(499), 0);
        assert!(r.revoked(499).is_empty());
        assert_eq!(r.retire_due(500), 1);
        assert_eq!(r.revoked(600), vec![(Serial(1), 500)]);
        assert_eq!(
            r.accepted("d1").map(|e| e.serial).collect::<Vec<_>>(),
            [Serial(2)]
        );
    }

    #[test]
    fn revoking_a_device_revokes_every_certificate_it_still_has() {
        let mut r = Register::default();
        r.add(entry(1, "d1"));
        r.retire_active("d1", 900);
        r.add(entry(2, "d1"));
        r.add(entry(3, "d2"));
        assert_eq!(r.revoke("d1", None, 300), 2);
        assert_eq!(r.accepted("d1").count(), 0);
        assert!(r.has_active("d2", 300));
        // An expired certificate needs no place on the list.
        assert_eq!(r.revoked(300).len(), 2);
        assert!(r.revoked(20_000).is_empty());
    }

    #[test]
    fn the_register_round_trips_through_its_csv() {
        let mut r = Register::default();
        r.add(entry(0xabc, "d1"));
        r.retire_active("d1", 77);
        r.add(entry(0xdef, "d1"));
        r.add(Entry {
            role: Role::Broker,
            ..entry(5, "broker")
        });
        r.revoke("broker", None, 88);
        let text = r.to_csv();
        assert_eq!(Register::parse(&text).unwrap(), r);
        assert!(Register::parse("zz,d1,device,1,2,active,\n").is_err());
        assert!(Register::parse("01,d1,device,1,2,lost,\n").is_err());
    }
}
