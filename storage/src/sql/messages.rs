//! One message's state, and a campaign's messages in one state, one SQL text for both
//! dialects.

/// The message-state reads for one backend (see [`super::domains::domains`]).
macro_rules! messages {
    ($pool:ty, $sql:path) => {
        use super::rows::{RowReader, db_err, raw_text};
        use maily_engine::ports::{MessageState, StoreError};
        use maily_engine::{CampaignId, MessageId};

        pub(crate) async fn message(
            pool: &$pool,
            id: MessageId,
        ) -> Result<Option<MessageState>, StoreError> {
            let row = sqlx::query(&$sql(
                "SELECT message_id::text AS message_id, tenant, campaign::text AS campaign,
                     recipient, mask, status, detail
                 FROM messages WHERE message_id = $1::uuid",
            ))
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
            row.map(|row| {
                let r = RowReader::new(&row, "messages", raw_text(&row, "message_id"));
                Ok(MessageState {
                    message_id: r.parse("message_id")?,
                    tenant: r.tenant("tenant")?,
                    campaign: r.parse("campaign")?,
                    recipient: r.parse("recipient")?,
                    mask: r.u32("mask")?,
                    status: r.get("status")?,
                    detail: r.get("detail")?,
                })
            })
            .transpose()
        }

        pub(crate) async fn messages_with_status(
            pool: &$pool,
            campaign: CampaignId,
            status: &str,
        ) -> Result<Vec<MessageState>, StoreError> {
            let rows = sqlx::query(&$sql(
                "SELECT message_id::text AS message_id, tenant, recipient, mask, detail FROM messages
                 WHERE campaign = $1::uuid AND status = $2 ORDER BY messages.message_id",
            ))
            .bind(campaign.to_string())
            .bind(status)
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|row| {
                    let r = RowReader::new(row, "messages", raw_text(row, "message_id"));
                    Ok(MessageState {
                        message_id: r.parse("message_id")?,
                        tenant: r.tenant("tenant")?,
                        campaign,
                        recipient: r.parse("recipient")?,
                        mask: r.u32("mask")?,
                        status: status.to_string(),
                        detail: r.get("detail")?,
                    })
                })
                .collect()
        }
    };
}

pub(crate) use messages;
