//! The migrator's types, which need no database: the embedded migration, its
//! checksum, the errors, and the check of what a database has applied against what
//! this build embeds. The migrator itself is [`crate::sql::migrate`].

use maily_engine::merkle::keccak;
use maily_engine::ports::StoreError;
use std::collections::BTreeMap;

/// One embedded schema change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Position in the sequence, the `NNNN` of the file name.
    pub version: i64,
    /// The file name after the version, without `.sql`.
    pub name: &'static str,
    /// The statements, run as one script inside the migration's transaction.
    pub sql: &'static str,
}

impl Migration {
    /// The file this migration was embedded from, as named in errors.
    pub fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }

    /// keccak-256 of the SQL text, hex-encoded.
    pub fn checksum(&self) -> String {
        hex::encode(keccak(self.sql.as_bytes()))
    }
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error(
        "migration {file} was changed after it was applied \
         (applied checksum {applied}, embedded {embedded}); restore the file or add a new migration"
    )]
    Changed {
        file: String,
        applied: String,
        embedded: String,
    },
    #[error(
        "database has migration {version} ({name}) which this build does not know; \
         it was written by a newer version"
    )]
    Unknown { version: i64, name: String },
    #[error("migration {file} failed: {source}")]
    Failed {
        file: String,
        #[source]
        source: sqlx::Error,
        /// Connection, lock or resource trouble, worth retrying.
        transient: bool,
    },
    #[error("reading applied migrations: {0}")]
    Store(StoreError),
}

impl From<MigrateError> for StoreError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::Store(inner) => inner,
            // Only connection, lock or I/O trouble is worth retrying; bad SQL or an
            // edited file needs a person.
            MigrateError::Failed {
                transient: true, ..
            } => StoreError::Unavailable(e.to_string()),
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

/// The migrations a database lists as applied: name and checksum by version.
pub(crate) type Applied = BTreeMap<i64, (String, String)>;

/// Refuses a database whose applied migrations this build does not embed as-is.
pub(crate) fn check_applied(
    applied: &Applied,
    migrations: &[Migration],
) -> Result<(), MigrateError> {
    for (version, (name, checksum)) in applied {
        let Some(m) = migrations.iter().find(|m| m.version == *version) else {
            return Err(MigrateError::Unknown {
                version: *version,
                name: name.clone(),
            });
        };
        let embedded = m.checksum();
        if *checksum != embedded {
            return Err(MigrateError::Changed {
                file: m.file_name(),
                applied: checksum.clone(),
                embedded,
            });
        }
    }
    Ok(())
}
