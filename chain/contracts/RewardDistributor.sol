// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "./lib/IERC20.sol";
import {MerkleProof} from "./lib/MerkleProof.sol";

/// @title RewardDistributor
/// @notice Per-epoch reward claims of one ERC-20 token. For each epoch the owner
/// publishes, once, the Merkle root of (account, amount) leaves; each account claims
/// its amount once per epoch with its proof, and the tokens go to the account
/// whoever sends the claim.
/// @dev Leaf and tree, the same scheme as `engine/src/merkle.rs`:
///
///   leaf encoding = abi.encode(address account, uint256 amount)
///                   (64 bytes: the address left-padded to 32 bytes, then the
///                   amount as a 32-byte big-endian integer)
///   leaf hash     = keccak256(bytes.concat(keccak256(leaf encoding)))
///   inner node    = keccak256(min(a, b) ++ max(a, b))
///
/// This is the leaf hash of OpenZeppelin's StandardMerkleTree for ["address",
/// "uint256"]. An account appears at most once per epoch: a second leaf for the same
/// account in one epoch could never be claimed. The contract must hold enough tokens
/// for the epoch's claims; a claim it cannot pay reverts with the token's error.
contract RewardDistributor {
    /// @notice The reward token.
    IERC20 public immutable token;
    /// @notice The only address that may publish roots.
    address public owner;

    mapping(uint64 epoch => bytes32 root) private _roots;
    mapping(uint64 epoch => mapping(address account => bool)) private _claimed;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    /// @notice The owner published `root` for `epoch`.
    event RootPublished(uint64 indexed epoch, bytes32 root);
    /// @notice `account` received `amount` for `epoch`.
    event Claimed(uint64 indexed epoch, address indexed account, uint256 amount);

    /// @notice Only the owner may do this.
    error NotOwner(address caller);
    /// @notice The zero address is not a valid token or owner.
    error ZeroAddress();
    /// @notice The all-zero root cannot be published (it reads as "not published").
    error ZeroRoot();
    /// @notice `epoch` already has `root`; roots are never replaced.
    error RootAlreadyPublished(uint64 epoch, bytes32 root);
    /// @notice No root was published for `epoch`.
    error RootNotPublished(uint64 epoch);
    /// @notice `account` already claimed its reward for `epoch`.
    error AlreadyClaimed(uint64 epoch, address account);
    /// @notice The proof does not lead from (account, amount) to the epoch's root.
    error InvalidProof(uint64 epoch, address account, uint256 amount);
    /// @notice The token answered `false` to a transfer, or is not a contract.
    error TransferFailed(address to, uint256 amount);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @param token_ The ERC-20 token paid out; the deployer becomes the owner.
    constructor(IERC20 token_) {
        if (address(token_) == address(0)) revert ZeroAddress();
        token = token_;
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    /// @notice Publishes the claims root of `epoch`, once; owner only.
    function publishRoot(uint64 epoch, bytes32 root) external onlyOwner {
        if (root == bytes32(0)) revert ZeroRoot();
        bytes32 existing = _roots[epoch];
        if (existing != bytes32(0)) revert RootAlreadyPublished(epoch, existing);
        _roots[epoch] = root;
        emit RootPublished(epoch, root);
    }

    /// @notice Hands the owner role to `newOwner`; owner only.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// @notice Pays `amount` to `account` for `epoch` if `proof` shows the leaf is in
    /// the epoch's root and the account has not claimed that epoch yet.
    function claim(uint64 epoch, address account, uint256 amount, bytes32[] calldata proof)
        external
    {
        bytes32 root = _roots[epoch];
        if (root == bytes32(0)) revert RootNotPublished(epoch);
        if (_claimed[epoch][account]) revert AlreadyClaimed(epoch, account);
        if (!MerkleProof.verifyCalldata(proof, root, leafHash(account, amount))) {
            revert InvalidProof(epoch, account, amount);
        }
        _claimed[epoch][account] = true;
        emit Claimed(epoch, account, amount);
        _safeTransfer(account, amount);
    }

    /// @notice The root published for `epoch`, or zero if none.
    function rootOf(uint64 epoch) external view returns (bytes32) {
        return _roots[epoch];
    }

    /// @notice True once `account` has claimed its reward for `epoch`.
    function isClaimed(uint64 epoch, address account) external view returns (bool) {
        return _claimed[epoch][account];
    }

    /// @notice The leaf hash of (account, amount), as the tree must hold it.
    function leafHash(address account, uint256 amount) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, amount))));
    }

    /// Transfers like OpenZeppelin's SafeERC20: a token that returns nothing counts
    /// as success if it is a contract; a revert is passed on with its data.
    function _safeTransfer(address to, uint256 amount) private {
        address t = address(token);
        (bool ok, bytes memory ret) = t.call(abi.encodeCall(IERC20.transfer, (to, amount)));
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        if (ret.length == 0 ? t.code.length == 0 : !abi.decode(ret, (bool))) {
            revert TransferFailed(to, amount);
        }
    }
}
