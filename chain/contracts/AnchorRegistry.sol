// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {MerkleProof} from "./lib/MerkleProof.sol";

/// @title AnchorRegistry
/// @notice Merkle roots of campaign performance: one root per (publisher, epoch),
/// written once and never overwritten.
/// @dev Anyone may anchor; roots are kept per sender, so a reader trusts a publisher
/// address, not the registry. The engine anchors the root of one epoch's campaign
/// leaves (engine/src/merkle.rs):
///
///   leaf encoding v1 (137 bytes), `CampaignLeaf::encode`:
///     version      uint8      = 1
///     epoch        uint64     big-endian
///     campaign id  bytes16    the UUID's 16 raw bytes
///     12 counters  uint64     big-endian each, in this order: injected, delivered,
///                             deferred, bounced_hard, bounced_soft, expired, opened,
///                             clicked, unsubscribed, complained, rejected, suppressed
///     reward_total uint128    big-endian, cumulative reward up to this epoch
///   leaf hash   = keccak256(keccak256(encoding))
///   inner node  = keccak256(min(a, b) ++ max(a, b))
///
/// An all-zero root is refused: `rootOf` answers zero for "not anchored".
contract AnchorRegistry {
    /// @notice `publisher` anchored `root` for `epoch`.
    event Anchored(address indexed publisher, uint64 indexed epoch, bytes32 root);

    /// @notice The sender already anchored `root` for `epoch`; roots are never replaced.
    error AlreadyAnchored(address publisher, uint64 epoch, bytes32 root);
    /// @notice The all-zero root cannot be anchored (it reads as "not anchored").
    error ZeroRoot();

    mapping(address publisher => mapping(uint64 epoch => bytes32 root)) private _roots;

    /// @notice Anchors `root` as the sender's root for `epoch`, once.
    function anchor(uint64 epoch, bytes32 root) external {
        if (root == bytes32(0)) revert ZeroRoot();
        bytes32 existing = _roots[msg.sender][epoch];
        if (existing != bytes32(0)) revert AlreadyAnchored(msg.sender, epoch, existing);
        _roots[msg.sender][epoch] = root;
        emit Anchored(msg.sender, epoch, root);
    }

    /// @notice The root `publisher` anchored for `epoch`, or zero if none.
    function rootOf(address publisher, uint64 epoch) external view returns (bytes32) {
        return _roots[publisher][epoch];
    }

    /// @notice True when `leaf` (the leaf hash, already hashed twice) with `proof`
    /// hashes up to the root `publisher` anchored for `epoch`; false if none.
    function verify(address publisher, uint64 epoch, bytes32 leaf, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        bytes32 root = _roots[publisher][epoch];
        return root != bytes32(0) && MerkleProof.verifyCalldata(proof, root, leaf);
    }
}
