// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title RentalMath
/// @notice Pricing and SLA arithmetic of gpuex rentals, in basis points (10000 = 100%).
/// @dev Every division rounds down, so the escrow never credits more than it holds.
library RentalMath {
    uint256 internal constant BPS = 10_000;

    /// @notice Gross earnings of one report: delivered x price x (floor + (1 - floor) x utilisation).
    /// @dev With floorBps = 10000 this is pure time pricing. price (< 2^64) x seconds (< 2^32) x factor
    /// (<= 10^8) cannot overflow.
    function earnings(uint256 pricePerSecond, uint256 deliveredSeconds, uint256 floorBps, uint256 utilBps)
        internal
        pure
        returns (uint256)
    {
        uint256 factor = floorBps * BPS + (BPS - floorBps) * utilBps;
        return (pricePerSecond * deliveredSeconds * factor) / (BPS * BPS);
    }

    /// @notice The share of collateral (in bps) slashed for an SLA breach; zero when within the SLA.
    /// @dev A breach is missed > (1 - slaBps) x elapsed; the slash is slaSlashBps scaled by missed / elapsed.
    function slaSlashBps(uint256 missedSeconds, uint256 elapsedSeconds, uint256 slaBps, uint256 maxSlashBps)
        internal
        pure
        returns (uint256)
    {
        if (elapsedSeconds == 0 || missedSeconds * BPS <= (BPS - slaBps) * elapsedSeconds) return 0;
        return (maxSlashBps * missedSeconds) / elapsedSeconds;
    }
}
