//! [`Secret`]: a credential in a config (a password, a token, a secret key), kept out of
//! everything a service prints. It lives in the ground crate because the registry client's config
//! holds one and every service's config can use it.

use std::cell::Cell;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    /// Set only inside [`serialized_exposed`].
    static EXPOSE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with secrets serialized as their values instead of [`REDACTED`]. Only for handing a
/// config's defaults to the config loader (it merges them as serialized data, so a redacted
/// default would become the value); never for output.
pub fn serialized_exposed<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            EXPOSE.with(|e| e.set(self.0));
        }
    }
    let _restore = Restore(EXPOSE.with(|e| e.replace(true)));
    f()
}

/// Whether serializing should print secrets' values (inside [`serialized_exposed`]).
pub fn exposing() -> bool {
    EXPOSE.with(Cell::get)
}

/// Printed as `<redacted>` when set, so `--print-config` shows that it is set, never its value;
/// `Debug` redacts too (a config logged with `?` leaks nothing). Read from a config file or the
/// environment like any string. [`Secret::expose`] is the one way to the value: call it only where
/// the credential is handed to a client.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

/// What a set secret prints as.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What printing shows: empty when unset (so an operator sees it is missing), else
    /// [`REDACTED`].
    fn shown(&self) -> &str {
        if self.0.is_empty() || exposing() {
            &self.0
        } else {
            REDACTED
        }
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never exposed, whatever the scope.
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A connection URL with its password replaced by [`REDACTED`] (`postgres://u:<redacted>@h/db`);
/// a URL without a `user:password@` part comes back unchanged.
pub fn redact_url(url: &str) -> String {
    // scheme://[user[:password]@]host...: the password is between the first ':' after "//" and
    // the last '@' before the path.
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) if colon + 1 < userinfo.len() => format!(
            "{}{}:{REDACTED}{}",
            &url[..start],
            &userinfo[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

/// `serialize_with` for a URL field that may carry a password.
pub fn serialize_url_redacted<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    if exposing() {
        s.serialize_str(url)
    } else {
        s.serialize_str(&redact_url(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_secret_prints_redacted_and_an_unset_one_empty() {
        let s = Secret::new("hunter2");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
        let empty = Secret::default();
        assert_eq!(serde_json::to_string(&empty).unwrap(), "\"\"");
        let back: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(back, s);
        // Only the config loader's scope sees the value; Debug never does.
        let exposed = serialized_exposed(|| serde_json::to_string(&s).unwrap());
        assert_eq!(exposed, "\"hunter2\"");
        assert_eq!(serialized_exposed(|| format!("{s:?}")), "\"<redacted>\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
    }

    #[test]
    fn urls_lose_their_password_and_keep_the_rest() {
        assert_eq!(
            redact_url("postgres://app:p%40ss:w@db.internal:5432/tillstream?sslmode=require"),
            "postgres://app:<redacted>@db.internal:5432/tillstream?sslmode=require"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact_url("sqlite://data/x.db?mode=rwc"),
            "sqlite://data/x.db?mode=rwc"
        );
        assert_eq!(redact_url("sqlite:data/x.db"), "sqlite:data/x.db");
        assert_eq!(redact_url("http://u:pw@h/a@b"), "http://u:<redacted>@h/a@b");
    }
}
