//! `UploadRecipients`: a client stream of recipient chunks, enqueued as they arrive.
//!
//! Rows are collected from the messages already received, up to [`CHUNK`], and handed
//! to [`Intake::stage_from`] whenever a chunk is full or the next message has not
//! arrived yet. While the log takes a chunk the stream is not read, so HTTP/2 flow
//! control holds a fast client back: the server keeps at most one chunk of rows and
//! one message, whatever the upload's size.
//!
//! Rows count as accepted once the store holds them (staged until the campaign runs). When the stream breaks (the
//! client cancels, the connection drops, a message is too large or names another
//! campaign), the rows of every message read before the break are still enqueued and
//! stay accepted; the error says how many in its message and in a
//! `google.rpc.ErrorInfo` (reason `UPLOAD_STOPPED`, metadata `rows`, `accepted`,
//! `rejected`, `campaign_id`), and the log says so too. A client that resends after a
//! break may send some recipients twice: per-row idempotency keys are not part of this
//! API yet.

use super::campaigns::{CampaignApi, campaign_for, parse_campaign_id};
use super::proto::{self, UploadRecipientsRequest};
use super::status::{self, Progress};
use crate::auth::{Principal, Scope};
use crate::intake::{CHUNK, Intake, Row};
use crate::quota::Quotas;
use maily_engine::Campaign;
use maily_engine::ports::Store;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{error, info, warn};

/// Refused rows listed in a reply at most; the count covers all of them.
pub(crate) const MAX_REPORTED_ERRORS: usize = 1000;

/// The `reason` of the `ErrorInfo` on a stopped upload.
const STOPPED: &str = "UPLOAD_STOPPED";

/// Runs an upload for `caller`, who holds the `send` scope.
///
/// The upload runs on a task of its own: when a client goes away, hyper drops this
/// call's future, but the task still enqueues what was read, ends and logs how.
pub(super) async fn run(
    api: &CampaignApi,
    caller: Principal,
    stream: Streaming<UploadRecipientsRequest>,
) -> Result<proto::UploadRecipientsResponse, Status> {
    let upload = Upload {
        intake: api.intake.clone(),
        store: api.store.clone(),
        quotas: api.quotas.clone(),
        caller,
        campaign: None,
        pending: Vec::with_capacity(CHUNK),
        rows: 0,
        accepted: 0,
        rejected: 0,
        errors: Vec::new(),
        _running: api.uploads.clone(),
    };
    tokio::spawn(upload.run(stream)).await.map_err(|e| {
        error!(error = %e, "upload task failed");
        Status::internal("internal error")
    })?
}

/// One upload in progress.
struct Upload {
    intake: Arc<Intake>,
    store: Arc<dyn Store>,
    quotas: Arc<Quotas>,
    caller: Principal,
    /// Set by the first message.
    campaign: Option<Campaign>,
    /// Rows read and not yet handed to intake (the last `pending.len()` of `rows`).
    pending: Vec<Row>,
    /// Rows read.
    rows: u64,
    accepted: u64,
    rejected: u64,
    /// The first [`MAX_REPORTED_ERRORS`] refused rows.
    errors: Vec<proto::RowError>,
    /// Keeps [`super::serve`] waiting until the upload ends.
    _running: mpsc::Sender<()>,
}

impl Upload {
    async fn run(
        mut self,
        mut stream: Streaming<UploadRecipientsRequest>,
    ) -> Result<proto::UploadRecipientsResponse, Status> {
        match self.consume(&mut stream).await {
            Ok(()) => {
                info!(
                    campaign = %self.campaign_label(),
                    rows = self.rows,
                    accepted = self.accepted,
                    rejected = self.rejected,
                    "recipients uploaded"
                );
                Ok(self.reply())
            }
            Err(status) => Err(self.stopped(status)),
        }
    }

    /// Reads the stream to its end, enqueueing as it goes.
    async fn consume(
        &mut self,
        stream: &mut Streaming<UploadRecipientsRequest>,
    ) -> Result<(), Status> {
        loop {
            let next = if self.pending.is_empty() {
                stream.message().await
            } else {
                match ready_now(stream.message()) {
                    Some(next) => next,
                    // Nothing more has arrived: enqueue what has before waiting.
                    None => {
                        self.flush().await?;
                        continue;
                    }
                }
            };
            match next {
                Ok(Some(chunk)) => self.take(chunk).await?,
                Ok(None) => return self.flush().await,
                Err(broken) => {
                    // Every message read so far arrived whole: keep its rows.
                    self.flush().await?;
                    return Err(if status::is_oversized(&broken) {
                        status::oversized(broken.message())
                    } else {
                        broken
                    });
                }
            }
        }
    }

    /// Takes one message's rows, enqueueing each chunk as it fills.
    async fn take(&mut self, chunk: UploadRecipientsRequest) -> Result<(), Status> {
        self.bind(&chunk.campaign_id).await?;
        for recipient in chunk.recipients {
            self.rows += 1;
            self.pending.push(Row {
                email: recipient.email,
                vars: recipient.variables,
            });
            if self.pending.len() >= CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Loads and checks the campaign the first message names; later messages may only
    /// repeat it.
    async fn bind(&mut self, campaign_id: &str) -> Result<(), Status> {
        match &self.campaign {
            None => {
                let campaign =
                    campaign_for(self.store.as_ref(), &self.caller, Scope::Send, campaign_id)
                        .await?;
                self.campaign = Some(campaign);
            }
            Some(campaign) => {
                if !campaign_id.trim().is_empty() && parse_campaign_id(campaign_id)? != campaign.id
                {
                    return Err(status::bad_request(
                        "campaign_id",
                        format!("differs from the upload's campaign {}", campaign.id),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Hands the pending rows to intake.
    async fn flush(&mut self) -> Result<(), Status> {
        let Some(campaign) = &self.campaign else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        // Over its quota, the tenant's upload waits here: unread messages stay in the
        // stream and flow control slows the client.
        self.quotas
            .wait(&campaign.tenant, self.pending.len() as u32)
            .await;
        let first_row = self.rows - self.pending.len() as u64 + 1;
        let rows = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        let report = self
            .intake
            .stage_from(campaign, first_row, rows)
            .await
            .map_err(status::intake)?;
        self.accepted += report.accepted;
        self.rejected += report.rejected.len() as u64;
        let room = MAX_REPORTED_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(
            report
                .rejected
                .into_iter()
                .take(room)
                .map(|e| proto::RowError {
                    row: e.row,
                    input: e.input,
                    reason: e.reason,
                }),
        );
        Ok(())
    }

    /// The campaign's id for logs, `-` before the first message named it.
    fn campaign_label(&self) -> String {
        self.campaign
            .as_ref()
            .map_or_else(|| "-".to_string(), |c| c.id.to_string())
    }

    fn reply(self) -> proto::UploadRecipientsResponse {
        proto::UploadRecipientsResponse {
            rows: self.rows,
            accepted: self.accepted,
            rejected: self.rejected,
            errors_truncated: self.rejected > self.errors.len() as u64,
            errors: self.errors,
        }
    }

    /// The error an upload ended with, logged and carrying its progress.
    fn stopped(&self, status: Status) -> Status {
        if self.rows > 0 {
            warn!(
                campaign = %self.campaign_label(),
                rows = self.rows,
                accepted = self.accepted,
                rejected = self.rejected,
                code = ?status.code(),
                error = status.message(),
                "upload stopped; the rows accepted before stay staged"
            );
        } else {
            info!(
                campaign = %self.campaign_label(),
                code = ?status.code(),
                error = status.message(),
                "upload refused"
            );
        }
        let progress = Progress {
            campaign: self.campaign.as_ref().map(|c| c.id),
            rows: self.rows,
            accepted: self.accepted,
            rejected: self.rejected,
        };
        status::with_progress(status, STOPPED, &progress)
    }
}

/// The output of `future` if it is ready without waiting. For cancel-safe futures
/// only (reading a tonic stream is: its state lives in the stream).
fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let future = pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
