// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title TestStablecoin
/// @notice A 6-decimal USD test token with EIP-2612 permit and a rate-limited faucet, for local chains and
/// public testnets. It has no value: the owner can mint at will.
contract TestStablecoin is ERC20, ERC20Permit, Ownable {
    /// @notice Tokens one faucet claim mints (10,000 tUSD).
    uint256 public constant FAUCET_AMOUNT = 10_000e6;
    /// @notice Seconds an account waits between two faucet claims.
    uint256 public constant FAUCET_COOLDOWN = 1 days;

    mapping(address account => uint256 timestamp) private _lastClaim;

    /// @notice The account claimed from the faucet less than FAUCET_COOLDOWN ago.
    error TestStablecoin_FaucetCooldown(address account, uint256 availableAt);

    /// @notice Emitted when an account claims from the faucet.
    event FaucetClaimed(address indexed account, uint256 amount);

    constructor(address owner_) ERC20("gpuex Test USD", "tUSD") ERC20Permit("gpuex Test USD") Ownable(owner_) {}

    /// @notice Mints FAUCET_AMOUNT to the caller, at most once per FAUCET_COOLDOWN.
    /// @dev Emits {FaucetClaimed}.
    function faucet() external {
        uint256 last = _lastClaim[msg.sender];
        if (last != 0 && block.timestamp < last + FAUCET_COOLDOWN) {
            revert TestStablecoin_FaucetCooldown(msg.sender, last + FAUCET_COOLDOWN);
        }
        _lastClaim[msg.sender] = block.timestamp;
        _mint(msg.sender, FAUCET_AMOUNT);
        emit FaucetClaimed(msg.sender, FAUCET_AMOUNT);
    }

    /// @notice Mints `amount` to `to`. Only the owner (deploy scripts and tests).
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    /// @inheritdoc ERC20
    function decimals() public pure override returns (uint8) {
        return 6;
    }
}
