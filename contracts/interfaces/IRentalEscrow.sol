// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {IProviderRegistry} from "./IProviderRegistry.sol";
import {DeclineReason, Report, RentalStatus, SkipReason, SlashReason} from "../types/DataTypes.sol";

/// @notice A rental as `IRentalEscrow.getRental` returns it.
struct RentalView {
    RentalStatus status; // None for an unknown or superseded id
    address renter;
    uint256 pricePerSecond;
    uint256 duration; // seconds from `since`; a termination shortens it
    uint256 since; // opening time while Open, start time once started
    uint256 utilFloorBps;
    uint256 feeBps;
    uint256 lastSeq; // seq of the last applied report
    uint256 coveredSeconds; // seconds after `since` that the applied totals cover
    uint256 deliveredSeconds; // applied total
    uint256 utilSeconds; // applied total
    uint256 earned; // gross earnings of the applied totals, before the protocol fee
    uint256 claimed; // of `earned`, what the provider already claimed while the rental ran
}

/// @title IRentalEscrow
/// @notice Renter deposits for GPU rentals, settled per second of delivered GPU time by usage reports that
/// k of n oracles co-sign as one EIP-712 batch.
/// @dev Rental ids are `offerId << 32 | nonce`, where nonce counts the offer's rentals from 1. Every payout
/// credits a balance that its owner withdraws (pull payments); nothing is pushed inside settlement.
interface IRentalEscrow {
    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice The offer already has a live rental (one at a time).
    error Escrow_OfferRented(uint256 offerId);
    /// @notice The offer's price is above the most the renter accepted.
    error Escrow_PriceAboveMax(uint256 offerId, uint256 pricePerSecond, uint256 maxPricePerSecond);
    /// @notice The escrow received a different amount than it asked the token to transfer.
    error Escrow_TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice No rental has this id, or a later rental of the same offer replaced it.
    error Escrow_UnknownRental(uint256 rentalId);
    /// @notice The rental is not in a state that allows this action.
    error Escrow_RentalNotActive(uint256 rentalId, RentalStatus status);
    /// @notice The caller is not the offer's provider nor its agent key.
    error Escrow_NotProviderOrAgent(uint256 rentalId, address caller);
    /// @notice The caller is not the rental's renter.
    error Escrow_NotRenter(uint256 rentalId, address caller);
    /// @notice The rental was not started within the start timeout; `claimStartTimeout` settles it.
    error Escrow_StartTimedOut(uint256 rentalId);
    /// @notice The start timeout has not passed yet.
    error Escrow_StartTimeoutNotReached(uint256 rentalId, uint256 timeoutAt);
    /// @notice The rental's end plus the report grace has not passed yet.
    error Escrow_NotYetFinalizable(uint256 rentalId, uint256 finalizableAt);
    /// @notice The rental has already reached its end.
    error Escrow_RentalEnded(uint256 rentalId, uint256 endedAt);
    /// @notice A batch with no reports was submitted.
    error Escrow_EmptyBatch();
    /// @notice A report field holds a value wider than its type: only signers that signed raw words produce one.
    error Escrow_MalformedReport(uint256 rentalId);
    /// @notice The signatures of a batch are not a whole number of compact (r, yParityAndS) pairs: `words` is odd.
    error Escrow_MalformedSignatures(uint256 words);
    /// @notice Fewer signatures than the oracle threshold.
    error Escrow_NotEnoughSignatures(uint256 given, uint256 threshold);
    /// @notice A signature recovers to an address outside the current oracle set.
    error Escrow_SignerNotInOracleSet(address signer);
    /// @notice Two signatures of a batch come from the same oracle.
    error Escrow_DuplicateSigner(address signer);
    /// @notice The reason given to `decline` is not a DeclineReason.
    error Escrow_UnknownDeclineReason(uint256 rentalId, uint256 reason);
    /// @notice The account has no balance to withdraw.
    error Escrow_NothingToWithdraw(address account);
    /// @notice The rental's applied totals earned nothing beyond what was already claimed.
    error Escrow_NothingToClaim(uint256 rentalId);
    /// @notice No oracle set is scheduled.
    error Escrow_NoOracleSetScheduled();
    /// @notice The scheduled oracle set's governance delay has not passed yet.
    error Escrow_OracleSetNotYetEffective(uint256 effectiveAt);
    /// @notice The oracle set is empty, too large, holds the zero address or a duplicate, or the threshold is
    /// not within 1..n.
    error Escrow_InvalidOracleSet();
    /// @notice The fee is above the cap fixed at deployment.
    error Escrow_FeeAboveCap(uint256 feeBps, uint256 capBps);
    /// @notice The zero address was given where an address is required.
    error Escrow_ZeroAddress();
    /// @notice A deployment parameter is out of range.
    error Escrow_InvalidParameter();
    /// @notice The registry was deployed for another escrow address.
    error Escrow_RegistryNotBound(address registryEscrow);

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Emitted when a renter opens a rental and its deposit is pulled.
    event RentalOpened(
        uint256 indexed rentalId,
        uint256 indexed offerId,
        address indexed renter,
        uint256 pricePerSecond,
        uint256 duration,
        uint256 deposit,
        bytes32 jobSpecHash
    );
    /// @notice Emitted when a rental starts; `byReport` is true when the first report started it.
    event RentalStarted(uint256 indexed rentalId, uint256 startedAt, bool byReport);
    /// @notice Emitted for every applied report with the rental's totals it applied, clamped to the rental's end.
    event ReportApplied(
        uint256 indexed rentalId,
        uint256 seq,
        uint256 coveredUntil,
        uint256 deliveredSeconds,
        uint256 utilSeconds,
        bytes32 telemetryRoot
    );
    /// @notice Emitted for a report of a batch that was skipped instead of applied.
    event ReportSkipped(uint256 indexed rentalId, uint256 seq, SkipReason reason);
    /// @notice Emitted when a running rental's earnings so far are credited: `earned` is the gross total now
    /// claimed, `providerPayout` and `fee` what this claim credited.
    event EarningsClaimed(uint256 indexed rentalId, uint256 earned, uint256 providerPayout, uint256 fee);
    /// @notice Emitted when the renter ends a running rental early; the unused time was refunded.
    event RentalTerminated(uint256 indexed rentalId, uint256 endsAt, uint256 refund);
    /// @notice Emitted when the provider declines a rental before its start; {RentalFinalized} follows.
    event RentalDeclined(uint256 indexed rentalId, DeclineReason reason);
    /// @notice Emitted when a rental reaches a final state, with every amount it settled over its life: the
    /// payout and fee include what {EarningsClaimed} already credited.
    event RentalFinalized(
        uint256 indexed rentalId,
        RentalStatus status,
        uint256 providerPayout,
        uint256 fee,
        uint256 refund,
        uint256 deliveredSeconds,
        uint256 missedSeconds,
        uint256 slashed,
        SlashReason slashReason
    );
    /// @notice Emitted when an account withdraws its whole balance.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice Emitted when an oracle set takes effect (at deployment, or on activation of a proposal); older
    /// signatures stop verifying.
    event OracleSetUpdated(uint256 indexed version, address[] signers, uint256 threshold);
    /// @notice Emitted when the owner schedules the oracle set that becomes `version` at `effectiveAt` at the
    /// earliest; a later schedule replaces it.
    event OracleSetScheduled(uint256 indexed version, address[] signers, uint256 threshold, uint256 effectiveAt);
    /// @notice Emitted when the owner cancels the scheduled oracle set `version`.
    event OracleSetCancelled(uint256 indexed version);
    /// @notice Emitted when governance changes the protocol fee for rentals opened from now on.
    event FeeUpdated(uint256 feeBps);
    /// @notice Emitted when governance changes where fees are credited.
    event TreasuryUpdated(address indexed treasury);

    /*//////////////////////////////////////////////////////////////
                             RENTER ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Rents an offer for `duration` seconds, pulling the deposit `price * duration`.
    /// @dev Emits {RentalOpened}. Notes: the provider has `startTimeout` seconds to start. Requirements: not
    /// paused; the offer is active, has no live rental and allows the duration; its price <= maxPricePerSecond;
    /// the provider's free stake covers the collateral; the allowance covers the deposit; the token delivers
    /// exactly the deposit (fee-on-transfer tokens are rejected).
    /// @param jobSpecHash Hash of the job spec the provider's agent runs; carried in the event only.
    function openRental(uint256 offerId, uint256 duration, uint256 maxPricePerSecond, bytes32 jobSpecHash)
        external
        returns (uint256 rentalId);

    /// @notice Ends the caller's rental now. Before the start it cancels with a full refund; while running it
    /// refunds the unused time at once and takes reports up to now until it is finalised.
    /// @dev Emits {RentalTerminated}, or {RentalFinalized} when it cancels.
    function terminate(uint256 rentalId) external;

    /// @notice Refunds the whole deposit of a rental the provider did not start within `startTimeout` and
    /// slashes `startSlashBps` of its collateral to the renter. Anyone may call it.
    /// @dev Emits {RentalFinalized}.
    function claimStartTimeout(uint256 rentalId) external;

    /// @notice Settles a rental after its end plus `reportGrace`; unreported time counts as missed. Anyone may
    /// call it.
    /// @dev Emits {RentalFinalized}.
    function finalize(uint256 rentalId) external;

    /// @notice Sends the caller its whole balance: earnings, refunds and fees credited by settlements and claims.
    /// @dev Emits {Withdrawn}. Never paused.
    function withdraw() external;

    /*//////////////////////////////////////////////////////////////
                            PROVIDER ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Credits the provider (less the fee, which goes to the treasury) what a started, live rental has
    /// earned by its last applied report and was not claimed yet, so providers are paid as they go. Anyone may
    /// call it; the credit always goes to the offer's provider.
    /// @dev Emits {EarningsClaimed}. Requirements: the rental is Running or Terminated and earned more than it
    /// claimed.
    function claimPayout(uint256 rentalId) external;

    /// @notice Starts an open rental now; billing runs from now to now + duration.
    /// @dev Emits {RentalStarted}. Requirements: caller is the provider or its agent key; within the timeout.
    function start(uint256 rentalId) external;

    /// @notice Declines an open rental whose job the provider's agent cannot run (see `DeclineReason`) instead of
    /// letting it time out: the renter is credited the whole deposit, the collateral is released without a slash
    /// and the provider's `declines` counter goes up.
    /// @dev Emits {RentalDeclined}, then {RentalFinalized} with status Declined, the deposit as refund and zero for
    /// every other amount. Notes: once the start timeout has passed the renter is owed the start-timeout slash, so
    /// a decline is refused and `claimStartTimeout` settles the rental. Works while paused. Requirements: caller is
    /// the offer's provider or its agent key; the rental is Open and within the start timeout; `reason` is a
    /// DeclineReason.
    /// @param reason A `DeclineReason`, carried as uint8 so that an out-of-range value gets a named error.
    function decline(uint256 rentalId, uint8 reason) external;

    /*//////////////////////////////////////////////////////////////
                             ORACLE ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Applies a batch of usage reports signed as one EIP-712 `ReportBatch` by at least `threshold`
    /// distinct oracles of the current set. Anyone may relay a signed batch.
    /// @dev Emits {ReportApplied} or {ReportSkipped} (with its `SkipReason`) per report, {RentalStarted} for a
    /// rental its first report starts (from its opening time), {RentalFinalized} for Completed and Failed reports.
    /// Reports are cumulative: each carries the rental's totals and credits their difference from the last applied
    /// ones, so only the latest report of a rental ever needs to land. Only the signatures can revert a batch; a
    /// report that cannot apply (see `SkipReason`) is skipped and the others still apply.
    /// @param oracleSetVersion The oracle set version the batch was signed under (the current one).
    /// @param signatures The oracles' signatures as compact EIP-2098 pairs: r, then yParityAndS, for each.
    function submitReports(Report[] calldata reports, uint24 oracleSetVersion, bytes32[] calldata signatures) external;

    /*//////////////////////////////////////////////////////////////
                               GOVERNANCE
    //////////////////////////////////////////////////////////////*/

    /// @notice Schedules a new oracle set and threshold; it can take effect `governanceDelay` seconds from now at
    /// the earliest, so renters and providers see a change coming before it can decide their rentals.
    /// @dev Only the owner. Emits {OracleSetScheduled}. Replaces a scheduled set and restarts its delay.
    /// Requirements: 1..MAX_ORACLES distinct non-zero signers, threshold within 1..n.
    function scheduleOracleSet(address[] calldata signers, uint256 threshold) external;

    /// @notice Cancels the scheduled oracle set.
    /// @dev Only the owner. Emits {OracleSetCancelled}.
    function cancelOracleSet() external;

    /// @notice Makes the scheduled oracle set current once its delay has passed and bumps the set version that
    /// batches are signed over. Anyone may call it.
    /// @dev Emits {OracleSetUpdated}.
    function activateOracleSet() external;

    /// @notice Sets the protocol fee on earnings for rentals opened from now on.
    /// @dev Only the owner. Emits {FeeUpdated}. Requirements: feeBps <= feeCapBps.
    function setFee(uint256 feeBps) external;

    /// @notice Sets the account that fees are credited to.
    /// @dev Only the owner. Emits {TreasuryUpdated}.
    function setTreasury(address treasury) external;

    /// @notice Stops new rentals. Reports, settlement and withdrawals go on.
    /// @dev Only the owner.
    function pause() external;

    /// @notice Allows new rentals again.
    /// @dev Only the owner.
    function unpause() external;

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice The token deposits and payouts are made in.
    function paymentToken() external view returns (IERC20);

    /// @notice The provider registry that holds offers and collateral.
    function registry() external view returns (IProviderRegistry);

    /// @notice The rental's terms, applied totals and earnings; status None for an unknown or superseded id.
    function getRental(uint256 rentalId) external view returns (RentalView memory);

    /// @notice The id of the offer's live rental, or zero if it has none.
    function liveRentalOf(uint256 offerId) external view returns (uint256 rentalId);

    /// @notice The amount `account` can withdraw now.
    function balanceOf(address account) external view returns (uint256);

    /// @notice The current oracle set: its version, signers and threshold.
    function oracleSet() external view returns (uint256 version, address[] memory signers, uint256 threshold);

    /// @notice The scheduled oracle set; an `effectiveAt` of zero when none is scheduled.
    function upcomingOracleSet()
        external
        view
        returns (address[] memory signers, uint256 threshold, uint256 effectiveAt);

    /// @notice The EIP-712 digest the oracles sign for this batch under the current oracle set version.
    function batchDigest(Report[] calldata reports) external view returns (bytes32);
}
