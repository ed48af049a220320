//! Streamed CSV imports: contacts (`POST …/contacts/import`) and campaign recipients
//! (`POST …/campaigns/{id}/recipients` as `text/csv`).
//!
//! The body is never held whole. The handler reads it chunk by chunk on actix-web's
//! worker and hands each chunk, through a channel of [`CHANNEL_CHUNKS`], to a task on
//! the caller's runtime that parses records as they complete ([`CsvReader`]) and stores
//! them in batches of [`BATCH`] rows, or sooner when no more of the body has arrived
//! yet. While a batch is being stored the channel fills and the body is not read, so a
//! fast client is held back by TCP: the server keeps at most a few chunks and one
//! batch, whatever the upload's size.
//!
//! The first record is the header: `email`, then the names of the other columns
//! (attributes for contacts, template variables for recipients). RFC 4180 quoting is
//! understood (quoted commas, line breaks and doubled quotes); lines may end in LF or
//! CRLF; a UTF-8 byte order mark is skipped; blank lines are skipped. Each data row is
//! checked on its own: a row with the wrong number of fields, bad quoting, invalid
//! UTF-8, more than [`MAX_RECORD_BYTES`](super::csv::MAX_RECORD_BYTES) or an invalid address is reported with its
//! number (data rows count from 1, the header not counted) and the line it starts on,
//! and the others are stored. At most [`MAX_REPORTED_ERRORS`] refused rows are listed;
//! the count covers all.
//!
//! A body that is cut off (the client goes away, the connection drops) or passes the
//! route's limit keeps every complete row read before: those are stored, the partial
//! last line is not, and the answer (if the client is still there) is a problem with
//! the report so far under `import`.

use super::csv::{CsvReader, CsvRecord};
use super::problem::{self, Problem};
use super::{State, extract::declared_length};
use crate::intake::Row;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt as _;
use maily_engine::ports::StoreError;
use maily_engine::{Campaign, Contact, EmailAddress, TenantId, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tracing::{info, warn};
use utoipa::ToSchema;

/// Rows stored per store call.
pub const BATCH: usize = 1000;
/// Refused rows listed in a report at most; the count covers all of them.
pub const MAX_REPORTED_ERRORS: usize = 1000;
/// Body chunks in flight between the handler and the import task.
const CHANNEL_CHUNKS: usize = 4;
/// Longest input quoted back in a row error, in characters.
const MAX_QUOTED: usize = 200;

/// A refused row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RowErrorBody {
    /// The row's number: data rows count from 1 (a CSV's header row not counted).
    pub row: u64,
    /// The line of the CSV the row starts on (the header is line 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The row's address as given (at most 200 characters).
    pub input: String,
    pub reason: String,
}

/// What an import or upload stored and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: u64,
    /// Rows stored: contacts upserted, or recipients staged.
    pub accepted: u64,
    /// Rows refused.
    pub rejected: u64,
    /// The first 1000 refused rows, in order.
    pub errors: Vec<RowErrorBody>,
    /// Whether more rows were refused than `errors` lists.
    pub errors_truncated: bool,
}

impl ImportReport {
    /// Counts a refused row, listing it while there is room.
    pub fn reject(&mut self, row: u64, line: Option<u64>, input: String, reason: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(RowErrorBody {
                row,
                line,
                input: input.chars().take(MAX_QUOTED).collect(),
                reason,
            });
        } else {
            self.errors_truncated = true;
        }
    }

    /// The report as the `import` member of a problem.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A data row of a CSV with a valid header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    pub row: u64,
    pub line: u64,
    /// The `email` column.
    pub email: String,
    /// The other columns, in header order.
    pub values: Vec<String>,
}

/// Where an import's rows go.
#[async_trait::async_trait]
pub trait RowSink: Send + 'static {
    /// Takes the names of the columns after `email` (checked: non-empty, unique).
    fn columns(&mut self, columns: Vec<String>) -> Result<(), Problem>;

    /// Stores a batch of rows; refused rows go into `report`, stored ones count in
    /// `report.accepted`.
    async fn store(
        &mut self,
        state: &State,
        rows: Vec<CsvRow>,
        report: &mut ImportReport,
    ) -> Result<(), Problem>;
}

/// A part of the body, or how it ended.
enum Chunk {
    Data(web::Bytes),
    End,
    TooLarge,
    Broken(String),
}

/// Imports a `text/csv` body of at most `limit` bytes into `sink`, streaming.
pub async fn csv<S: RowSink>(
    state: &web::Data<State>,
    req: &HttpRequest,
    payload: web::Payload,
    sink: S,
    limit: usize,
) -> Result<ImportReport, Problem> {
    if declared_length(req).is_some_and(|n| n > limit) {
        return Err(Problem::too_large(limit));
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let shared = Arc::clone(state);
    let task = state
        .runtime
        .spawn(async move { consume(&shared, rx, sink, limit).await });
    let mut payload = payload;
    let mut total = 0usize;
    loop {
        let chunk = match payload.next().await {
            None => Chunk::End,
            Some(Ok(bytes)) => {
                total += bytes.len();
                if total > limit {
                    Chunk::TooLarge
                } else {
                    Chunk::Data(bytes)
                }
            }
            Some(Err(e)) => Chunk::Broken(e.to_string()),
        };
        let last = !matches!(chunk, Chunk::Data(_));
        // A closed channel: the import ended early (a bad header); it has the answer.
        if tx.send(chunk).await.is_err() || last {
            break;
        }
    }
    drop(tx);
    task.await.unwrap_or_else(|e| Err(Problem::internal(e)))
}

/// The import task: parses and stores until the body ends.
async fn consume<S: RowSink>(
    state: &State,
    mut rx: mpsc::Receiver<Chunk>,
    sink: S,
    limit: usize,
) -> Result<ImportReport, Problem> {
    let mut reader = CsvReader::default();
    let mut records = Vec::new();
    let mut import = Import {
        sink,
        width: None,
        pending: Vec::with_capacity(BATCH),
        refused: Vec::new(),
        report: ImportReport::default(),
    };
    loop {
        let chunk = match rx.try_recv() {
            Ok(chunk) => Some(chunk),
            Err(TryRecvError::Empty) => {
                // Nothing more has arrived: store what has before waiting.
                import.flush(state).await?;
                rx.recv().await
            }
            Err(TryRecvError::Disconnected) => None,
        };
        match chunk {
            Some(Chunk::Data(bytes)) => {
                reader.feed(&bytes, &mut records);
                import.take(state, &mut records).await?;
            }
            Some(Chunk::End) => {
                reader.finish(&mut records);
                import.take(state, &mut records).await?;
                import.flush(state).await?;
                if import.width.is_none() {
                    return Err(Problem::invalid(
                        "header",
                        "the CSV is empty: its first row names the columns, starting with email",
                    ));
                }
                return Ok(import.report);
            }
            Some(Chunk::TooLarge) => {
                import.flush(state).await?;
                info!(
                    rows = import.report.rows,
                    "csv import stopped at the size limit"
                );
                return Err(Problem::too_large(limit).with_import(import.report.to_json()));
            }
            Some(Chunk::Broken(_)) | None => {
                let reason = match chunk {
                    Some(Chunk::Broken(reason)) => reason,
                    _ => "the client went away".into(),
                };
                import.flush(state).await?;
                warn!(reason = %reason, rows = import.report.rows, accepted = import.report.accepted,
                    "csv import cut off; the complete rows before stay stored");
                return Err(Problem::bad_field(
                    "body",
                    format!(
                        "the upload was cut off ({reason}); the complete rows before it are stored"
                    ),
                )
                .with_import(import.report.to_json()));
            }
        }
    }
}

/// An import in progress.
struct Import<S> {
    sink: S,
    /// Fields per row, once the header was read.
    width: Option<usize>,
    pending: Vec<CsvRow>,
    /// Rows of the pending batch refused before reaching the sink.
    refused: Vec<RowErrorBody>,
    report: ImportReport,
}

impl<S: RowSink> Import<S> {
    /// Takes parsed records: the header first, then rows, storing each full batch.
    async fn take(&mut self, state: &State, records: &mut Vec<CsvRecord>) -> Result<(), Problem> {
        for record in records.drain(..) {
            let Some(width) = self.width else {
                let fields = record
                    .fields
                    .map_err(|reason| Problem::invalid("header", reason))?;
                let columns = header_columns(fields)?;
                self.width = Some(columns.len() + 1);
                self.sink.columns(columns)?;
                continue;
            };
            self.report.rows += 1;
            let row = self.report.rows;
            match record.fields {
                Err(reason) => self.refused.push(RowErrorBody {
                    row,
                    line: Some(record.line),
                    input: String::new(),
                    reason,
                }),
                Ok(fields) if fields.len() != width => self.refused.push(RowErrorBody {
                    row,
                    line: Some(record.line),
                    input: fields.first().cloned().unwrap_or_default(),
                    reason: format!("has {} fields; the header has {width}", fields.len()),
                }),
                Ok(mut fields) => {
                    let email = fields.remove(0);
                    self.pending.push(CsvRow {
                        row,
                        line: record.line,
                        email,
                        values: fields,
                    });
                }
            }
            if self.pending.len() + self.refused.len() >= BATCH {
                self.flush(state).await?;
            }
        }
        Ok(())
    }

    /// Stores the pending rows, and reports the batch's refused rows in row order.
    async fn flush(&mut self, state: &State) -> Result<(), Problem> {
        let mut batch = ImportReport::default();
        let rows = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        let stored = if rows.is_empty() {
            Ok(())
        } else {
            self.sink.store(state, rows, &mut batch).await
        };
        let mut refused = std::mem::take(&mut self.refused);
        refused.extend(batch.errors);
        refused.sort_by_key(|e| e.row);
        self.report.accepted += batch.accepted;
        for e in refused {
            self.report.reject(e.row, e.line, e.input, e.reason);
        }
        stored.map_err(|p| p.with_import(self.report.to_json()))
    }
}

/// The names of the columns after `email`, checked.
fn header_columns(fields: Vec<String>) -> Result<Vec<String>, Problem> {
    let mut fields = fields.into_iter().map(|f| f.trim().to_string());
    match fields.next() {
        Some(first) if first.eq_ignore_ascii_case("email") => {}
        other => {
            return Err(Problem::invalid(
                "header",
                format!(
                    "the first column must be email, not {:?}",
                    other.unwrap_or_default()
                ),
            ));
        }
    }
    let mut seen = HashSet::new();
    let mut columns = Vec::new();
    for (i, name) in fields.enumerate() {
        if i >= super::contacts::MAX_ATTRIBUTES {
            return Err(Problem::invalid(
                "header",
                format!(
                    "at most {} columns after email",
                    super::contacts::MAX_ATTRIBUTES
                ),
            ));
        }
        if name.is_empty() {
            return Err(Problem::invalid(
                "header",
                format!("column {} has no name", i + 2),
            ));
        }
        if name.eq_ignore_ascii_case("email") || !seen.insert(name.clone()) {
            return Err(Problem::invalid(
                "header",
                format!("column {name:?} appears twice"),
            ));
        }
        columns.push(name);
    }
    Ok(columns)
}

/// Contacts of a tenant: upserted by address; an empty cell is an absent attribute.
pub struct ContactSink {
    tenant: TenantId,
    columns: Vec<String>,
}

impl ContactSink {
    pub fn new(tenant: TenantId) -> Self {
        ContactSink {
            tenant,
            columns: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl RowSink for ContactSink {
    fn columns(&mut self, columns: Vec<String>) -> Result<(), Problem> {
        self.columns = columns;
        Ok(())
    }

    async fn store(
        &mut self,
        state: &State,
        rows: Vec<CsvRow>,
        report: &mut ImportReport,
    ) -> Result<(), Problem> {
        let now = Timestamp::now();
        // One contact per address: a later row replaces an earlier one of the batch.
        let mut batch: Vec<(u64, Contact)> = Vec::with_capacity(rows.len());
        let mut index: HashMap<EmailAddress, usize> = HashMap::new();
        for r in rows {
            let email = match EmailAddress::parse(r.email.trim()) {
                Ok(e) => e,
                Err(e) => {
                    report.reject(
                        r.row,
                        Some(r.line),
                        r.email,
                        format!("invalid address: {e}"),
                    );
                    continue;
                }
            };
            let attributes: BTreeMap<String, String> = self
                .columns
                .iter()
                .cloned()
                .zip(r.values)
                .filter(|(_, v)| !v.is_empty())
                .collect();
            let contact = Contact {
                tenant: self.tenant.clone(),
                email: email.clone(),
                attributes,
                created_at: now,
                updated_at: now,
            };
            match index.get(&email) {
                Some(&i) => batch[i] = (r.row, contact),
                None => {
                    index.insert(email, batch.len());
                    batch.push((r.row, contact));
                }
            }
        }
        let contacts: Vec<Contact> = batch.iter().map(|(_, c)| c.clone()).collect();
        match state.store.upsert_contacts(&contacts).await {
            Ok(()) => {
                report.accepted += index.len() as u64;
                Ok(())
            }
            // A value the store refuses: find the rows one by one.
            Err(StoreError::InvalidRow { .. }) => {
                for (row, contact) in batch {
                    match state
                        .store
                        .upsert_contacts(std::slice::from_ref(&contact))
                        .await
                    {
                        Ok(()) => report.accepted += 1,
                        Err(StoreError::InvalidRow { reason, .. }) => {
                            report.reject(row, None, contact.email.to_string(), reason)
                        }
                        Err(e) => return Err(problem::store(e)),
                    }
                }
                Ok(())
            }
            Err(e) => Err(problem::store(e)),
        }
    }
}

/// Recipients of a campaign: staged through intake; an empty cell is an empty variable.
pub struct RecipientSink {
    campaign: Campaign,
    columns: Vec<String>,
}

impl RecipientSink {
    pub fn new(campaign: Campaign) -> Self {
        RecipientSink {
            campaign,
            columns: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl RowSink for RecipientSink {
    fn columns(&mut self, columns: Vec<String>) -> Result<(), Problem> {
        self.columns = columns;
        Ok(())
    }

    async fn store(
        &mut self,
        state: &State,
        rows: Vec<CsvRow>,
        report: &mut ImportReport,
    ) -> Result<(), Problem> {
        let numbers: Vec<(u64, u64)> = rows.iter().map(|r| (r.row, r.line)).collect();
        let rows: Vec<Row> = rows
            .into_iter()
            .map(|r| Row {
                email: r.email.trim().to_string(),
                vars: self.columns.iter().cloned().zip(r.values).collect(),
            })
            .collect();
        // Over its quota (shared with gRPC), the tenant's upload waits here, and the
        // rest of the stream with it.
        state
            .quotas
            .wait(&self.campaign.tenant, rows.len() as u32)
            .await;
        // Numbered from 0, intake's row numbers index this batch.
        let staged = state
            .intake
            .stage_from(&self.campaign, 0, rows)
            .await
            .map_err(problem::intake)?;
        report.accepted += staged.accepted;
        for e in staged.rejected {
            let (row, line) = numbers.get(e.row as usize).copied().unwrap_or((0, 0));
            report.reject(row, Some(line), e.input, e.reason);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked() {
        let cols = |s: &[&str]| header_columns(s.iter().map(|c| c.to_string()).collect());
        assert_eq!(cols(&["Email", " plan "]).unwrap(), ["plan"]);
        assert!(cols(&["name", "email"]).is_err());
        assert!(cols(&["email", "a", "a"]).is_err());
        assert!(cols(&["email", ""]).is_err());
        // As many columns as a contact may have attributes, and no more.
        let names: Vec<String> = (0..=super::super::contacts::MAX_ATTRIBUTES)
            .map(|i| format!("c{i}"))
            .collect();
        let header = |n: usize| {
            std::iter::once("email".to_string())
                .chain(names[..n].iter().cloned())
                .collect::<Vec<_>>()
        };
        assert!(header_columns(header(names.len() - 1)).is_ok());
        let err = header_columns(header(names.len())).unwrap_err();
        assert!(format!("{err:?}").contains("at most"), "{err:?}");
    }
}
