//! `tillctl fleet`: who may connect to the stores' MQTT broker. Every device (and every service)
//! holds its own certificate from the fleet's CA; the broker requires one on its TLS listener and
//! takes the MQTT user name from its CN, so the ACL's `%u` binds each topic to the key holder. Why
//! certificates rather than per-device passwords: mosquitto keeps one password per user, so a
//! password cannot be rotated without a window in which the device is locked out; two certificates
//! of one device are both valid until the old one is revoked, which is the grace period.
//!
//! # Layout
//! - [`acl`]: the devices' part of the broker's ACL, from the fleet file. Pure.
//! - [`ca`]: the CA in memory (issue, revocation list). Pure.
//! - [`register`]: `issued.csv`, every certificate issued and its state. Pure.
//! - this file: the PKI folder on disk and the commands (`init`, `sync`, `add`, `rotate`,
//!   `revoke`, `retire`, `list`), the fleet file's and the ACL's edits and the broker's reload
//!   (SIGHUP).
//!
//! The PKI folder: `ca.crt`, `ca.key` (0600), `broker.crt`, `broker.key` (0600), `issued.csv`,
//! `crl.pem`, and `clients/<name>.crt|key` only for identities whose keys are kept there (the
//! local stack's services and simulated tills; a real till's key is printed once and never
//! stored). Every command first revokes the certificates whose grace period has ended.
//!
//! Why one file (~630 lines, ~140 of them tests): every command is a short sequence over the one
//! locked [`Pki`] (retire what is due, change the register, write the CRL and the ACL, reload the
//! broker), and the tests check those sequences against the folder; the pure parts already live in
//! `acl`, `ca` and `register`.

pub mod acl;
pub mod ca;
pub mod register;

use std::io::Write;
use std::path::{Path, PathBuf};

use ca::{Ca, Issued, Role, Serial};
use register::{CertState, Entry, Register};
use tillstream_store_bridge::fleet::Fleet;

#[derive(Debug, thiserror::Error)]
pub enum FleetCmdError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Register(#[from] register::RegisterError),
    #[error("{0}")]
    Refused(String),
}

type Result<T> = std::result::Result<T, FleetCmdError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FleetCmdError + '_ {
    move |source| FleetCmdError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `path` whole or not at all (a temp file of its own beside it, fsync, rename), with
/// `mode` set on the file itself (a key must never be readable by others, not even for a moment).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Seconds since the epoch.
pub fn now_s() -> i64 {
    tillstream_runtime::clock::now_ms() / 1000
}

/// User names no device may take: the services' and the broker's.
pub const RESERVED_NAMES: [&str; 3] = ["admin", "bridge", "broker"];

/// Validity of what the commands issue, in days.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub ca_days: u32,
    pub cert_days: u32,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            ca_days: 3_650,
            cert_days: 730,
        }
    }
}

/// Takes the PKI folder's lock (blocking): two commands at once would each write the register
/// from their own copy, and a certificate issued by one could vanish from it.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    f.lock().map_err(io(&path))?;
    Ok(f)
}

/// The PKI folder, opened (and locked until dropped).
pub struct Pki {
    dir: PathBuf,
    _lock: std::fs::File,
    ca: Ca,
    register: Register,
    /// What the revocation list on disk lists: it is rewritten only when that changes.
    revoked_written: Vec<(Serial, i64)>,
    /// Whether this command rewrote the revocation list (the broker must then reload).
    crl_changed: bool,
}

impl Pki {
    pub fn ca_file(dir: &Path) -> PathBuf {
        dir.join("ca.crt")
    }

    /// Creates the CA, the broker's certificate and an empty revocation list where missing.
    /// Idempotent: an existing CA is kept (every certificate it issued stays valid).
    pub fn init(dir: &Path, broker_names: &[String], validity: Validity) -> Result<Pki> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let held = lock(dir)?;
        let now = now_s();
        let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if !ca_crt.exists() {
            let ca = Ca::generate("tillstream fleet CA", now, validity.ca_days)?;
            write_atomic(&ca_key, ca.key_pem().as_bytes(), 0o600)?;
            write_atomic(&ca_crt, ca.cert_pem().as_bytes(), 0o644)?;
            write_atomic(
                &dir.join("issued.csv"),
                Register::default().to_csv().as_bytes(),
                0o644,
            )?;
        }
        let mut pki = Pki::open_locked(dir, held)?;
        let broker_crt = dir.join("broker.crt");
        // A broker certificate without every name asked for (an init for compose after one with
        // the defaults) would fail the clients' TLS checks: it is issued again (the CA is the
        // same, so every client still trusts it; the broker reads it at its next start).
        let names_missing =
            broker_crt.exists() && !ca::names_cover(&read(&broker_crt)?, broker_names)?;
        if !broker_crt.exists() || names_missing {
            if let Some(old) = pki
                .register
                .entries
                .iter()
                .rev()
                .find(|e| e.role == Role::Broker && e.state == CertState::Active)
                .map(|e| e.serial)
            {
                pki.register.revoke("broker", Some(old), now);
            }
            let issued = pki.issue("broker", Role::Broker, validity.cert_days, broker_names)?;
            write_atomic(&dir.join("broker.key"), issued.key_pem.as_bytes(), 0o600)?;
            write_atomic(&dir.join("broker.crt"), issued.cert_pem.as_bytes(), 0o644)?;
        }
        if !dir.join("crl.pem").exists() {
            pki.write_crl(now)?;
        }
        pki.save()?;
        Ok(pki)
    }

    pub fn open(dir: &Path) -> Result<Pki> {
        let held = lock(dir)?;
        Pki::open_locked(dir, held)
    }

    fn open_locked(dir: &Path, held: std::fs::File) -> Result<Pki> {
        let ca = Ca::from_pem(&read(&dir.join("ca.crt"))?, &read(&dir.join("ca.key"))?)?;
        let register = Register::parse(&read(&dir.join("issued.csv"))?)?;
        let revoked_written = register.revoked(now_s());
        Ok(Pki {
            dir: dir.to_path_buf(),
            _lock: held,
            ca,
            register,
            revoked_written,
            crl_changed: false,
        })
    }

    pub fn register(&self) -> &Register {
        &self.register
    }

    fn issue(
        &mut self,
        name: &str,
        role: Role,
        days: u32,
        broker_names: &[String],
    ) -> Result<Issued> {
        let now = now_s();
        let issued = self
            .ca
            .issue(name, role, Serial::random(), now, days, broker_names)?;
        self.register.add(Entry {
            serial: issued.serial,
            name: name.to_string(),
            role,
            issued_at: now,
            not_after: issued.not_after,
            state: CertState::Active,
        });
        Ok(issued)
    }

    fn write_crl(&self, now: i64) -> Result<()> {
        // The list's number only grows: seconds since the epoch, bumped past the last one.
        let number_file = self.dir.join("crl.number");
        let last = std::fs::read_to_string(&number_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let number = (now.max(0) as u64).max(last + 1);
        let pem = self.ca.crl(&self.register.revoked(now), number, now)?;
        write_atomic(&self.dir.join("crl.pem"), pem.as_bytes(), 0o644)?;
        write_atomic(&number_file, format!("{number}\n").as_bytes(), 0o644)
    }

    /// Writes the register, and the revocation list when what it lists changed.
    ///
    /// The list first: a revocation the register holds must be on the list, and a command that
    /// fails between the two writes leaves a revocation that is listed but not registered (the
    /// command run again revokes it again), never the other way round.
    pub fn save(&mut self) -> Result<()> {
        let now = now_s();
        let revoked = self.register.revoked(now);
        if revoked != self.revoked_written {
            self.write_crl(now)?;
            self.revoked_written = revoked;
            self.crl_changed = true;
        }
        write_atomic(
            &self.dir.join("issued.csv"),
            self.register.to_csv().as_bytes(),
            0o644,
        )
    }

    /// Whether the revocation list was rewritten since the PKI was opened: the broker must reload.
    pub fn crl_changed(&self) -> bool {
        self.crl_changed
    }

    /// Revokes the retiring certificates whose grace period has ended. Returns how many.
    pub fn retire_due(&mut self) -> usize {
        self.register.retire_due(now_s())
    }

    /// Keeps `issued`'s key and certificate in `clients/` (local stack and simulator only).
    fn keep(&self, name: &str, issued: &Issued) -> Result<()> {
        write_pair(&self.dir.join("clients"), name, issued)
    }

    /// Issues a kept certificate for every device of `fleet_file` and every service of `services`
    /// that has none in use (or whose kept key is gone). For the local stack and the simulator,
    /// which play every device. Returns the names issued.
    pub fn sync_kept(
        &mut self,
        fleet_file: Option<&Path>,
        services: &[String],
        validity: Validity,
    ) -> Result<Vec<String>> {
        let now = now_s();
        let mut wanted: Vec<(String, Role)> = services
            .iter()
            .map(|s| (s.clone(), Role::Service))
            .collect();
        if let Some(path) = fleet_file {
            let fleet = Fleet::parse(&read(path)?)
                .map_err(|e| FleetCmdError::Refused(format!("{}: {e}", path.display())))?;
            let mut devices: Vec<String> = fleet.devices().map(|(d, _)| d.to_string()).collect();
            devices.sort();
            wanted.extend(devices.into_iter().map(|d| (d, Role::Device)));
        }
        let mut issued_names = Vec::new();
        for (name, role) in wanted {
            let kept = self.dir.join("clients").join(format!("{name}.key"));
            if self.register.has_active(&name, now) && kept.exists() {
                continue;
            }
            // A kept key that is gone: its certificate must not stay valid without it.
            self.register.revoke(&name, None, now);
            let issued = self.issue(&name, role, validity.cert_days, &[])?;
            self.keep(&name, &issued)?;
            issued_names.push(name);
        }
        Ok(issued_names)
    }
}

fn check_device_id(device: &str) -> Result<()> {
    if RESERVED_NAMES.contains(&device) {
        return Err(FleetCmdError::Refused(format!(
            "{device:?} is a reserved name (a service's user name)"
        )));
    }
    Ok(())
}

/// `fleet add`: registers `device` to `store` in the fleet file (the bridge picks it up by itself)
/// and issues its first certificate. Refused when the device is already registered.
pub fn add(
    pki: &mut Pki,
    fleet_file: &Path,
    device: &str,
    store: &str,
    days: u32,
) -> Result<Issued> {
    check_device_id(device)?;
    let text = read(fleet_file)?;
    let fleet = Fleet::parse(&text)
        .map_err(|e| FleetCmdError::Refused(format!("{}: {e}", fleet_file.display())))?;
    if let Some(s) = fleet.store_of(device) {
        return Err(FleetCmdError::Refused(format!(
            "{device} is already in the fleet (store {s}); rotate its certificate instead"
        )));
    }
    let mut next = text.clone();
    if !next.is_empty() && !next.ends_with('\n') {
        next.push('\n');
    }
    next.push_str(&format!("{device},{store}\n"));
    Fleet::parse(&next).map_err(|e| FleetCmdError::Refused(format!("{device},{store}: {e}")))?;
    // A device added again after leaving the fleet file by hand: what it had is revoked.
    pki.register.revoke(device, None, now_s());
    let issued = pki.issue(device, Role::Device, days, &[])?;
    // The certificate first: a device in the fleet file without one could never connect, one
    // with a certificate and no fleet entry is dead-lettered `unknown_device` until it is added.
    pki.save()?;
    write_atomic(fleet_file, next.as_bytes(), 0o644)?;
    Ok(issued)
}

/// `fleet rotate`: a new certificate for `device`; the ones it had stay valid for `grace_s`.
pub fn rotate(pki: &mut Pki, device: &str, grace_s: i64, days: u32) -> Result<Issued> {
    let Some(role) = pki.register.accepted(device).map(|e| e.role).next() else {
        return Err(FleetCmdError::Refused(format!(
            "{device} has no certificate in use (add it first)"
        )));
    };
    pki.register.retire_active(device, now_s() + grace_s.max(0));
    let issued = pki.issue(device, role, days, &[])?;
    // A kept identity (local stack) keeps its new key where its clients read it.
    if pki
        .dir
        .join("clients")
        .join(format!("{device}.key"))
        .exists()
    {
        pki.keep(device, &issued)?;
    }
    pki.save()?;
    Ok(issued)
}

/// What `fleet revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub certificates: usize,
    pub removed_from_fleet: bool,
}

/// `fleet revoke`: revokes `device`'s certificates (or one `serial` of them). Revoking them all
/// also removes the device from the fleet file: its queued events are then dead-lettered
/// `unknown_device` rather than counted.
pub fn revoke(
    pki: &mut Pki,
    fleet_file: Option<&Path>,
    device: &str,
    serial: Option<Serial>,
) -> Result<Revoked> {
    let certificates = pki.register.revoke(device, serial, now_s());
    if certificates == 0 {
        return Err(FleetCmdError::Refused(format!(
            "{device} has no certificate to revoke{}",
            serial
                .map(|s| format!(" with serial {s}"))
                .unwrap_or_default()
        )));
    }
    pki.save()?;
    let mut removed_from_fleet = false;
    if serial.is_none()
        && let Some(path) = fleet_file
    {
        let text = read(path)?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| l.split(',').next().map(str::trim) != Some(device))
            .collect();
        removed_from_fleet = kept.len() != text.lines().count();
        if removed_from_fleet {
            write_atomic(path, format!("{}\n", kept.join("\n")).as_bytes(), 0o644)?;
        }
    }
    Ok(Revoked {
        certificates,
        removed_from_fleet,
    })
}

/// Rewrites the devices' part of the broker's ACL from the fleet file. Returns whether it changed
/// (the broker must then reload).
pub fn write_acl(acl_file: &Path, fleet_file: &Path, levels: acl::TopicLevels) -> Result<bool> {
    let fleet = Fleet::parse(&read(fleet_file)?)
        .map_err(|e| FleetCmdError::Refused(format!("{}: {e}", fleet_file.display())))?;
    for (device, _) in fleet.devices() {
        check_device_id(device)
            .map_err(|e| FleetCmdError::Refused(format!("{}: {e}", fleet_file.display())))?;
    }
    let old = std::fs::read_to_string(acl_file).unwrap_or_default();
    let new = acl::render(acl::head(&old), &fleet, levels);
    if new == old {
        return Ok(false);
    }
    write_atomic(acl_file, new.as_bytes(), 0o644)?;
    Ok(true)
}

/// Makes the broker re-read its revocation list and ACL (SIGHUP to the pid in `pid_file`). Returns
/// the pid; `None` when there is no pid file (no broker of ours is running, or none was named).
pub fn reload_broker(pid_file: Option<&Path>) -> Result<Option<u32>> {
    let Some(pid_file) = pid_file.filter(|f| f.exists()) else {
        return Ok(None);
    };
    let pid: u32 = read(pid_file)?
        .trim()
        .parse()
        .map_err(|_| FleetCmdError::Refused(format!("{}: not a pid", pid_file.display())))?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .map_err(io(pid_file))?;
    if !status.success() {
        return Err(FleetCmdError::Refused(format!(
            "kill -HUP {pid} failed (is the broker running?)"
        )));
    }
    Ok(Some(pid))
}

/// Writes `issued` as `<name>.key` (0600) and `<name>.crt` into `dir` (created if missing).
fn write_pair(dir: &Path, name: &str, issued: &Issued) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_atomic(
        &dir.join(format!("{name}.key")),
        issued.key_pem.as_bytes(),
        0o600,
    )?;
    write_atomic(
        &dir.join(format!("{name}.crt")),
        issued.cert_pem.as_bytes(),
        0o644,
    )
}

/// Writes `issued` as `<name>.crt` and `<name>.key` (0600) plus the CA's certificate into `out`.
pub fn write_credentials(pki_dir: &Path, out: &Path, name: &str, issued: &Issued) -> Result<()> {
    write_pair(out, name, issued)?;
    let ca = read(&Pki::ca_file(pki_dir))?;
    write_atomic(&out.join("ca.crt"), ca.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issues_the_broker_certificate_again_when_a_name_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        drop(
            Pki::init(
                dir.path(),
                &names(&["127.0.0.1", "localhost"]),
                Validity::default(),
            )
            .unwrap(),
        );
        let first = std::fs::read_to_string(dir.path().join("broker.crt")).unwrap();
        // The same names again: kept.
        drop(Pki::init(dir.path(), &names(&["localhost"]), Validity::default()).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("broker.crt")).unwrap(),
            first
        );
        // The name compose's clients use: issued again, by the same CA.
        let pki = Pki::init(dir.path(), &names(&["mosquitto"]), Validity::default()).unwrap();
        let second = std::fs::read_to_string(dir.path().join("broker.crt")).unwrap();
        assert_ne!(second, first);
        assert!(ca::names_cover(&second, &names(&["mosquitto"])).unwrap());
        assert_eq!(
            pki.register()
                .entries
                .iter()
                .filter(|e| e.role == Role::Broker && e.state == CertState::Active)
                .count(),
            1
        );
    }

    #[test]
    fn add_rotate_revoke_keep_the_fleet_file_and_the_revocation_list_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let fleet = dir.path().join("devices.csv");
        std::fs::write(&fleet, "device_id,store_id\ns001-d01,s001\n").unwrap();
        let mut pki = Pki::init(&pki_dir, &["127.0.0.1".into()], Validity::default()).unwrap();
        for f in [
            "ca.crt",
            "ca.key",
            "broker.crt",
            "broker.key",
            "crl.pem",
            "issued.csv",
        ] {
            assert!(pki_dir.join(f).exists(), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki_dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let kept = pki
            .sync_kept(Some(&fleet), &["bridge".into()], Validity::default())
            .unwrap();
        // A kept key lost: a new certificate, and the old one revoked (not left valid without it).
        std::fs::remove_file(pki_dir.join("clients/bridge.key")).unwrap();
        let again = pki
            .sync_kept(None, &["bridge".into()], Validity::default())
            .unwrap();
        assert_eq!(again, ["bridge"]);
        assert_eq!(pki.register().accepted("bridge").count(), 1);
        pki.save().unwrap();
        assert!(pki.crl_changed());
        let crl0 = std::fs::read_to_string(pki_dir.join("crl.pem")).unwrap();
        assert_eq!(kept, ["bridge", "s001-d01"]);
        assert!(
            pki.sync_kept(Some(&fleet), &["bridge".into()], Validity::default())
                .unwrap()
                .is_empty()
        );

        let issued = add(&mut pki, &fleet, "s001-d02", "s001", 30).unwrap();
        assert!(issued.key_pem.contains("PRIVATE KEY"));
        assert!(
            std::fs::read_to_string(&fleet)
                .unwrap()
                .ends_with("s001-d02,s001\n")
        );
        assert!(
            add(&mut pki, &fleet, "s001-d02", "s001", 30).is_err(),
            "twice"
        );
        assert!(
            add(&mut pki, &fleet, "bridge", "s001", 30).is_err(),
            "reserved"
        );
        assert!(add(&mut pki, &fleet, "s+", "s001", 30).is_err(), "wildcard");

        // Rotation: old and new accepted, the list unchanged until the grace ends.
        let new = rotate(&mut pki, "s001-d02", 3_600, 30).unwrap();
        assert_ne!(new.serial, issued.serial);
        assert_eq!(pki.register().accepted("s001-d02").count(), 2);
        assert_eq!(
            std::fs::read_to_string(pki_dir.join("crl.pem")).unwrap(),
            crl0
        );
        // A grace of 0 ends at once: the next command revokes the one it supersedes (the first
        // stays in its own, longer grace period).
        rotate(&mut pki, "s001-d02", 0, 30).unwrap();
        assert_eq!(pki.retire_due(), 1);
        assert_eq!(pki.register().accepted("s001-d02").count(), 2);
        pki.save().unwrap();
        assert_ne!(
            std::fs::read_to_string(pki_dir.join("crl.pem")).unwrap(),
            crl0
        );

        let r = revoke(&mut pki, Some(&fleet), "s001-d02", None).unwrap();
        assert_eq!(
            r,
            Revoked {
                certificates: 2,
                removed_from_fleet: true
            }
        );
        assert!(
            !std::fs::read_to_string(&fleet)
                .unwrap()
                .contains("s001-d02")
        );
        assert!(revoke(&mut pki, Some(&fleet), "s001-d02", None).is_err());

        // Reopened from disk (once this command's lock is released): the same register.
        let register = pki.register().clone();
        drop(pki);
        let again = Pki::open(&pki_dir).unwrap();
        assert_eq!(again.register(), &register);
    }
}
