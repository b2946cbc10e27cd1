//! The registry's errors and the one place they become Confluent's HTTP
//! status codes and `error_code`s.
//!
//! Clients branch on these codes (a 404 with 40401 means "no such
//! subject", a 409 "incompatible"), so they are part of the API: every
//! error the REST layer returns comes from [`RegistryError::status`] and
//! [`RegistryError::code`].

/// What went wrong, in registry terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    /// A lookup found the subject but not the schema in it.
    #[error("Schema not found")]
    SchemaNotInSubject,
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{0}' Version {1} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, i32),
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, i32),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),
    #[error("Subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotConfigured(String),
    /// The new schema breaks the subject's compatibility level.
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", .messages.join(", "))]
    Incompatible {
        subject: String,
        messages: Vec<String>,
    },
    #[error("Invalid schema {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibilityLevel,
    #[error("Invalid mode. Valid values are READWRITE, READONLY, and IMPORT.")]
    InvalidMode,
    #[error("{0}")]
    OperationNotPermitted(String),
    #[error("One or more references exist to the schema {{magic=1,keytype=SCHEMA,subject={0},version={1}}}.")]
    ReferenceExists(String, i32),
    #[error("The specified subject '{0}' is not a valid.")]
    InvalidSubject(String),
    /// A request that is not valid JSON or misses a field.
    #[error("{0}")]
    BadRequest(String),
    /// A request body over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("Error in the backend data store - {0}")]
    Store(String),
    #[error("Operation timed out - {0}")]
    Timeout(String),
}

impl RegistryError {
    /// The HTTP status of the response.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::SubjectNotFound(_)
            | RegistryError::VersionNotFound(_)
            | RegistryError::SchemaNotFound(_)
            | RegistryError::SchemaNotInSubject
            | RegistryError::SubjectSoftDeleted(_)
            | RegistryError::SubjectNotSoftDeleted(_)
            | RegistryError::VersionSoftDeleted(..)
            | RegistryError::VersionNotSoftDeleted(..)
            | RegistryError::SubjectCompatibilityNotConfigured(_)
            | RegistryError::SubjectModeNotConfigured(_) => 404,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_)
            | RegistryError::InvalidVersion(_)
            | RegistryError::InvalidCompatibilityLevel
            | RegistryError::InvalidMode
            | RegistryError::OperationNotPermitted(_)
            | RegistryError::ReferenceExists(..)
            | RegistryError::InvalidSubject(_) => 422,
            RegistryError::BadRequest(_) => 400,
            RegistryError::PayloadTooLarge(_) => 413,
            RegistryError::Store(_) | RegistryError::Timeout(_) => 500,
        }
    }

    /// Confluent's `error_code`.
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound(_) => 40402,
            RegistryError::SchemaNotFound(_) | RegistryError::SchemaNotInSubject => 40403,
            RegistryError::SubjectSoftDeleted(_) => 40404,
            RegistryError::SubjectNotSoftDeleted(_) => 40405,
            RegistryError::VersionSoftDeleted(..) => 40406,
            RegistryError::VersionNotSoftDeleted(..) => 40407,
            RegistryError::SubjectCompatibilityNotConfigured(_) => 40408,
            RegistryError::SubjectModeNotConfigured(_) => 40409,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibilityLevel => 42203,
            RegistryError::InvalidMode => 42204,
            RegistryError::OperationNotPermitted(_) => 42205,
            RegistryError::ReferenceExists(..) => 42206,
            RegistryError::InvalidSubject(_) => 42208,
            RegistryError::BadRequest(_) => 400,
            RegistryError::PayloadTooLarge(_) => 413,
            RegistryError::Store(_) => 50001,
            RegistryError::Timeout(_) => 50002,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_confluents_status_and_code() {
        let cases = [
            (RegistryError::SubjectNotFound("s".into()), 404, 40401),
            (RegistryError::VersionNotFound("2".into()), 404, 40402),
            (RegistryError::SchemaNotFound("7".into()), 404, 40403),
            (RegistryError::SubjectSoftDeleted("s".into()), 404, 40404),
            (RegistryError::SubjectNotSoftDeleted("s".into()), 404, 40405),
            (RegistryError::VersionSoftDeleted("s".into(), 1), 404, 40406),
            (
                RegistryError::VersionNotSoftDeleted("s".into(), 1),
                404,
                40407,
            ),
            (
                RegistryError::SubjectCompatibilityNotConfigured("s".into()),
                404,
                40408,
            ),
            (
                RegistryError::SubjectModeNotConfigured("s".into()),
                404,
                40409,
            ),
            (
                RegistryError::Incompatible {
                    subject: "s".into(),
                    messages: vec![],
                },
                409,
                409,
            ),
            (RegistryError::InvalidSchema("x".into()), 422, 42201),
            (RegistryError::InvalidVersion("x".into()), 422, 42202),
            (RegistryError::InvalidCompatibilityLevel, 422, 42203),
            (RegistryError::InvalidMode, 422, 42204),
            (RegistryError::OperationNotPermitted("x".into()), 422, 42205),
            (RegistryError::ReferenceExists("s".into(), 1), 422, 42206),
            (RegistryError::InvalidSubject("s".into()), 422, 42208),
            (RegistryError::SchemaNotInSubject, 404, 40403),
            (RegistryError::PayloadTooLarge("x".into()), 413, 413),
            (RegistryError::Store("x".into()), 500, 50001),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code()), (status, code), "{e}");
        }
    }
}
