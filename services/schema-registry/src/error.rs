//! The registry's error type and its mapping to Confluent error codes (`error_code`) and HTTP
//! statuses. Owns no I/O. Guarantee: every failure the API can report has exactly one Confluent
//! code, and the HTTP status is derived from that code (404xx → 404, 409 → 409, 422xx → 422,
//! 500xx → 500), so clients that switch on either see consistent answers.

use tillstream_runtime::{Classify, ErrorClass};

use crate::persist::PersistError;

/// Confluent's numeric error codes used by this registry.
pub mod codes {
    pub const BAD_REQUEST: u32 = 400;
    pub const NOT_FOUND: u32 = 404;
    pub const METHOD_NOT_ALLOWED: u32 = 405;
    pub const UNAUTHORIZED: u32 = 401;
    pub const SUBJECT_NOT_FOUND: u32 = 40401;
    pub const VERSION_NOT_FOUND: u32 = 40402;
    pub const SCHEMA_NOT_FOUND: u32 = 40403;
    pub const SUBJECT_SOFT_DELETED: u32 = 40404;
    pub const SUBJECT_NOT_SOFT_DELETED: u32 = 40405;
    pub const VERSION_SOFT_DELETED: u32 = 40406;
    pub const VERSION_NOT_SOFT_DELETED: u32 = 40407;
    pub const SUBJECT_LEVEL_NOT_CONFIGURED: u32 = 40408;
    /// Confluent answers an incompatible registration with HTTP 409 and `error_code` 409.
    pub const INCOMPATIBLE_SCHEMA: u32 = 409;
    pub const INVALID_SCHEMA: u32 = 42201;
    pub const INVALID_VERSION: u32 = 42202;
    pub const INVALID_COMPATIBILITY_LEVEL: u32 = 42203;
    pub const REFERENCE_EXISTS: u32 = 42206;
    pub const INVALID_SUBJECT: u32 = 42208;
    pub const STORE_ERROR: u32 = 50001;
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema not found")]
    SchemaNotFound,
    #[error("Schema {0} not found")]
    SchemaIdNotFound(String),
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{0}' Version {1} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, u32),
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, u32),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectLevelNotConfigured(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
        details.join("; ")
    )]
    Incompatible {
        subject: String,
        details: Vec<String>,
    },
    #[error("{0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Invalid compatibility level '{0}'. Valid values are NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL and FULL_TRANSITIVE"
    )]
    InvalidCompatibilityLevel(String),
    #[error("{0}")]
    ReferenceExists(String),
    #[error("The specified subject '{0}' is not a valid subject name")]
    InvalidSubject(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("HTTP 404 Not Found")]
    RouteNotFound,
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// A request without the configured basic auth credentials.
    #[error("Unauthorized: this registry requires HTTP basic auth")]
    Unauthorized,
    /// A DELETE on a registry configured without `allow_deletes`.
    #[error("Deletes are disabled on this registry (allow_deletes = false)")]
    DeletesDisabled,
    #[error("Error in the backend data store: {0}")]
    Store(#[from] PersistError),
    #[error("Internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// Confluent's `error_code` for this error.
    pub fn code(&self) -> u32 {
        use RegistryError as E;
        use codes::*;
        match self {
            E::SubjectNotFound(_) => SUBJECT_NOT_FOUND,
            E::VersionNotFound(_) => VERSION_NOT_FOUND,
            E::SchemaNotFound | E::SchemaIdNotFound(_) => SCHEMA_NOT_FOUND,
            E::SubjectSoftDeleted(_) => SUBJECT_SOFT_DELETED,
            E::SubjectNotSoftDeleted(_) => SUBJECT_NOT_SOFT_DELETED,
            E::VersionSoftDeleted(..) => VERSION_SOFT_DELETED,
            E::VersionNotSoftDeleted(..) => VERSION_NOT_SOFT_DELETED,
            E::SubjectLevelNotConfigured(_) => SUBJECT_LEVEL_NOT_CONFIGURED,
            E::Incompatible { .. } => INCOMPATIBLE_SCHEMA,
            E::InvalidSchema(_) => INVALID_SCHEMA,
            E::InvalidVersion(_) => INVALID_VERSION,
            E::InvalidCompatibilityLevel(_) => INVALID_COMPATIBILITY_LEVEL,
            E::ReferenceExists(_) => REFERENCE_EXISTS,
            E::InvalidSubject(_) => INVALID_SUBJECT,
            E::BadRequest(_) => BAD_REQUEST,
            E::RouteNotFound => NOT_FOUND,
            E::MethodNotAllowed | E::DeletesDisabled => METHOD_NOT_ALLOWED,
            E::Unauthorized => UNAUTHORIZED,
            E::Store(_) | E::Internal(_) => STORE_ERROR,
        }
    }

    /// The HTTP status that goes with [`RegistryError::code`].
    pub fn http_status(&self) -> u16 {
        http_status_for(self.code())
    }
}

/// Derives the HTTP status from a Confluent error code: five-digit codes carry the status in
/// their first three digits, three-digit codes are the status itself.
pub fn http_status_for(code: u32) -> u16 {
    let status = if code >= 10_000 { code / 100 } else { code };
    u16::try_from(status).unwrap_or(500)
}

impl Classify for RegistryError {
    fn class(&self) -> ErrorClass {
        match self {
            // The data dir could not be written: nothing was acknowledged, the client may retry.
            RegistryError::Store(PersistError::Io { .. }) => ErrorClass::Retryable,
            // The log on disk cannot be trusted: stop rather than serve a wrong view.
            RegistryError::Store(PersistError::Corrupt { .. }) => ErrorClass::Fatal,
            RegistryError::Internal(_) => ErrorClass::Retryable,
            // Everything else is about the request itself: retrying the same input cannot succeed.
            _ => ErrorClass::Poison,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_codes() {
        assert_eq!(
            RegistryError::SubjectNotFound("s".into()).http_status(),
            404
        );
        assert_eq!(RegistryError::InvalidVersion("x".into()).http_status(), 422);
        assert_eq!(
            RegistryError::Incompatible {
                subject: "s".into(),
                details: vec![]
            }
            .http_status(),
            409
        );
        assert_eq!(RegistryError::Internal("x".into()).http_status(), 500);
        assert_eq!(RegistryError::BadRequest("x".into()).http_status(), 400);
        assert_eq!(http_status_for(u32::MAX), 500);
    }
}
