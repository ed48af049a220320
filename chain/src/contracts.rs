//! The ABI of the contracts in `chain/contracts/` (see docs/chain.md), and their
//! compiled artifacts for deploying them.

use alloy::primitives::Bytes;
use alloy::sol;

sol! {
    /// One root per (publisher, epoch), written once.
    contract AnchorRegistry {
        event Anchored(address indexed publisher, uint64 indexed epoch, bytes32 root);
        error AlreadyAnchored(address publisher, uint64 epoch, bytes32 root);
        error ZeroRoot();
        function anchor(uint64 epoch, bytes32 root) external;
        function rootOf(address publisher, uint64 epoch) external view returns (bytes32);
        function verify(address publisher, uint64 epoch, bytes32 leaf, bytes32[] proof) external view returns (bool);
    }

    /// Per-epoch Merkle claims of one ERC-20 token.
    contract RewardDistributor {
        event RootPublished(uint64 indexed epoch, bytes32 root);
        event Claimed(uint64 indexed epoch, address indexed account, uint256 amount);
        error NotOwner(address caller);
        error ZeroAddress();
        error ZeroRoot();
        error RootAlreadyPublished(uint64 epoch, bytes32 root);
        error RootNotPublished(uint64 epoch);
        error AlreadyClaimed(uint64 epoch, address account);
        error InvalidProof(uint64 epoch, address account, uint256 amount);
        error TransferFailed(address to, uint256 amount);
        function publishRoot(uint64 epoch, bytes32 root) external;
        function claim(uint64 epoch, address account, uint256 amount, bytes32[] proof) external;
        function isClaimed(uint64 epoch, address account) external view returns (bool);
        function rootOf(uint64 epoch) external view returns (bytes32);
        function leafHash(address account, uint256 amount) external pure returns (bytes32);
        function token() external view returns (address);
        function owner() external view returns (address);
    }

    /// The ERC-20 used in tests and on local chains.
    contract RewardToken {
        error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
        error NotMinter(address caller);
        function balanceOf(address account) external view returns (uint256);
        function transfer(address to, uint256 value) external returns (bool);
        function mint(address to, uint256 value) external;
    }
}

/// A contract's creation bytecode from its committed artifact.
pub fn bytecode(contract: Artifact) -> Bytes {
    let json = match contract {
        Artifact::AnchorRegistry => include_str!("../contracts/artifacts/AnchorRegistry.json"),
        Artifact::RewardDistributor => {
            include_str!("../contracts/artifacts/RewardDistributor.json")
        }
        Artifact::RewardToken => include_str!("../contracts/artifacts/RewardToken.json"),
    };
    let v: serde_json::Value = serde_json::from_str(json).expect("committed artifact is JSON");
    let hex = v["bytecode"].as_str().expect("artifact has bytecode");
    hex.parse().expect("artifact bytecode is hex")
}

/// The contracts whose artifacts are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    AnchorRegistry,
    RewardDistributor,
    RewardToken,
}

/// Names a revert of any of the contracts above from its data, with its arguments.
pub fn describe_revert(data: &[u8]) -> String {
    use alloy::sol_types::SolInterface;
    if let Ok(e) = AnchorRegistry::AnchorRegistryErrors::abi_decode(data) {
        return match e {
            AnchorRegistry::AnchorRegistryErrors::AlreadyAnchored(a) => format!(
                "AlreadyAnchored(publisher {}, epoch {}, root {})",
                a.publisher, a.epoch, a.root
            ),
            AnchorRegistry::AnchorRegistryErrors::ZeroRoot(_) => "ZeroRoot()".into(),
        };
    }
    if let Ok(e) = RewardDistributor::RewardDistributorErrors::abi_decode(data) {
        use RewardDistributor::RewardDistributorErrors as E;
        return match e {
            E::NotOwner(x) => format!("NotOwner(caller {})", x.caller),
            E::ZeroAddress(_) => "ZeroAddress()".into(),
            E::ZeroRoot(_) => "ZeroRoot()".into(),
            E::RootAlreadyPublished(x) => {
                format!("RootAlreadyPublished(epoch {}, root {})", x.epoch, x.root)
            }
            E::RootNotPublished(x) => format!("RootNotPublished(epoch {})", x.epoch),
            E::AlreadyClaimed(x) => {
                format!("AlreadyClaimed(epoch {}, account {})", x.epoch, x.account)
            }
            E::InvalidProof(x) => format!(
                "InvalidProof(epoch {}, account {}, amount {})",
                x.epoch, x.account, x.amount
            ),
            E::TransferFailed(x) => format!("TransferFailed(to {}, amount {})", x.to, x.amount),
        };
    }
    if let Ok(e) = RewardToken::RewardTokenErrors::abi_decode(data) {
        return match e {
            RewardToken::RewardTokenErrors::ERC20InsufficientBalance(x) => format!(
                "ERC20InsufficientBalance(sender {}, balance {}, needed {})",
                x.sender, x.balance, x.needed
            ),
            RewardToken::RewardTokenErrors::NotMinter(x) => {
                format!("NotMinter(caller {})", x.caller)
            }
        };
    }
    if data.is_empty() {
        "reverted without data (no such function at that address?)".into()
    } else {
        format!("reverted with data 0x{}", hex::encode(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::SolError;

    #[test]
    fn artifacts_deploy_code_is_present() {
        for a in [
            Artifact::AnchorRegistry,
            Artifact::RewardDistributor,
            Artifact::RewardToken,
        ] {
            assert!(bytecode(a).len() > 100, "{a:?}");
        }
    }

    #[test]
    fn reverts_are_named_with_their_arguments() {
        let data = AnchorRegistry::AlreadyAnchored {
            publisher: alloy::primitives::Address::repeat_byte(1),
            epoch: 3,
            root: alloy::primitives::B256::repeat_byte(2),
        }
        .abi_encode();
        let text = describe_revert(&data);
        assert!(
            text.starts_with("AlreadyAnchored(publisher 0x0101"),
            "{text}"
        );
        assert!(text.contains("epoch 3"), "{text}");
        assert_eq!(
            describe_revert(&[]),
            "reverted without data (no such function at that address?)"
        );
    }
}
