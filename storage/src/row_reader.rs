//! Reading engine values out of rows, for every SQL adapter: one reader, generic over
//! the driver's row type, that names its table and key in every error.

use maily_engine::merkle::Hash32;
use maily_engine::ports::{ChainSubmission, StoreError};
use maily_engine::{
    CampaignState, CampaignStats, CampaignStatus, ReasonCount, TenantId, Timestamp,
};
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

/// Reads the columns of one row, naming its table and key in every error.
pub(crate) struct RowReader<'r, R: Row> {
    row: &'r R,
    table: &'static str,
    key: String,
}

impl<'r, R> RowReader<'r, R>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    /// A reader for `row` of `table`, identified in errors by `key`.
    pub(crate) fn new(row: &'r R, table: &'static str, key: impl Display) -> Self {
        RowReader {
            row,
            table,
            key: key.to_string(),
        }
    }

    /// Names this row in a corruption error.
    pub(crate) fn corrupt(&self, column: &str, reason: impl Display) -> StoreError {
        StoreError::Corrupt(format!(
            "{} row {}: column {column}: {reason}",
            self.table, self.key
        ))
    }

    /// A column decoded as `T`.
    pub(crate) fn get<T>(&self, column: &str) -> Result<T, StoreError>
    where
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        self.row
            .try_get::<T, _>(column)
            .map_err(|e| self.corrupt(column, e))
    }

    /// A non-negative integer column as u64.
    pub(crate) fn u64(&self, column: &str) -> Result<u64, StoreError> {
        let v: i64 = self.get(column)?;
        u64::try_from(v).map_err(|_| self.corrupt(column, format!("negative value {v}")))
    }

    /// An integer column that must fit a u32.
    pub(crate) fn u32(&self, column: &str) -> Result<u32, StoreError> {
        let v: i64 = self.get(column)?;
        u32::try_from(v).map_err(|_| self.corrupt(column, format!("{v} is not a u32")))
    }

    /// One row of a bounce-reason count (`reason`, `hard`, `n`).
    pub(crate) fn reason_count(&self) -> Result<ReasonCount, StoreError>
    where
        bool: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(ReasonCount {
            reason: self.get("reason")?,
            hard: self.get("hard")?,
            count: self.u64("n")?,
        })
    }

    /// A `chain_submissions` row (`nonce`, `hashes`, `raw`) of `chain` and `epoch`.
    pub(crate) fn chain_submission(
        &self,
        chain: &str,
        epoch: u64,
    ) -> Result<ChainSubmission, StoreError> {
        Ok(ChainSubmission {
            chain: chain.to_string(),
            epoch,
            nonce: self.u64("nonce")?,
            hashes: self.hashes("hashes")?,
            raw: self.get("raw")?,
        })
    }

    /// A text column parsed with `FromStr` (ids, addresses, decimal u128s).
    pub(crate) fn parse<T>(&self, column: &str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text: String = self.get(column)?;
        text.parse()
            .map_err(|e: T::Err| self.corrupt(column, format!("{text:?}: {e}")))
    }

    /// A tenant slug column.
    pub(crate) fn tenant(&self, column: &str) -> Result<TenantId, StoreError> {
        let text: String = self.get(column)?;
        TenantId::parse(&text).map_err(|e| self.corrupt(column, e))
    }

    /// A 32-byte binary column.
    pub(crate) fn hash(&self, column: &str) -> Result<Hash32, StoreError> {
        let bytes: Vec<u8> = self.get(column)?;
        Hash32::try_from(bytes.as_slice())
            .map_err(|_| self.corrupt(column, format!("{} bytes, expected 32", bytes.len())))
    }

    /// A binary column of concatenated 32-byte hashes.
    pub(crate) fn hashes(&self, column: &str) -> Result<Vec<Hash32>, StoreError> {
        let bytes: Vec<u8> = self.get(column)?;
        let chunks = bytes.chunks_exact(32);
        if !chunks.remainder().is_empty() {
            return Err(self.corrupt(
                column,
                format!("{} bytes, not a multiple of 32", bytes.len()),
            ));
        }
        Ok(chunks
            .map(|c| Hash32::try_from(c).expect("chunks are 32 bytes"))
            .collect())
    }

    /// A text column holding a JSON object of strings (variables, attributes).
    pub(crate) fn string_map(&self, column: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text)
            .map_err(|e| self.corrupt(column, format!("not a JSON object of strings: {e}")))
    }

    /// A campaign's state from its `status`, `scheduled_at` and `status_at` columns.
    pub(crate) fn campaign_state(&self) -> Result<CampaignState, StoreError> {
        let status: String = self.get("status")?;
        let status = CampaignStatus::parse(&status)
            .ok_or_else(|| self.corrupt("status", format!("unknown status {status:?}")))?;
        Ok(CampaignState {
            status,
            scheduled_at: self.get::<Option<i64>>("scheduled_at")?.map(Timestamp),
            updated_at: Timestamp(self.get("status_at")?),
        })
    }

    /// The 12 stats counters, read by their [`CampaignStats::FIELDS`] names.
    pub(crate) fn stats(&self) -> Result<CampaignStats, StoreError> {
        let mut values = [0u64; 12];
        for (v, column) in values.iter_mut().zip(CampaignStats::FIELDS) {
            *v = self.u64(column)?;
        }
        Ok(CampaignStats::from_array(values))
    }
}

/// A map of strings (variables, attributes) as the JSON object text columns hold.
pub(crate) fn map_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("a map of strings always serialises")
}
