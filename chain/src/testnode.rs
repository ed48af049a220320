//! Local EVM nodes for tests and local development (`scripts/evm-node.sh`): the two
//! shared nodes, private nodes a test may stop mining on, fresh funded keys and
//! deployed contracts, so every test works with state of its own.

use crate::deploy::{Deployer, deploy_all};
use crate::{EvmParams, SignerKey};
use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, RootProvider};
use maily_engine::merkle::keccak;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A node and how to reach it.
pub struct LocalNode {
    /// "ethereum", "polygon" or "private".
    pub name: String,
    pub url: String,
    pub chain_id: u64,
    provider: RootProvider,
    child: Option<Child>,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn script() -> String {
    format!("{}/../scripts/evm-node.sh", env!("CARGO_MANIFEST_DIR"))
}

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl LocalNode {
    /// One of the two shared nodes `scripts/evm-node.sh start` runs: `"ethereum"`
    /// (chain id 1337, port 8545) or `"polygon"` (80002, 8546), or as its variables
    /// say. Panics with the command to run when the node does not answer.
    pub async fn shared(name: &str) -> Self {
        let upper = name.to_ascii_uppercase();
        let (port, id) = match name {
            "ethereum" => (8545, 1337),
            "polygon" => (8546, 80002),
            other => panic!("no shared node {other:?}: ethereum or polygon"),
        };
        let port = env_or(&format!("MAILY_EVM_{upper}_PORT"), port);
        let chain_id = env_or(&format!("MAILY_EVM_{upper}_CHAIN_ID"), id);
        let url = format!("http://127.0.0.1:{port}");
        let node = Self::at(name, &url, chain_id, None);
        match node.provider.get_chain_id().await {
            Ok(got) if got == chain_id => node,
            Ok(got) => panic!("{url} serves chain id {got}, not {chain_id}"),
            Err(e) => panic!("no EVM node at {url} ({e}): run scripts/evm-node.sh start"),
        }
    }

    /// A node of this test's own on a free port, stopped when dropped.
    pub async fn private(chain_id: u64) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("bash")
            .arg(script())
            .args(["run", &port.to_string(), &chain_id.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting scripts/evm-node.sh run");
        let url = format!("http://127.0.0.1:{port}");
        let mut node = Self::at("private", &url, chain_id, Some(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(id) = node.provider.get_chain_id().await {
                assert_eq!(id, chain_id);
                return node;
            }
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the private node on {url} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the private node on {url} did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn at(name: &str, url: &str, chain_id: u64, child: Option<Child>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        LocalNode {
            name: name.into(),
            url: url.into(),
            chain_id,
            provider: RootProvider::new_http(url.parse().expect("node url")),
            child,
        }
    }

    /// The node's provider.
    pub fn provider(&self) -> &RootProvider {
        &self.provider
    }

    /// A JSON-RPC call by name (ganache's `evm_*` and `miner_*` methods).
    pub async fn rpc(&self, method: &'static str, params: serde_json::Value) -> serde_json::Value {
        self.provider
            .raw_request(method.into(), params)
            .await
            .unwrap_or_else(|e| panic!("{method} on {}: {e}", self.url))
    }

    /// The transactions `address` has had mined.
    pub async fn mined_nonce(&self, address: Address) -> u64 {
        self.provider
            .get_transaction_count(address)
            .latest()
            .await
            .unwrap_or_else(|e| panic!("eth_getTransactionCount on {}: {e}", self.url))
    }

    /// A new private key no other test uses, holding 100 ETH.
    pub async fn funded_key(&self) -> String {
        let key = fresh_key();
        let address = Deployer::connect(&self.url, &key)
            .await
            .expect("connecting")
            .address();
        let wei = U256::from(100u64) * U256::from(10u64).pow(U256::from(18u64));
        self.rpc(
            "evm_setAccountBalance",
            serde_json::json!([address, format!("{wei:#x}")]),
        )
        .await;
        key
    }

    /// The adapter's settings for this node with `key` and a deployed registry, tuned
    /// for a node that mines every second.
    pub fn params(&self, key: &str, registry: Address) -> EvmParams {
        EvmParams {
            name: self.name.clone(),
            rpc_url: self.url.clone(),
            chain_id: self.chain_id,
            registry,
            distributor: None,
            signer_key: SignerKey::new(key),
            confirmations: 2,
            max_fee_per_gas: 200_000_000_000,
            priority_fee_per_gas: 1_500_000_000,
            bump_after: Duration::from_secs(30),
            bump_percent: 20,
            poll_interval: Duration::from_millis(200),
            rpc_timeout: Duration::from_secs(10),
        }
    }

    /// Deploys the contracts from a fresh funded key: the registry, and a token with a
    /// distributor holding `reward_supply` of it.
    pub async fn deploy(&self, reward_supply: u128) -> Deployment {
        let key = self.funded_key().await;
        let d = deploy_all(&self.url, &key, None, reward_supply)
            .await
            .expect("deploying the contracts");
        Deployment {
            key,
            registry: d.registry,
            token: d.token,
            distributor: d.distributor,
        }
    }
}

/// Contracts deployed by one key (the owner of the distributor).
#[derive(Debug, Clone)]
pub struct Deployment {
    pub key: String,
    pub registry: Address,
    pub token: Address,
    pub distributor: Address,
}

/// A private key of this process alone.
pub fn fresh_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}/{}/{}",
        SystemTime::now(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    format!("0x{}", hex::encode(keccak(seed.as_bytes())))
}
