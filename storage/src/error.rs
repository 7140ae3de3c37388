//! [`StorageError`]: what a storage operation can fail with, independent of the backend.
//!
//! Backend errors that carry a meaning for the caller (a unique key already taken, a foreign
//! key pointing nowhere) are classified by their kind — [`sqlx::error::DatabaseError`]'s
//! `is_unique_violation` / `is_foreign_key_violation` — never by matching message text.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A row with this key already exists (a user name in any case, a session hash, a group
    /// id or a creator's group name, a group member, a blob id, a device or its signature key,
    /// a key package reference, an MLS group id).
    #[error("{what} already exists")]
    AlreadyExists {
        /// What kind of thing exists already, e.g. `"user"`.
        what: &'static str,
    },

    /// Something the operation needs does not exist (an unknown user, group, member, blob,
    /// device or MLS group).
    #[error("{what} not found")]
    NotFound {
        /// What kind of thing is missing, e.g. `"group"`.
        what: &'static str,
    },

    /// The operation does not fit the current state: a stale or skipped group epoch, an
    /// out-of-order blob chunk, an append to a finished blob, an MLS change that does not move
    /// its group's epoch on or an epoch too large to store.
    #[error("conflict on {what}: {detail}")]
    Conflict {
        /// What the conflict is about, e.g. `"group epoch"`.
        what: &'static str,
        /// The state found and the state expected.
        detail: String,
    },

    /// A value is larger than [`crate::limits`] allows; nothing was written.
    #[error("{what} is too large: {len} bytes or items, the most is {max}")]
    TooLarge {
        /// Which value, e.g. `"sealed envelope"`.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A count limit of [`crate::limits`] is reached (a user's devices, a device's key
    /// packages); nothing was written. Unlike [`StorageError::TooLarge`], the same request may
    /// succeed once something was removed.
    #[error("too many {what}: the most is {max}")]
    Full {
        /// What is full, e.g. `"devices"`.
        what: &'static str,
        /// The limit.
        max: usize,
    },

    /// A stored row failed to decode (e.g. a user name that no longer validates, an id of the
    /// wrong length). Never caused by input; it means the database was changed behind our back.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which value, e.g. `"user name"`.
        what: &'static str,
        /// Why it does not decode.
        detail: String,
    },

    /// The database URL names a scheme no backend handles.
    #[error("unsupported database URL scheme {url_scheme:?} (use sqlite:// or postgres://)")]
    UnsupportedUrl {
        /// The scheme found (the text before the first `:`; never the rest of the URL, which
        /// may hold a password).
        url_scheme: String,
    },

    /// The database failed or could not be reached.
    #[error(transparent)]
    Backend(#[from] sqlx::Error),

    /// Running the schema migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StorageError {
    /// Classifies a failed write: a unique violation means `exists` already exists, a foreign
    /// key violation means `missing` was not found; anything else stays a backend error.
    pub(crate) fn from_write(
        err: sqlx::Error,
        exists: &'static str,
        missing: &'static str,
    ) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return Self::AlreadyExists { what: exists };
            }
            if db.is_foreign_key_violation() {
                return Self::NotFound { what: missing };
            }
        }
        Self::Backend(err)
    }

    /// A [`StorageError::Corrupt`] for a stored value that did not decode.
    pub(crate) fn corrupt(what: &'static str, detail: impl ToString) -> Self {
        Self::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }

    /// A [`StorageError::Conflict`].
    pub(crate) fn conflict(what: &'static str, detail: impl ToString) -> Self {
        Self::Conflict {
            what,
            detail: detail.to_string(),
        }
    }
}
