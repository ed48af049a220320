//! The EVM adapter of the chain port: anchors epoch roots in an `AnchorRegistry` and
//! publishes reward roots to a `RewardDistributor` over JSON-RPC (alloy).
//!
//! A write (an anchor or a reward root) goes through these steps, each safe to
//! repeat after a crash or a restart:
//!
//! 1. Read the contract: the same root already there means the write happened
//!    (its transaction is found through the contract's event), a different root is a
//!    conflict no transaction can fix.
//! 2. Simulate the call (`eth_estimateGas`): a revert is reported by name, nothing is
//!    sent.
//! 3. Sign an EIP-1559 transaction at the signer's next nonce, with the tip and fee
//!    cap from the configuration, after checking the signer can pay its worst case.
//! 4. Wait for it: a transaction not mined within `bump_after` is signed again at the
//!    same nonce with higher fees (never above the cap), so at most one of its versions
//!    is ever mined. A receipt counts once its block is `confirmations` deep and still
//!    on the canonical chain; a reorg that drops it sends the wait back to polling.
//!
//! Every version of a transaction is written to the store's journal before it is
//! broadcast and removed once confirmed. A process that stops between sending and
//! confirming leaves it there (and in the node's pool): the next process finds it,
//! broadcasts it again and waits for it, bumping it at the same nonce if it is stuck,
//! so an epoch is never anchored twice, and the contract refuses a second root for an
//! epoch anyway. Without a journal, a new process waits for the signer's pending
//! transactions (as the node counts them) before sending anything.

use crate::contracts::{AnchorRegistry, RewardDistributor, describe_revert};
use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{BlockNumberOrTag, Filter, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use alloy::transports::{RpcError, TransportErrorKind};
use async_trait::async_trait;
use maily_engine::merkle::Hash32;
use maily_engine::ports::{
    AnchorReceipt, Chain, ChainError, ChainSubmission, LedgerStore, StoreError,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// One EVM chain's settings (`[anchor.evm.<name>]`).
#[derive(Debug, Clone)]
pub struct EvmParams {
    /// The chain's name in `anchor.chains`, receipts and metrics.
    pub name: String,
    /// The JSON-RPC endpoint (http or https).
    pub rpc_url: String,
    /// The chain id the endpoint must report.
    pub chain_id: u64,
    /// The `AnchorRegistry` contract.
    pub registry: Address,
    /// The `RewardDistributor` contract (owned by the signer), if rewards are paid here.
    pub distributor: Option<Address>,
    /// The signer's private key.
    pub signer_key: SignerKey,
    /// Blocks on top of a receipt's block (its own included) before it counts.
    pub confirmations: u64,
    /// The most the signer pays per gas, base fee and tip together, in wei.
    pub max_fee_per_gas: u128,
    /// The tip offered to the block producer per gas, in wei.
    pub priority_fee_per_gas: u128,
    /// How long a transaction may stay unmined before it is sent again with higher fees.
    pub bump_after: Duration,
    /// How much each resubmission raises both fees, in percent (10 at least: nodes
    /// refuse smaller replacements).
    pub bump_percent: u32,
    /// How often receipts and blocks are polled.
    pub poll_interval: Duration,
    /// How long one JSON-RPC request may take.
    pub rpc_timeout: Duration,
}

/// A private key that never appears in logs, errors or `Debug` output.
#[derive(Clone)]
pub struct SignerKey(String);

impl SignerKey {
    /// Wraps a hex private key (with or without `0x`).
    pub fn new(hex: impl Into<String>) -> Self {
        SignerKey(hex.into())
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignerKey(<redacted>)")
    }
}

/// `url` as it may be logged: scheme, host and port only. RPC providers put the
/// account's key in the path or query (`https://eth.example/v3/<key>`), so the rest is
/// replaced by `…`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = u.path() != "/" || u.query().is_some() || !u.username().is_empty();
            format!(
                "{}://{host}{port}{}",
                u.scheme(),
                if rest { "/…" } else { "" }
            )
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

/// `text` with every occurrence of `url` (and of its unparsed forms) redacted.
fn scrub(text: impl fmt::Display, url: &str) -> String {
    let text = text.to_string();
    if url.is_empty() {
        return text;
    }
    let mut out = text.replace(url, &redact_url(url));
    if let Ok(u) = reqwest::Url::parse(url) {
        out = out.replace(u.as_str(), &redact_url(url));
    }
    out
}

/// Why an EVM chain could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EvmSetupError {
    #[error("chain {chain}: the signer key is not a 32-byte hex private key")]
    BadKey { chain: String },
    #[error("chain {chain}: rpc_url {url} is not a usable URL: {reason}")]
    BadUrl {
        chain: String,
        url: String,
        reason: String,
    },
    #[error("chain {chain}: {reason}")]
    Invalid { chain: String, reason: String },
}

/// Read-only access to a chain's registry: what `maily verify` needs, no key.
#[derive(Clone)]
pub struct EvmReader {
    name: String,
    url: String,
    provider: RootProvider,
    registry: Address,
    distributor: Option<Address>,
    publisher: Address,
}

/// Connects a provider with its own HTTP client (timeouts, rustls on ring).
fn provider(chain: &str, url: &str, timeout: Duration) -> Result<RootProvider, EvmSetupError> {
    // reqwest is built without a default crypto provider; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parsed = reqwest::Url::parse(url).map_err(|e| EvmSetupError::BadUrl {
        chain: chain.into(),
        url: redact_url(url),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EvmSetupError::BadUrl {
            chain: chain.into(),
            url: redact_url(url),
            reason: "only http and https are supported".into(),
        });
    }
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| EvmSetupError::Invalid {
            chain: chain.into(),
            reason: format!("building the HTTP client: {e}"),
        })?;
    Ok(RootProvider::new(RpcClient::new_http_with_client(
        client, parsed,
    )))
}

impl EvmReader {
    /// A reader of `registry` (and `distributor`) at `url`, for roots of `publisher`.
    pub fn new(
        name: &str,
        url: &str,
        registry: Address,
        distributor: Option<Address>,
        publisher: Address,
        timeout: Duration,
    ) -> Result<Self, EvmSetupError> {
        Ok(EvmReader {
            name: name.into(),
            url: url.into(),
            provider: provider(name, url, timeout)?,
            registry,
            distributor,
            publisher,
        })
    }

    /// The address whose roots are read.
    pub fn publisher(&self) -> Address {
        self.publisher
    }

    /// The registry read.
    pub fn registry(&self) -> Address {
        self.registry
    }

    /// The chain id the endpoint reports.
    pub async fn chain_id(&self) -> Result<u64, ChainError> {
        self.provider
            .get_chain_id()
            .await
            .map_err(|e| self.rpc_error("eth_chainId", e))
    }

    /// The root anchored for `epoch` by the publisher, `None` if none.
    pub async fn root_of(&self, epoch: u64) -> Result<Option<Hash32>, ChainError> {
        let data = AnchorRegistry::rootOfCall {
            publisher: self.publisher,
            epoch,
        }
        .abi_encode();
        let out = self.call(self.registry, data, "rootOf").await?;
        let root = AnchorRegistry::rootOfCall::abi_decode_returns(&out)
            .map_err(|e| self.bad_answer("rootOf", e))?;
        Ok((root != B256::ZERO).then_some(root.0))
    }

    /// The registry's own verdict on a leaf hash and proof for `epoch`.
    pub async fn verify(
        &self,
        epoch: u64,
        leaf: Hash32,
        proof: &[Hash32],
    ) -> Result<bool, ChainError> {
        let data = AnchorRegistry::verifyCall {
            publisher: self.publisher,
            epoch,
            leaf: leaf.into(),
            proof: proof.iter().map(|p| B256::from(*p)).collect(),
        }
        .abi_encode();
        let out = self.call(self.registry, data, "verify").await?;
        AnchorRegistry::verifyCall::abi_decode_returns(&out)
            .map_err(|e| self.bad_answer("verify", e))
    }

    /// The distributor's reward root of `epoch`, `None` if not published.
    pub async fn reward_root_of(&self, epoch: u64) -> Result<Option<Hash32>, ChainError> {
        let Some(distributor) = self.distributor else {
            return Ok(None);
        };
        let data = RewardDistributor::rootOfCall { epoch }.abi_encode();
        let out = self.call(distributor, data, "rootOf").await?;
        let root = RewardDistributor::rootOfCall::abi_decode_returns(&out)
            .map_err(|e| self.bad_answer("rootOf", e))?;
        Ok((root != B256::ZERO).then_some(root.0))
    }

    async fn call(&self, to: Address, data: Vec<u8>, what: &str) -> Result<Bytes, ChainError> {
        let tx = TransactionRequest::default()
            .to(to)
            .input(Bytes::from(data).into());
        self.provider
            .call(tx)
            .await
            .map_err(|e| match revert_of(&e) {
                Some(data) => ChainError::Rejected {
                    chain: self.name.clone(),
                    reason: format!("{what} at {to}: {}", describe_revert(&data)),
                },
                None => self.rpc_error(what, e),
            })
    }

    fn rpc_error(&self, what: &str, e: RpcError<TransportErrorKind>) -> ChainError {
        ChainError::Unavailable {
            chain: self.name.clone(),
            reason: format!(
                "{what} at {}: {}",
                redact_url(&self.url),
                scrub(e, &self.url)
            ),
        }
    }

    fn bad_answer(&self, what: &str, e: impl fmt::Display) -> ChainError {
        ChainError::Rejected {
            chain: self.name.clone(),
            reason: format!(
                "{what}: the answer is not what the contract returns ({e}); is the address right?"
            ),
        }
    }
}

/// Revert data carried by an RPC error, if the error is a revert.
fn revert_of(e: &RpcError<TransportErrorKind>) -> Option<Bytes> {
    let payload = e.as_error_resp()?;
    if let Some(data) = payload.as_revert_data() {
        return Some(data);
    }
    // A revert without data (a call to a missing function) still says "revert".
    payload
        .message
        .to_ascii_lowercase()
        .contains("revert")
        .then(Bytes::new)
}

/// What a write puts on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Anchor,
    Rewards,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Anchor => "anchor",
            Kind::Rewards => "rewards",
        }
    }
}

/// A transaction sent and not yet confirmed: every version of it shares the nonce.
#[derive(Debug, Clone)]
struct Submission {
    to: Address,
    input: Bytes,
    nonce: u64,
    gas_limit: u64,
    max_fee_per_gas: u128,
    priority_fee_per_gas: u128,
    /// Every version sent, the latest last.
    hashes: Vec<B256>,
    raw: Bytes,
    sent_at: Instant,
}

enum Outcome {
    Confirmed(B256, u64),
    Reverted(B256, u64),
    /// The nonce was used by another transaction of the signer.
    Replaced,
}

/// The EVM adapter of the chain port.
pub struct EvmChain {
    params: EvmParams,
    reader: EvmReader,
    signer: PrivateKeySigner,
    ready: tokio::sync::OnceCell<()>,
    /// The next nonce to use; `None` until read from the chain (or after a nonce error).
    nonce: tokio::sync::Mutex<Option<u64>>,
    /// Writes sent and not yet confirmed, so a retried write waits for its
    /// transaction instead of sending another.
    inflight: Mutex<HashMap<(Kind, u64), Submission>>,
    /// The same, kept in the store, for the next process after a crash or restart.
    journal: Option<Arc<dyn LedgerStore>>,
    /// Until when transactions an earlier process left pending are waited for.
    leftovers_deadline: Mutex<Option<Instant>>,
}

impl fmt::Debug for EvmChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvmChain")
            .field("name", &self.params.name)
            .field("rpc_url", &redact_url(&self.params.rpc_url))
            .field("chain_id", &self.params.chain_id)
            .field("signer", &self.signer.address())
            .finish_non_exhaustive()
    }
}

impl EvmChain {
    /// Sets up the adapter; nothing is sent or read until the first write or read, so
    /// an unreachable node does not stop the engine from starting.
    pub fn new(params: EvmParams) -> Result<Self, EvmSetupError> {
        let key = params.signer_key.0.trim().trim_start_matches("0x");
        let signer: PrivateKeySigner = key.parse().map_err(|_| EvmSetupError::BadKey {
            chain: params.name.clone(),
        })?;
        if params.confirmations == 0 {
            return Err(EvmSetupError::Invalid {
                chain: params.name.clone(),
                reason: "confirmations must be at least 1".into(),
            });
        }
        if params.bump_percent < 10 {
            return Err(EvmSetupError::Invalid {
                chain: params.name.clone(),
                reason: format!(
                    "bump_percent {} is below 10: nodes refuse replacements that raise fees by less",
                    params.bump_percent
                ),
            });
        }
        if params.priority_fee_per_gas > params.max_fee_per_gas {
            return Err(EvmSetupError::Invalid {
                chain: params.name.clone(),
                reason: "priority_fee_per_gas is above max_fee_per_gas".into(),
            });
        }
        let reader = EvmReader::new(
            &params.name,
            &params.rpc_url,
            params.registry,
            params.distributor,
            signer.address(),
            params.rpc_timeout,
        )?;
        Ok(EvmChain {
            params,
            reader,
            signer,
            ready: tokio::sync::OnceCell::new(),
            nonce: tokio::sync::Mutex::new(None),
            inflight: Mutex::new(HashMap::new()),
            journal: None,
            leftovers_deadline: Mutex::new(None),
        })
    }

    /// Keeps unconfirmed transactions in `store` too (written before each is
    /// broadcast), so an engine restarted before a confirmation waits for the
    /// transaction it finds there instead of sending another.
    pub fn with_journal(mut self, store: Arc<dyn LedgerStore>) -> Self {
        self.journal = Some(store);
        self
    }

    /// The journal's name for a write: the chain's name, or `<name>/rewards`.
    fn key(&self, kind: Kind) -> String {
        match kind {
            Kind::Anchor => self.params.name.clone(),
            Kind::Rewards => format!("{}/rewards", self.params.name),
        }
    }

    fn journal_error(&self, e: StoreError) -> ChainError {
        ChainError::Unavailable {
            chain: self.params.name.clone(),
            reason: format!("the store keeping unconfirmed transactions: {e}"),
        }
    }

    /// Remembers a submission (in memory and in the journal) before it is broadcast.
    async fn remember(&self, kind: Kind, epoch: u64, sub: &Submission) -> Result<(), ChainError> {
        self.inflight
            .lock()
            .expect("inflight")
            .insert((kind, epoch), sub.clone());
        if let Some(journal) = &self.journal {
            let record = ChainSubmission {
                chain: self.key(kind),
                epoch,
                nonce: sub.nonce,
                hashes: sub.hashes.iter().map(|h| h.0).collect(),
                raw: sub.raw.to_vec(),
            };
            journal
                .save_submission(&record)
                .await
                .map_err(|e| self.journal_error(e))?;
        }
        Ok(())
    }

    async fn forget(&self, kind: Kind, epoch: u64) -> Result<(), ChainError> {
        self.inflight
            .lock()
            .expect("inflight")
            .remove(&(kind, epoch));
        if let Some(journal) = &self.journal {
            journal
                .clear_submission(&self.key(kind), epoch)
                .await
                .map_err(|e| self.journal_error(e))?;
        }
        Ok(())
    }

    /// The unconfirmed submission of a write: this process's, or one the journal
    /// kept from an earlier process (broadcast again, since the node may have dropped
    /// it).
    async fn recall(&self, kind: Kind, epoch: u64) -> Result<Option<Submission>, ChainError> {
        if let Some(s) = self.inflight.lock().expect("inflight").get(&(kind, epoch)) {
            return Ok(Some(s.clone()));
        }
        let Some(journal) = &self.journal else {
            return Ok(None);
        };
        let Some(record) = journal
            .submission(&self.key(kind), epoch)
            .await
            .map_err(|e| self.journal_error(e))?
        else {
            return Ok(None);
        };
        let corrupt = |why: &str| ChainError::Misconfigured {
            chain: self.params.name.clone(),
            reason: format!(
                "the kept transaction of {} epoch {epoch} {why}",
                kind.label()
            ),
        };
        let envelope = TxEnvelope::decode_2718(&mut record.raw.as_slice())
            .map_err(|_| corrupt("does not decode"))?;
        let TxEnvelope::Eip1559(signed) = envelope else {
            return Err(corrupt("is not an EIP-1559 transaction"));
        };
        let tx = signed.tx();
        let to = *tx.to.to().ok_or_else(|| corrupt("has no recipient"))?;
        let sub = Submission {
            to,
            input: tx.input.clone(),
            nonce: tx.nonce,
            gas_limit: tx.gas_limit,
            max_fee_per_gas: tx.max_fee_per_gas,
            priority_fee_per_gas: tx.max_priority_fee_per_gas,
            hashes: record.hashes.iter().map(|h| B256::from(*h)).collect(),
            raw: record.raw.into(),
            sent_at: Instant::now(),
        };
        info!(chain = self.name(), kind = kind.label(), epoch, nonce = sub.nonce, tx = %sub.hashes.last().copied().unwrap_or_default(), "found a transaction sent before a restart; waiting for it");
        {
            let mut next = self.nonce.lock().await;
            *next = Some(next.map_or(sub.nonce + 1, |n| n.max(sub.nonce + 1)));
        }
        self.inflight
            .lock()
            .expect("inflight")
            .insert((kind, epoch), sub.clone());
        match self.send(&sub).await {
            Err(e @ ChainError::Unavailable { .. }) => return Err(e),
            // Mined, replaced or still pooled: waiting tells which.
            Err(e) => {
                debug!(chain = self.name(), error = %e, "broadcasting the kept transaction again")
            }
            Ok(()) => {}
        }
        Ok(Some(sub))
    }

    /// The signer's address (the publisher of every root this chain anchors).
    pub fn signer(&self) -> Address {
        self.signer.address()
    }

    /// The read side, for proofs.
    pub fn reader(&self) -> &EvmReader {
        &self.reader
    }

    fn provider(&self) -> &RootProvider {
        &self.reader.provider
    }

    fn name(&self) -> &str {
        &self.params.name
    }

    fn unavailable(&self, what: &str, e: impl fmt::Display) -> ChainError {
        ChainError::Unavailable {
            chain: self.params.name.clone(),
            reason: format!(
                "{what} at {}: {}",
                redact_url(&self.params.rpc_url),
                scrub(e, &self.params.rpc_url)
            ),
        }
    }

    /// Checks the chain id and the contracts once, then waits for transactions a
    /// previous process of this signer left unconfirmed.
    async fn ensure_ready(&self) -> Result<(), ChainError> {
        self.ready
            .get_or_try_init(|| async {
                let id = self.reader.chain_id().await?;
                if id != self.params.chain_id {
                    return Err(ChainError::Misconfigured {
                        chain: self.params.name.clone(),
                        reason: format!(
                            "{} serves chain id {id}, but chain_id is {}",
                            redact_url(&self.params.rpc_url),
                            self.params.chain_id
                        ),
                    });
                }
                let mut contracts = vec![("registry", self.params.registry)];
                contracts.extend(self.params.distributor.map(|d| ("distributor", d)));
                for (what, address) in contracts {
                    let code = self
                        .provider()
                        .get_code_at(address)
                        .await
                        .map_err(|e| self.unavailable("eth_getCode", e))?;
                    if code.is_empty() {
                        return Err(ChainError::Misconfigured {
                            chain: self.params.name.clone(),
                            reason: format!(
                                "no contract at the {what} address {address} on chain id {id}"
                            ),
                        });
                    }
                }
                self.wait_for_leftovers().await
            })
            .await
            .map(|_| ())
    }

    /// Transactions of this signer still pending at start were sent by a process that
    /// stopped before confirming them: give them time to be mined, then start the
    /// nonce at the first unmined one so new transactions replace them.
    async fn wait_for_leftovers(&self) -> Result<(), ChainError> {
        // Kept across calls: a caller that gives up and comes back does not restart it.
        let deadline = *self
            .leftovers_deadline
            .lock()
            .expect("deadline")
            .get_or_insert_with(|| Instant::now() + self.params.bump_after * 2);
        loop {
            let (mined, pending) = self.nonces().await?;
            if pending <= mined {
                *self.nonce.lock().await = Some(mined);
                return Ok(());
            }
            if Instant::now() >= deadline {
                warn!(
                    chain = self.name(),
                    mined,
                    pending,
                    "transactions left by an earlier run are not being mined; replacing them"
                );
                *self.nonce.lock().await = Some(mined);
                return Ok(());
            }
            info!(
                chain = self.name(),
                mined, pending, "waiting for transactions left by an earlier run"
            );
            tokio::time::sleep(self.params.poll_interval).await;
        }
    }

    /// The signer's mined and pending transaction counts.
    async fn nonces(&self) -> Result<(u64, u64), ChainError> {
        let signer = self.signer.address();
        let mined = self
            .provider()
            .get_transaction_count(signer)
            .latest()
            .await
            .map_err(|e| self.unavailable("eth_getTransactionCount", e))?;
        let pending = self
            .provider()
            .get_transaction_count(signer)
            .pending()
            .await
            .map_err(|e| self.unavailable("eth_getTransactionCount", e))?;
        Ok((mined, pending))
    }

    /// The contract's current root for the write, `None` if unset.
    async fn current(&self, kind: Kind, epoch: u64) -> Result<Option<Hash32>, ChainError> {
        match kind {
            Kind::Anchor => self.reader.root_of(epoch).await,
            Kind::Rewards => self.reader.reward_root_of(epoch).await,
        }
    }

    fn target(&self, kind: Kind) -> Result<Address, ChainError> {
        match kind {
            Kind::Anchor => Ok(self.params.registry),
            Kind::Rewards => self
                .params
                .distributor
                .ok_or_else(|| ChainError::Misconfigured {
                    chain: self.params.name.clone(),
                    reason: "no distributor address configured".into(),
                }),
        }
    }

    /// Puts `root` for `epoch` on chain once, and returns the confirmed receipt.
    async fn write(
        &self,
        kind: Kind,
        epoch: u64,
        root: Hash32,
    ) -> Result<AnchorReceipt, ChainError> {
        self.ensure_ready().await?;
        loop {
            match self.current(kind, epoch).await? {
                Some(r) if r == root => {
                    self.forget(kind, epoch).await?;
                    return self.receipt_from_log(kind, epoch, root).await;
                }
                Some(r) => {
                    self.forget(kind, epoch).await?;
                    return Err(ChainError::Conflict {
                        chain: format!(
                            "{} ({} of epoch {epoch} holds root 0x{})",
                            self.name(),
                            kind.label(),
                            hex::encode(r)
                        ),
                        epoch,
                    });
                }
                None => {}
            }
            let sub = match self.recall(kind, epoch).await? {
                Some(s) => s,
                None => self.submit(kind, epoch, root).await?,
            };
            let outcome = self.confirm(kind, epoch, sub).await?;
            self.forget(kind, epoch).await?;
            match outcome {
                Outcome::Confirmed(tx, block) => {
                    info!(chain = self.name(), kind = kind.label(), epoch, %tx, block, "confirmed");
                    return Ok(self.receipt(epoch, root, tx));
                }
                Outcome::Reverted(hash, block) => {
                    if self.current(kind, epoch).await? == Some(root) {
                        // Another process of this signer got there first.
                        return self.receipt_from_log(kind, epoch, root).await;
                    }
                    let why = self.replay_revert(kind, epoch, root, block).await;
                    metrics::counter!("maily_chain_reverts_total", "chain" => self.name().to_string()).increment(1);
                    return Err(ChainError::Rejected {
                        chain: self.name().to_string(),
                        reason: format!("transaction {hash} reverted in block {block}: {why}"),
                    });
                }
                Outcome::Replaced => {
                    *self.nonce.lock().await = None;
                    debug!(
                        chain = self.name(),
                        epoch, "nonce used by another transaction; checking the contract again"
                    );
                }
            }
        }
    }

    fn receipt(&self, epoch: u64, root: Hash32, tx: B256) -> AnchorReceipt {
        AnchorReceipt {
            chain: self.params.name.clone(),
            epoch,
            root,
            reference: tx.to_string(),
        }
    }

    fn calldata(kind: Kind, epoch: u64, root: Hash32) -> Bytes {
        match kind {
            Kind::Anchor => AnchorRegistry::anchorCall {
                epoch,
                root: root.into(),
            }
            .abi_encode()
            .into(),
            Kind::Rewards => RewardDistributor::publishRootCall {
                epoch,
                root: root.into(),
            }
            .abi_encode()
            .into(),
        }
    }

    /// Simulates, prices, signs and sends a new transaction.
    async fn submit(&self, kind: Kind, epoch: u64, root: Hash32) -> Result<Submission, ChainError> {
        let to = self.target(kind)?;
        let input = Self::calldata(kind, epoch, root);
        let from = self.signer.address();
        let request = TransactionRequest::default()
            .from(from)
            .to(to)
            .input(input.clone().into());
        let estimate =
            self.provider()
                .estimate_gas(request)
                .await
                .map_err(|e| match revert_of(&e) {
                    Some(data) => ChainError::Rejected {
                        chain: self.name().to_string(),
                        reason: format!(
                            "{} of epoch {epoch} would revert: {}",
                            kind.label(),
                            describe_revert(&data)
                        ),
                    },
                    None if is_insufficient_funds(&e) => {
                        self.underfunded(format!("the node refuses to estimate: {e}"))
                    }
                    None => self.unavailable("eth_estimateGas", e),
                })?;
        let gas_limit = estimate + estimate / 5;
        let base_fee = self.base_fee().await?;
        let tip = self.params.priority_fee_per_gas;
        let wanted = base_fee.saturating_mul(2).saturating_add(tip);
        let max_fee = wanted.min(self.params.max_fee_per_gas);
        if max_fee < base_fee.saturating_add(tip.min(1)) {
            return Err(ChainError::Rejected {
                chain: self.name().to_string(),
                reason: format!(
                    "the base fee is {base_fee} wei per gas, above the fee cap max_fee_per_gas = {} wei",
                    self.params.max_fee_per_gas
                ),
            });
        }
        let worst = U256::from(gas_limit) * U256::from(max_fee);
        let balance = self
            .provider()
            .get_balance(from)
            .await
            .map_err(|e| self.unavailable("eth_getBalance", e))?;
        if balance < worst {
            return Err(self.underfunded(format!(
                "it holds {balance} wei; the {} of epoch {epoch} may cost up to {worst} wei (gas limit {gas_limit} at {max_fee} wei per gas)",
                kind.label()
            )));
        }
        let nonce = self.next_nonce().await?;
        let mut sub = Submission {
            to,
            input,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            priority_fee_per_gas: tip.min(max_fee),
            hashes: Vec::new(),
            raw: Bytes::new(),
            sent_at: Instant::now(),
        };
        self.sign(&mut sub)?;
        self.remember(kind, epoch, &sub).await?;
        if let Err(e) = self.send(&sub).await {
            // The nonce was not used; read it from the chain next time.
            *self.nonce.lock().await = None;
            self.forget(kind, epoch).await?;
            return Err(e);
        }
        info!(chain = self.name(), kind = kind.label(), epoch, nonce, tx = %sub.hashes.last().expect("signed"), max_fee, "sent");
        metrics::counter!("maily_chain_transactions_total", "chain" => self.name().to_string(), "kind" => kind.label()).increment(1);
        Ok(sub)
    }

    fn underfunded(&self, reason: String) -> ChainError {
        ChainError::Underfunded {
            chain: self.params.name.clone(),
            signer: self.signer.address().to_string(),
            reason,
        }
    }

    async fn base_fee(&self) -> Result<u128, ChainError> {
        let block = self
            .provider()
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| self.unavailable("eth_getBlockByNumber", e))?
            .ok_or_else(|| self.unavailable("eth_getBlockByNumber", "no latest block"))?;
        block
            .header
            .base_fee_per_gas
            .map(u128::from)
            .ok_or_else(|| ChainError::Misconfigured {
                chain: self.params.name.clone(),
                reason: "the chain's blocks have no base fee: EIP-1559 is required".into(),
            })
    }

    async fn next_nonce(&self) -> Result<u64, ChainError> {
        let mut next = self.nonce.lock().await;
        let n = match *next {
            Some(n) => n,
            None => self.nonces().await?.1,
        };
        *next = Some(n + 1);
        Ok(n)
    }

    /// Signs the submission's current fees at its nonce.
    fn sign(&self, sub: &mut Submission) -> Result<(), ChainError> {
        let mut tx = TxEip1559 {
            chain_id: self.params.chain_id,
            nonce: sub.nonce,
            gas_limit: sub.gas_limit,
            max_fee_per_gas: sub.max_fee_per_gas,
            max_priority_fee_per_gas: sub.priority_fee_per_gas,
            to: TxKind::Call(sub.to),
            value: U256::ZERO,
            access_list: Default::default(),
            input: sub.input.clone(),
        };
        let signature =
            self.signer
                .sign_transaction_sync(&mut tx)
                .map_err(|e| ChainError::Rejected {
                    chain: self.params.name.clone(),
                    reason: format!("signing: {e}"),
                })?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        sub.hashes.push(*envelope.tx_hash());
        sub.raw = envelope.encoded_2718().into();
        sub.sent_at = Instant::now();
        Ok(())
    }

    async fn send(&self, sub: &Submission) -> Result<(), ChainError> {
        match self.provider().send_raw_transaction(&sub.raw).await {
            Ok(_) => Ok(()),
            Err(e) if is_insufficient_funds(&e) => Err(self.underfunded(e.to_string())),
            Err(e) if e.as_error_resp().is_some() && is_known(&e) => Ok(()),
            Err(e) if e.as_error_resp().is_some() => Err(ChainError::Rejected {
                chain: self.params.name.clone(),
                reason: format!(
                    "the node refused transaction {}: {e}",
                    sub.hashes.last().expect("signed")
                ),
            }),
            Err(e) => Err(self.unavailable("eth_sendRawTransaction", e)),
        }
    }

    /// Sends the submission again at its nonce with fees raised by `bump_percent`
    /// (capped); at the cap it only re-broadcasts.
    async fn bump(&self, kind: Kind, epoch: u64, sub: &mut Submission) -> Result<(), ChainError> {
        let raise =
            |v: u128| v.saturating_mul(100 + u128::from(self.params.bump_percent)) / 100 + 1;
        let cap = self.params.max_fee_per_gas;
        let max_fee = raise(sub.max_fee_per_gas).min(cap);
        let tip = raise(sub.priority_fee_per_gas).min(max_fee);
        if max_fee <= sub.max_fee_per_gas {
            warn!(
                chain = self.name(),
                kind = kind.label(),
                epoch,
                max_fee,
                "transaction not mined and the fee cap is reached; sending it again unchanged"
            );
            sub.sent_at = Instant::now();
            return match self.send(sub).await {
                // The node still holds it ("already known", "underpriced" for the
                // same fees): keep waiting.
                Err(ChainError::Rejected { reason, .. }) => {
                    debug!(chain = self.name(), %reason, "re-broadcast refused");
                    Ok(())
                }
                other => other,
            };
        }
        let mut next = sub.clone();
        next.max_fee_per_gas = max_fee;
        next.priority_fee_per_gas = tip;
        self.sign(&mut next)?;
        self.remember(kind, epoch, &next).await?;
        match self.send(&next).await {
            Ok(()) => {
                info!(chain = self.name(), kind = kind.label(), epoch, nonce = next.nonce, tx = %next.hashes.last().expect("signed"), max_fee, "sent again with higher fees");
                metrics::counter!("maily_chain_fee_bumps_total", "chain" => self.name().to_string()).increment(1);
                *sub = next;
                Ok(())
            }
            Err(e) => {
                // Keep waiting for the versions already sent.
                warn!(chain = self.name(), kind = kind.label(), epoch, error = %e, "resubmission refused");
                sub.sent_at = Instant::now();
                self.remember(kind, epoch, sub).await
            }
        }
    }

    /// Waits for one version of the submission to be mined and confirmed.
    async fn confirm(
        &self,
        kind: Kind,
        epoch: u64,
        mut sub: Submission,
    ) -> Result<Outcome, ChainError> {
        let mut consumed_polls = 0;
        loop {
            let mut mined = None;
            for hash in sub.hashes.iter().rev() {
                if let Some(r) = self
                    .provider()
                    .get_transaction_receipt(*hash)
                    .await
                    .map_err(|e| self.unavailable("eth_getTransactionReceipt", e))?
                {
                    mined = Some(r);
                    break;
                }
            }
            match mined {
                Some(receipt) => {
                    if let Some(outcome) = self.settled(&receipt).await? {
                        return Ok(outcome);
                    }
                }
                None => {
                    let (latest, _) = self.nonces().await?;
                    if latest > sub.nonce {
                        // Mined by now, but not as one of ours: receipts may lag a poll.
                        consumed_polls += 1;
                        if consumed_polls >= 3 {
                            return Ok(Outcome::Replaced);
                        }
                    } else if sub.sent_at.elapsed() >= self.params.bump_after {
                        self.bump(kind, epoch, &mut sub).await?;
                    }
                }
            }
            tokio::time::sleep(self.params.poll_interval).await;
        }
    }

    /// `Some` once the receipt's block is deep enough and still canonical.
    async fn settled(&self, receipt: &TransactionReceipt) -> Result<Option<Outcome>, ChainError> {
        let (Some(number), Some(hash)) = (receipt.block_number, receipt.block_hash) else {
            return Ok(None);
        };
        if !self.deep_and_canonical(number, hash).await? {
            return Ok(None);
        }
        if receipt.status() {
            Ok(Some(Outcome::Confirmed(receipt.transaction_hash, number)))
        } else {
            Ok(Some(Outcome::Reverted(receipt.transaction_hash, number)))
        }
    }

    /// Whether block `number` has `confirmations` blocks (itself included) and is
    /// still the block with `hash`.
    async fn deep_and_canonical(&self, number: u64, hash: B256) -> Result<bool, ChainError> {
        let head = self
            .provider()
            .get_block_number()
            .await
            .map_err(|e| self.unavailable("eth_blockNumber", e))?;
        if head + 1 < number + self.params.confirmations {
            return Ok(false);
        }
        let block = self
            .provider()
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(|e| self.unavailable("eth_getBlockByNumber", e))?;
        let canonical = block.is_some_and(|b| b.header.hash == hash);
        if !canonical {
            warn!(
                chain = self.name(),
                block = number,
                "the receipt's block left the canonical chain; waiting again"
            );
        }
        Ok(canonical)
    }

    /// The transaction that wrote `root` for `epoch`, from the contract's event, once
    /// confirmed.
    async fn receipt_from_log(
        &self,
        kind: Kind,
        epoch: u64,
        root: Hash32,
    ) -> Result<AnchorReceipt, ChainError> {
        let filter = match kind {
            Kind::Anchor => Filter::new()
                .address(self.params.registry)
                .event_signature(AnchorRegistry::Anchored::SIGNATURE_HASH)
                .topic1(self.signer.address().into_word())
                .topic2(B256::from(U256::from(epoch))),
            Kind::Rewards => Filter::new()
                .address(self.target(kind)?)
                .event_signature(RewardDistributor::RootPublished::SIGNATURE_HASH)
                .topic1(B256::from(U256::from(epoch))),
        }
        .from_block(0u64);
        let mut misses = 0;
        loop {
            let logs = self
                .provider()
                .get_logs(&filter)
                .await
                .map_err(|e| self.unavailable("eth_getLogs", e))?;
            let Some(log) = logs.into_iter().rfind(|l| !l.removed) else {
                // The root is there, so its event is: the node's log index may lag.
                misses += 1;
                if misses >= 30 {
                    return Err(self.unavailable(
                        "eth_getLogs",
                        format!("the contract holds the root of epoch {epoch}, but no {} event for it was found", kind.label()),
                    ));
                }
                tokio::time::sleep(self.params.poll_interval).await;
                continue;
            };
            let (Some(tx), Some(number), Some(hash)) =
                (log.transaction_hash, log.block_number, log.block_hash)
            else {
                tokio::time::sleep(self.params.poll_interval).await;
                continue;
            };
            if self.deep_and_canonical(number, hash).await? {
                return Ok(self.receipt(epoch, root, tx));
            }
            tokio::time::sleep(self.params.poll_interval).await;
        }
    }

    /// Why a mined transaction reverted: the same call replayed on the state before it.
    async fn replay_revert(&self, kind: Kind, epoch: u64, root: Hash32, block: u64) -> String {
        let Ok(to) = self.target(kind) else {
            return "unknown".into();
        };
        let tx = TransactionRequest::default()
            .from(self.signer.address())
            .to(to)
            .input(Self::calldata(kind, epoch, root).into());
        match self
            .provider()
            .call(tx)
            .block(BlockNumberOrTag::Number(block.saturating_sub(1)).into())
            .await
        {
            Ok(_) => "the call succeeds when replayed (out of gas?)".into(),
            Err(e) => match revert_of(&e) {
                Some(data) => describe_revert(&data),
                None => format!("replaying it failed: {e}"),
            },
        }
    }
}

fn is_insufficient_funds(e: &RpcError<TransportErrorKind>) -> bool {
    e.as_error_resp().is_some_and(|p| {
        p.message
            .to_ascii_lowercase()
            .contains("insufficient funds")
    })
}

/// The node already has this exact transaction.
fn is_known(e: &RpcError<TransportErrorKind>) -> bool {
    e.as_error_resp().is_some_and(|p| {
        let m = p.message.to_ascii_lowercase();
        m.contains("already known")
            || m.contains("known transaction")
            || m.contains("already imported")
    })
}

#[async_trait]
impl Chain for EvmChain {
    fn name(&self) -> &str {
        &self.params.name
    }

    async fn anchor(&self, epoch: u64, root: Hash32) -> Result<AnchorReceipt, ChainError> {
        self.write(Kind::Anchor, epoch, root).await
    }

    async fn root(&self, epoch: u64) -> Result<Option<Hash32>, ChainError> {
        self.reader.root_of(epoch).await
    }

    fn pays_rewards(&self) -> bool {
        self.params.distributor.is_some()
    }

    async fn publish_rewards(&self, epoch: u64, root: Hash32) -> Result<AnchorReceipt, ChainError> {
        self.write(Kind::Rewards, epoch, root).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(key: &str) -> EvmParams {
        EvmParams {
            name: "ethereum".into(),
            rpc_url: "http://127.0.0.1:1".into(),
            chain_id: 1,
            registry: Address::repeat_byte(1),
            distributor: None,
            signer_key: SignerKey::new(key),
            confirmations: 1,
            max_fee_per_gas: 100,
            priority_fee_per_gas: 1,
            bump_after: Duration::from_secs(1),
            bump_percent: 20,
            poll_interval: Duration::from_millis(100),
            rpc_timeout: Duration::from_secs(1),
        }
    }

    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    #[test]
    fn the_key_never_prints() {
        let p = params(KEY);
        let text = format!("{p:?}");
        assert!(!text.contains("59c6995e"), "{text}");
        let chain = EvmChain::new(p).expect("valid");
        let text = format!("{chain:?}");
        assert!(!text.contains("59c6995e"), "{text}");
        assert!(
            text.contains("0x70997970c51812dc3a010c7d01b50e0d17dc79c8"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_key_is_named_without_echoing_it() {
        let err = EvmChain::new(params("0x1234zz")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chain ethereum: the signer key is not a 32-byte hex private key"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let mut p = params(KEY);
        p.bump_percent = 5;
        assert!(
            EvmChain::new(p)
                .unwrap_err()
                .to_string()
                .contains("bump_percent 5")
        );
        let mut p = params(KEY);
        p.rpc_url = "ws://127.0.0.1:8545".into();
        assert!(
            EvmChain::new(p)
                .unwrap_err()
                .to_string()
                .contains("only http and https")
        );
        let mut p = params(KEY);
        p.confirmations = 0;
        assert!(
            EvmChain::new(p)
                .unwrap_err()
                .to_string()
                .contains("confirmations")
        );
    }

    #[tokio::test]
    async fn errors_never_show_the_key_in_an_rpc_url() {
        assert_eq!(
            redact_url("https://eth.example.net/v3/0123secret"),
            "https://eth.example.net/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        assert_eq!(
            redact_url("https://user:pw@rpc.example.net/?key=secret"),
            "https://rpc.example.net/…"
        );
        let mut p = params(KEY);
        p.rpc_url = "wss://rpc.example.net/v3/0123secret".into();
        let err = EvmChain::new(p).unwrap_err().to_string();
        assert!(!err.contains("0123secret"), "{err}");
        // A request that fails names the host, never the path that holds the key.
        let mut p = params(KEY);
        p.rpc_url = "http://127.0.0.1:1/v3/0123secret".into();
        let chain = EvmChain::new(p).unwrap();
        let err = chain.reader.chain_id().await.unwrap_err().to_string();
        assert!(err.contains("127.0.0.1:1"), "{err}");
        assert!(!err.contains("0123secret"), "{err}");
        assert!(!format!("{chain:?}").contains("0123secret"));
    }
}
