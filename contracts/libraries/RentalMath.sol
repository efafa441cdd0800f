// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title RentalMath
/// @notice Pricing and SLA arithmetic of gpuex rentals, in basis points (10000 = 100%).
/// @dev Every division rounds down, so the escrow never credits more than it holds.
library RentalMath {
    uint256 internal constant BPS = 10_000;

    /// @notice Gross earnings of a rental's totals: price x (floor x delivered + (1 - floor) x utilSeconds), where
    /// utilSeconds are the delivered seconds weighted by utilisation.
    /// @dev With floorBps = 10000 this is pure time pricing. Computed from the totals, never summed per report,
    /// so crediting the difference of two totals has no rounding drift. utilSeconds <= deliveredSeconds makes
    /// the result at most price x delivered; price (< 2^64) x seconds (< 2^32) x bps (< 2^14) cannot overflow.
    function earnings(uint256 pricePerSecond, uint256 deliveredSeconds, uint256 utilSeconds, uint256 floorBps)
        internal
        pure
        returns (uint256)
    {
        return (pricePerSecond * (deliveredSeconds * floorBps + utilSeconds * (BPS - floorBps))) / BPS;
    }

    /// @notice The protocol fee on gross earnings, rounded down.
    function fee(uint256 earned, uint256 feeBps) internal pure returns (uint256) {
        return (earned * feeBps) / BPS;
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
