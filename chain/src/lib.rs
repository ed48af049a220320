//! Chain adapters: where Merkle roots of campaign performance are anchored.
//!
//! The local ledger is the embedded default: a hash-chained list of roots kept in the
//! store. EVM chains (alloy) join it behind the same port.

pub mod ledger;

pub use ledger::LedgerChain;
