//! The store's ports on a SQL backend: every method of the role traits forwards to the
//! shared SQL of its module, so both backends answer each port the same way.

/// Implements the ten role traits of the store port for `$store`, a backend store
/// with a `pool` field and two methods of its own: `batch_rows()`, how many rows one
/// multi-row statement carries, and `flush_aggregates(batch)`, the analytics flush
/// (Postgres has a bulk path of its own there). The backend module that expands it
/// holds the modules the methods forward to (`catalog`, `api_keys`, `domains`,
/// `lifecycle`, `analytics`, `messages`, `settlement`, `ledger`, `leases`, `contacts`,
/// `deferred`).
macro_rules! ports {
    ($store:ident) => {
        mod ports {
            use super::*;
            use maily_engine::merkle::Hash32;
            use maily_engine::ports::{
                AggregateBatch, ApiKeyRecord, AudienceStore, CampaignStore, ChainSubmission,
                Cutoffs, DeferredSend, DeferredStore, DispatchStore, Fence, IdempotentSend, Lease,
                LeaseStore, LedgerEntry, LedgerStore, MessageState, NewApiKey, OutcomeStore,
                Pruned, RetentionStore, Settlement, StoreError, StoredOffset, StoredProof,
                SuppressionStore, TenantAccess, TenantRecord, Transition,
            };
            use maily_engine::{
                Campaign, CampaignId, CampaignState, CampaignStats, CampaignStatus, Contact,
                ContactList, EmailAddress, ListId, MessageId, ReasonCount, Segment, SegmentId,
                StagedRecipient, TenantId, Timestamp,
            };
            use std::collections::{BTreeMap, HashMap};
            use std::time::Duration;

            #[async_trait::async_trait]
            impl TenantAccess for $store {
                async fn upsert_tenant(
                    &self,
                    tenant: &TenantId,
                    name: &str,
                ) -> Result<(), StoreError> {
                    catalog::upsert_tenant(&self.pool, tenant, name).await
                }

                async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
                    catalog::tenants(&self.pool).await
                }

                async fn tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
                    catalog::tenant(&self.pool, id).await
                }

                async fn create_api_key(&self, key: &NewApiKey) -> Result<(), StoreError> {
                    api_keys::create_api_key(&self.pool, key).await
                }

                async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
                    api_keys::api_key(&self.pool, id).await
                }

                async fn api_keys(
                    &self,
                    tenant: &TenantId,
                ) -> Result<Vec<ApiKeyRecord>, StoreError> {
                    api_keys::api_keys(&self.pool, tenant).await
                }

                async fn revoke_api_key(
                    &self,
                    tenant: &TenantId,
                    id: &str,
                    at: Timestamp,
                ) -> Result<bool, StoreError> {
                    api_keys::revoke_api_key(&self.pool, tenant, id, at).await
                }

                async fn touch_api_key(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
                    api_keys::touch_api_key(&self.pool, id, at).await
                }

                async fn add_domain(
                    &self,
                    domain: &maily_engine::ports::TenantDomain,
                ) -> Result<(), StoreError> {
                    domains::add_domain(&self.pool, domain).await
                }

                async fn domain(
                    &self,
                    domain: &maily_engine::Domain,
                ) -> Result<Option<maily_engine::ports::TenantDomain>, StoreError> {
                    domains::domain(&self.pool, domain).await
                }

                async fn domains(
                    &self,
                    tenant: &TenantId,
                ) -> Result<Vec<maily_engine::ports::TenantDomain>, StoreError> {
                    domains::domains(&self.pool, tenant).await
                }

                async fn verify_domain(
                    &self,
                    domain: &maily_engine::Domain,
                    at: Timestamp,
                ) -> Result<bool, StoreError> {
                    domains::verify_domain(&self.pool, domain, at).await
                }

                async fn set_domain_hosts(
                    &self,
                    domain: &maily_engine::Domain,
                    return_path: Option<&maily_engine::Domain>,
                    tracking: Option<&maily_engine::Domain>,
                ) -> Result<bool, StoreError> {
                    domains::set_domain_hosts(&self.pool, domain, return_path, tracking).await
                }

                async fn remove_domain(
                    &self,
                    tenant: &TenantId,
                    domain: &maily_engine::Domain,
                ) -> Result<bool, StoreError> {
                    domains::remove_domain(&self.pool, tenant, domain).await
                }
            }

            #[async_trait::async_trait]
            impl CampaignStore for $store {
                async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
                    let state = CampaignState {
                        status: CampaignStatus::Running,
                        scheduled_at: None,
                        updated_at: Timestamp::now(),
                    };
                    catalog::insert_campaign(&self.pool, campaign, &state).await
                }

                async fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, StoreError> {
                    catalog::campaign(&self.pool, id).await
                }

                async fn create_campaign(
                    &self,
                    campaign: &Campaign,
                    state: &CampaignState,
                ) -> Result<(), StoreError> {
                    catalog::insert_campaign(&self.pool, campaign, state).await
                }

                async fn update_campaign(&self, campaign: &Campaign) -> Result<bool, StoreError> {
                    catalog::update_campaign(&self.pool, campaign).await
                }

                async fn campaign_state(
                    &self,
                    id: CampaignId,
                ) -> Result<Option<CampaignState>, StoreError> {
                    lifecycle::campaign_state(&self.pool, id).await
                }

                async fn campaigns(
                    &self,
                    tenant: &TenantId,
                ) -> Result<Vec<(Campaign, CampaignState)>, StoreError> {
                    lifecycle::campaigns(&self.pool, tenant).await
                }

                async fn transition_campaign(
                    &self,
                    id: CampaignId,
                    from: &[CampaignStatus],
                    to: CampaignStatus,
                    scheduled_at: Option<Timestamp>,
                    now: Timestamp,
                ) -> Result<Transition, StoreError> {
                    lifecycle::transition_campaign(&self.pool, id, from, to, scheduled_at, now)
                        .await
                }

                async fn due_campaigns(
                    &self,
                    now: Timestamp,
                ) -> Result<Vec<CampaignId>, StoreError> {
                    lifecycle::due_campaigns(&self.pool, now).await
                }
            }

            #[async_trait::async_trait]
            impl DispatchStore for $store {
                async fn stage_recipients(
                    &self,
                    campaign: CampaignId,
                    recipients: &[StagedRecipient],
                ) -> Result<(), StoreError> {
                    lifecycle::stage_recipients(&self.pool, campaign, recipients, self.batch_rows())
                        .await
                }

                async fn pending_recipients(
                    &self,
                    campaign: CampaignId,
                    limit: usize,
                ) -> Result<Vec<StagedRecipient>, StoreError> {
                    lifecycle::pending_recipients(&self.pool, campaign, limit).await
                }

                async fn mark_launched(
                    &self,
                    campaign: CampaignId,
                    ids: &[MessageId],
                ) -> Result<(), StoreError> {
                    lifecycle::mark_launched(&self.pool, campaign, ids).await
                }

                async fn launchable_campaigns(&self) -> Result<Vec<CampaignId>, StoreError> {
                    lifecycle::launchable_campaigns(&self.pool).await
                }

                async fn staged_counts(
                    &self,
                    campaign: CampaignId,
                ) -> Result<(u64, u64), StoreError> {
                    lifecycle::staged_counts(&self.pool, campaign).await
                }

                async fn reserve_sends(
                    &self,
                    sends: &[IdempotentSend],
                ) -> Result<Vec<IdempotentSend>, StoreError> {
                    lifecycle::reserve_sends(&self.pool, sends).await
                }

                async fn mark_sends_enqueued(
                    &self,
                    tenant: &TenantId,
                    keys: &[String],
                ) -> Result<(), StoreError> {
                    lifecycle::mark_sends_enqueued(&self.pool, tenant, keys).await
                }

                async fn fix_shards(
                    &self,
                    id: CampaignId,
                    proposed: u32,
                ) -> Result<u32, StoreError> {
                    lifecycle::fix_shards(&self.pool, id, proposed).await
                }
            }

            #[async_trait::async_trait]
            impl DeferredStore for $store {
                async fn defer_sends(
                    &self,
                    sends: &[DeferredSend],
                    fence: Option<&Fence>,
                ) -> Result<(), StoreError> {
                    deferred::defer_sends(&self.pool, sends, fence).await
                }

                async fn take_due_sends(
                    &self,
                    partition: u32,
                    now: Timestamp,
                    limit: usize,
                ) -> Result<Vec<DeferredSend>, StoreError> {
                    deferred::take_due_sends(&self.pool, partition, now, limit).await
                }

                async fn next_deferred_due(
                    &self,
                    partition: u32,
                ) -> Result<Option<Timestamp>, StoreError> {
                    deferred::next_deferred_due(&self.pool, partition).await
                }

                async fn release_deferred(&self, partition: u32) -> Result<u64, StoreError> {
                    deferred::release_deferred(&self.pool, partition).await
                }

                async fn forget_deferred(&self, ids: &[MessageId]) -> Result<(), StoreError> {
                    deferred::forget_deferred(&self.pool, ids).await
                }
            }

            #[async_trait::async_trait]
            impl RetentionStore for $store {
                async fn prune(
                    &self,
                    cutoffs: &Cutoffs,
                    limit: usize,
                ) -> Result<Pruned, StoreError> {
                    lifecycle::prune(&self.pool, cutoffs, limit).await
                }
            }

            #[async_trait::async_trait]
            impl OutcomeStore for $store {
                async fn load_offsets(
                    &self,
                    group: &str,
                    topic: &str,
                ) -> Result<BTreeMap<u32, u64>, StoreError> {
                    analytics::load_offsets(&self.pool, group, topic).await
                }

                async fn save_offsets(
                    &self,
                    group: &str,
                    offsets: &[StoredOffset],
                    fence: Option<&Fence>,
                ) -> Result<(), StoreError> {
                    analytics::save_offsets(&self.pool, group, offsets, fence).await
                }

                async fn commit_aggregates(
                    &self,
                    batch: &AggregateBatch,
                ) -> Result<(), StoreError> {
                    self.flush_aggregates(batch).await
                }

                async fn campaign_stats(
                    &self,
                    id: CampaignId,
                ) -> Result<Option<CampaignStats>, StoreError> {
                    analytics::campaign_stats(&self.pool, id).await
                }

                async fn part_stats(
                    &self,
                    id: CampaignId,
                    part: u32,
                ) -> Result<Option<CampaignStats>, StoreError> {
                    analytics::part_stats(&self.pool, id, part).await
                }

                async fn all_stats(
                    &self,
                ) -> Result<Vec<(TenantId, CampaignId, CampaignStats)>, StoreError> {
                    analytics::all_stats(&self.pool).await
                }

                async fn bounce_reasons(
                    &self,
                    campaign: CampaignId,
                ) -> Result<Vec<ReasonCount>, StoreError> {
                    analytics::bounce_reasons(&self.pool, campaign).await
                }

                async fn message_masks(
                    &self,
                    ids: &[MessageId],
                ) -> Result<HashMap<MessageId, u32>, StoreError> {
                    analytics::message_masks(&self.pool, ids).await
                }

                async fn message(&self, id: MessageId) -> Result<Option<MessageState>, StoreError> {
                    messages::message(&self.pool, id).await
                }

                async fn messages_with_status(
                    &self,
                    campaign: CampaignId,
                    status: &str,
                ) -> Result<Vec<MessageState>, StoreError> {
                    messages::messages_with_status(&self.pool, campaign, status).await
                }
            }

            #[async_trait::async_trait]
            impl SuppressionStore for $store {
                async fn suppress(
                    &self,
                    tenant: &TenantId,
                    email: &EmailAddress,
                    reason: &str,
                ) -> Result<(), StoreError> {
                    catalog::suppress(&self.pool, tenant, email, reason).await
                }

                async fn is_suppressed(
                    &self,
                    tenant: &TenantId,
                    email: &EmailAddress,
                ) -> Result<bool, StoreError> {
                    catalog::is_suppressed(&self.pool, tenant, email).await
                }

                async fn suppression_page(
                    &self,
                    tenant: &TenantId,
                    after: Option<&EmailAddress>,
                    limit: usize,
                ) -> Result<Vec<(EmailAddress, String)>, StoreError> {
                    catalog::suppression_page(&self.pool, tenant, after, limit).await
                }

                async fn suppressions(
                    &self,
                    tenant: &TenantId,
                ) -> Result<Vec<(EmailAddress, String)>, StoreError> {
                    catalog::suppressions(&self.pool, tenant).await
                }

                async fn unsuppress(
                    &self,
                    tenant: &TenantId,
                    email: &EmailAddress,
                ) -> Result<bool, StoreError> {
                    catalog::unsuppress(&self.pool, tenant, email).await
                }
            }

            #[async_trait::async_trait]
            impl LedgerStore for $store {
                async fn commit_settlement(
                    &self,
                    settlement: &Settlement,
                    fence: Option<&Fence>,
                ) -> Result<(), StoreError> {
                    settlement::commit_settlement(&self.pool, settlement, fence).await
                }

                async fn settlement(&self, epoch: u64) -> Result<Option<Settlement>, StoreError> {
                    settlement::settlement(&self.pool, epoch).await
                }

                async fn last_settled_epoch(&self) -> Result<Option<u64>, StoreError> {
                    settlement::last_settled_epoch(&self.pool).await
                }

                async fn ledger_head(&self) -> Result<Option<LedgerEntry>, StoreError> {
                    ledger::ledger_head(&self.pool).await
                }

                async fn append_ledger(&self, entry: &LedgerEntry) -> Result<(), StoreError> {
                    ledger::append_ledger(&self.pool, entry).await
                }

                async fn ledger_entry(
                    &self,
                    epoch: u64,
                ) -> Result<Option<LedgerEntry>, StoreError> {
                    ledger::ledger_entry(&self.pool, epoch).await
                }

                async fn ledger_entries(&self) -> Result<Vec<LedgerEntry>, StoreError> {
                    ledger::ledger_entries(&self.pool).await
                }

                async fn record_anchor(
                    &self,
                    chain: &str,
                    epoch: u64,
                    root: &Hash32,
                    reference: &str,
                ) -> Result<(), StoreError> {
                    ledger::record_anchor(&self.pool, chain, epoch, root, reference).await
                }

                async fn epochs_to_anchor(&self, chain: &str) -> Result<Vec<u64>, StoreError> {
                    ledger::epochs_to_anchor(&self.pool, chain).await
                }

                async fn store_proofs(&self, proofs: &[StoredProof]) -> Result<(), StoreError> {
                    ledger::store_proofs(&self.pool, proofs).await
                }

                async fn save_submission(
                    &self,
                    submission: &ChainSubmission,
                ) -> Result<(), StoreError> {
                    ledger::save_submission(&self.pool, submission).await
                }

                async fn submission(
                    &self,
                    chain: &str,
                    epoch: u64,
                ) -> Result<Option<ChainSubmission>, StoreError> {
                    ledger::submission(&self.pool, chain, epoch).await
                }

                async fn clear_submission(
                    &self,
                    chain: &str,
                    epoch: u64,
                ) -> Result<(), StoreError> {
                    ledger::clear_submission(&self.pool, chain, epoch).await
                }

                async fn proof(
                    &self,
                    epoch: u64,
                    campaign: CampaignId,
                ) -> Result<Option<StoredProof>, StoreError> {
                    ledger::proof(&self.pool, epoch, campaign).await
                }
            }

            #[async_trait::async_trait]
            impl LeaseStore for $store {
                async fn acquire_lease(
                    &self,
                    resource: &str,
                    owner: &str,
                    now: Timestamp,
                    ttl: Duration,
                ) -> Result<Option<Lease>, StoreError> {
                    leases::acquire_lease(&self.pool, resource, owner, now, ttl).await
                }

                async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
                    leases::release_lease(&self.pool, fence).await
                }

                async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
                    leases::leases(&self.pool).await
                }

                async fn heartbeat(&self, member: &str, now: Timestamp) -> Result<(), StoreError> {
                    leases::heartbeat(&self.pool, member, now).await
                }

                async fn live_members(&self, since: Timestamp) -> Result<Vec<String>, StoreError> {
                    leases::live_members(&self.pool, since).await
                }
            }

            #[async_trait::async_trait]
            impl AudienceStore for $store {
                async fn upsert_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError> {
                    contacts::upsert_contacts(&self.pool, contacts, self.batch_rows()).await
                }

                async fn contact(
                    &self,
                    tenant: &TenantId,
                    email: &EmailAddress,
                ) -> Result<Option<Contact>, StoreError> {
                    contacts::contact(&self.pool, tenant, email).await
                }

                async fn delete_contact(
                    &self,
                    tenant: &TenantId,
                    email: &EmailAddress,
                ) -> Result<bool, StoreError> {
                    contacts::delete_contact(&self.pool, tenant, email).await
                }

                async fn contacts(
                    &self,
                    tenant: &TenantId,
                    list: Option<ListId>,
                    after: Option<&EmailAddress>,
                    limit: usize,
                ) -> Result<Vec<Contact>, StoreError> {
                    contacts::contacts(&self.pool, tenant, list, after, limit).await
                }

                async fn create_list(&self, list: &ContactList) -> Result<(), StoreError> {
                    contacts::create_list(&self.pool, list).await
                }

                async fn lists(&self, tenant: &TenantId) -> Result<Vec<ContactList>, StoreError> {
                    contacts::lists(&self.pool, tenant).await
                }

                async fn list(
                    &self,
                    tenant: &TenantId,
                    id: ListId,
                ) -> Result<Option<ContactList>, StoreError> {
                    contacts::list(&self.pool, tenant, id).await
                }

                async fn delete_list(
                    &self,
                    tenant: &TenantId,
                    id: ListId,
                ) -> Result<bool, StoreError> {
                    contacts::delete_list(&self.pool, tenant, id).await
                }

                async fn add_list_members(
                    &self,
                    tenant: &TenantId,
                    list: ListId,
                    emails: &[EmailAddress],
                ) -> Result<u64, StoreError> {
                    contacts::add_list_members(&self.pool, tenant, list, emails).await
                }

                async fn remove_list_members(
                    &self,
                    tenant: &TenantId,
                    list: ListId,
                    emails: &[EmailAddress],
                ) -> Result<u64, StoreError> {
                    contacts::remove_list_members(&self.pool, tenant, list, emails).await
                }

                async fn create_segment(&self, segment: &Segment) -> Result<(), StoreError> {
                    contacts::create_segment(&self.pool, segment).await
                }

                async fn segments(&self, tenant: &TenantId) -> Result<Vec<Segment>, StoreError> {
                    contacts::segments(&self.pool, tenant).await
                }

                async fn segment(
                    &self,
                    tenant: &TenantId,
                    id: SegmentId,
                ) -> Result<Option<Segment>, StoreError> {
                    contacts::segment(&self.pool, tenant, id).await
                }

                async fn delete_segment(
                    &self,
                    tenant: &TenantId,
                    id: SegmentId,
                ) -> Result<bool, StoreError> {
                    contacts::delete_segment(&self.pool, tenant, id).await
                }
            }
        }
    };
}

pub(crate) use ports;
