//! Deploying the contracts and sending one-off transactions: for setting up a chain
//! (and for tests), not for the engine's own writes, which go through
//! [`crate::EvmChain`] with its fee caps, resubmission and confirmations.

use crate::contracts::{Artifact, RewardToken, bytecode, describe_revert};
use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{BlockNumberOrTag, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolValue};
use std::time::Duration;

/// Why a deployment or a one-off transaction failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeployError(String);

fn err(what: &str, e: impl std::fmt::Display) -> DeployError {
    DeployError(format!("{what}: {e}"))
}

/// Sends transactions from one key and waits for their receipts.
pub struct Deployer {
    provider: RootProvider,
    signer: PrivateKeySigner,
    chain_id: u64,
}

impl Deployer {
    /// Connects to `url` with the hex private key `key`.
    pub async fn connect(url: &str, key: &str) -> Result<Self, DeployError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let signer: PrivateKeySigner = key
            .trim()
            .trim_start_matches("0x")
            .parse()
            .map_err(|_| DeployError("the key is not a 32-byte hex private key".into()))?;
        let url: reqwest::Url = url.parse().map_err(|e| err("rpc url", e))?;
        let provider = RootProvider::new_http(url);
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| err("eth_chainId", e))?;
        Ok(Deployer {
            provider,
            signer,
            chain_id,
        })
    }

    /// The sending address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The chain id the node reports.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The provider, for reads.
    pub fn provider(&self) -> &RootProvider {
        &self.provider
    }

    /// Deploys `contract` with ABI-encoded constructor arguments; returns its address.
    pub async fn deploy(&self, contract: Artifact, args: &[u8]) -> Result<Address, DeployError> {
        let mut code = bytecode(contract).to_vec();
        code.extend_from_slice(args);
        let receipt = self.send(TxKind::Create, code.into()).await?;
        receipt
            .contract_address
            .ok_or_else(|| DeployError(format!("deploying {contract:?}: no contract address")))
    }

    /// Calls `to` with `input` and waits for the receipt; a revert is an error naming it.
    pub async fn call(
        &self,
        to: Address,
        input: Vec<u8>,
    ) -> Result<TransactionReceipt, DeployError> {
        self.send(TxKind::Call(to), input.into()).await
    }

    /// Reads `to` with `input` (`eth_call`); a revert is an error naming it.
    pub async fn read(&self, to: Address, input: Vec<u8>) -> Result<Bytes, DeployError> {
        let tx = TransactionRequest::default()
            .from(self.address())
            .to(to)
            .input(Bytes::from(input).into());
        self.provider
            .call(tx)
            .await
            .map_err(|e| revert_or(e, "eth_call"))
    }

    async fn send(&self, to: TxKind, input: Bytes) -> Result<TransactionReceipt, DeployError> {
        let from = self.address();
        let mut request = TransactionRequest::default()
            .from(from)
            .input(input.clone().into());
        request.to = Some(to);
        let gas = self
            .provider
            .estimate_gas(request)
            .await
            .map_err(|e| revert_or(e, "eth_estimateGas"))?;
        let base = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| err("eth_getBlockByNumber", e))?
            .and_then(|b| b.header.base_fee_per_gas)
            .unwrap_or(1_000_000_000);
        let nonce = self
            .provider
            .get_transaction_count(from)
            .pending()
            .await
            .map_err(|e| err("eth_getTransactionCount", e))?;
        let tip = 1_000_000_000u128;
        let mut tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit: gas + gas / 5,
            max_fee_per_gas: u128::from(base) * 2 + tip,
            max_priority_fee_per_gas: tip,
            to,
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        };
        let signature = self
            .signer
            .sign_transaction_sync(&mut tx)
            .map_err(|e| err("signing", e))?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        let hash = *envelope.tx_hash();
        let _pending = self
            .provider
            .send_raw_transaction(&envelope.encoded_2718())
            .await
            .map_err(|e| err("eth_sendRawTransaction", e))?;
        for _ in 0..600 {
            if let Some(r) = self
                .provider
                .get_transaction_receipt(hash)
                .await
                .map_err(|e| err("eth_getTransactionReceipt", e))?
            {
                if !r.status() {
                    return Err(DeployError(format!("transaction {hash} reverted")));
                }
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(DeployError(format!(
            "transaction {hash} not mined within a minute"
        )))
    }
}

/// The contracts [`deploy_all`] put on a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub chain_id: u64,
    /// The deploying account: the distributor's owner, so the engine's signer.
    pub owner: Address,
    pub registry: Address,
    pub distributor: Address,
    pub token: Address,
    /// Whether `token` is a RewardToken deployed here (its whole supply then funds the
    /// distributor).
    pub minted: bool,
}

/// Deploys an AnchorRegistry and a RewardDistributor paying `token`, or a new
/// RewardToken of `reward_supply` base units that all go to the distributor.
pub async fn deploy_all(
    url: &str,
    key: &str,
    token: Option<Address>,
    reward_supply: u128,
) -> Result<Deployed, DeployError> {
    let d = Deployer::connect(url, key).await?;
    let registry = d.deploy(Artifact::AnchorRegistry, &[]).await?;
    let (token, minted) = match token {
        Some(t) => (t, false),
        None => {
            let supply = U256::from(reward_supply).abi_encode();
            (d.deploy(Artifact::RewardToken, &supply).await?, true)
        }
    };
    let distributor = d
        .deploy(Artifact::RewardDistributor, &token.abi_encode())
        .await?;
    if minted {
        let transfer = RewardToken::transferCall {
            to: distributor,
            value: U256::from(reward_supply),
        };
        d.call(token, transfer.abi_encode()).await?;
    }
    Ok(Deployed {
        chain_id: d.chain_id(),
        owner: d.address(),
        registry,
        distributor,
        token,
        minted,
    })
}

fn revert_or(
    e: alloy::transports::RpcError<alloy::transports::TransportErrorKind>,
    what: &str,
) -> DeployError {
    match e.as_error_resp().and_then(|p| p.as_revert_data()) {
        Some(data) => DeployError(format!("reverted: {}", describe_revert(&data))),
        None => err(what, e),
    }
}
