//! Chain adapters: where Merkle roots of campaign performance are anchored.
//!
//! The local ledger is the embedded default: a hash-chained list of roots kept in the
//! store. EVM chains (alloy) sit behind the same port: [`EvmChain`] anchors in an
//! `AnchorRegistry` contract and publishes reward roots to a `RewardDistributor`.

pub mod contracts;
pub mod deploy;
pub mod evm;
pub mod ledger;
pub mod testnode;

pub use alloy::primitives::Address;
pub use evm::{EvmChain, EvmParams, EvmReader, EvmSetupError, SignerKey};
pub use ledger::LedgerChain;
