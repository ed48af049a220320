// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title MerkleProof
/// @notice Merkle inclusion proofs with sorted-pair keccak-256, the scheme of
/// OpenZeppelin's `MerkleProof` and of the engine's `engine/src/merkle.rs`.
/// @dev A proof is the list of sibling hashes from the leaf up to the root. Each step
/// hashes the running hash with the next sibling, the smaller of the two first, so a
/// proof carries no left/right flags. A level with an odd node carries that node up
/// unchanged, which only shortens the proofs that pass through it. Callers must hash
/// leaves so that a leaf can never equal an inner node (64 bytes of input): the
/// engine and the contracts here hash every leaf twice.
library MerkleProof {
    /// @notice True when `leaf` with `proof` hashes up to `root`.
    function verifyCalldata(bytes32[] calldata proof, bytes32 root, bytes32 leaf)
        internal
        pure
        returns (bool)
    {
        return processProofCalldata(proof, leaf) == root;
    }

    /// @notice The root that `leaf` with `proof` hashes up to.
    function processProofCalldata(bytes32[] calldata proof, bytes32 leaf)
        internal
        pure
        returns (bytes32 computed)
    {
        computed = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            computed = hashPair(computed, proof[i]);
        }
    }

    /// @notice True when `leaf` with `proof` hashes up to `root` (proof in memory).
    function verify(bytes32[] memory proof, bytes32 root, bytes32 leaf)
        internal
        pure
        returns (bool)
    {
        bytes32 computed = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            computed = hashPair(computed, proof[i]);
        }
        return computed == root;
    }

    /// @notice keccak256 of the two hashes, the smaller first.
    function hashPair(bytes32 a, bytes32 b) internal pure returns (bytes32 value) {
        (bytes32 lo, bytes32 hi) = a < b ? (a, b) : (b, a);
        assembly ("memory-safe") {
            mstore(0x00, lo)
            mstore(0x20, hi)
            value := keccak256(0x00, 0x40)
        }
    }
}
