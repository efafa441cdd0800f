// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice Lifecycle of an offer in the registry. Only `Active` offers can be rented.
enum OfferStatus {
    None,
    Active,
    Paused,
    Closed
}

/// @notice Lifecycle of a rental. It only moves forward: Open -> Running -> Terminated -> a final state,
/// or Open -> TimedOut / Cancelled / Declined. Every state from `Completed` on is final.
enum RentalStatus {
    None, // no rental with this id (or an id superseded by a later rental of the same offer)
    Open, // deposit held, provider has not started
    Running, // started; takes reports until it is finalised
    Terminated, // the renter ended it early; takes reports up to the new end
    Completed, // final: a report said the job completed
    Failed, // final: a report said the job failed
    Expired, // final: finalised after its end plus the report grace
    TimedOut, // final: the provider never started; the renter was refunded and compensated
    Cancelled, // final: the renter cancelled before the start
    Declined // final: the provider declined the job before the start; the renter was refunded, nothing slashed
}

/// @notice Why a provider's agent declined a rental instead of starting it (`RentalEscrow.decline`).
enum DeclineReason {
    SpecMissing, // the job spec never arrived within the agent's wait
    SpecInvalid, // the job spec does not parse, hashes to another value than the rental's, or holds refused values
    ImageUnavailable, // the job's container image cannot be had
    ExceedsOffer, // the job asks for more memory, CPUs or network than the offer has
    GpusUnavailable, // the offer's GPUs are not on the agent's machine
    AgentFailure // the agent failed preparing the job
}

/// @notice The job state an oracle report carries, as `Report.status`.
enum ReportStatus {
    Running,
    Completed,
    Failed
}

/// @notice Why a report of a signed batch was skipped instead of applied. A skipped report changes nothing and
/// never reverts its batch: only a bad quorum of signatures does.
enum SkipReason {
    UnknownRental, // no rental has this id, or a later rental of the same offer replaced it
    RentalClosed, // the rental is already in a final state
    StartTimedOut, // the rental was never started and its start timeout has passed
    SeqNotIncreasing, // seq is not above the last applied one: a replay or a report older than the landed one
    UnknownStatus, // status is not a ReportStatus
    CoverageInFuture, // coveredUntil is after the block time
    TotalsDecreased, // coverage, delivered or utilisation-weighted seconds below the last applied totals
    DeliveredAboveCovered, // more delivered seconds than the rental's start to coveredUntil holds
    UtilisationAboveDelivered // more utilisation-weighted seconds than delivered seconds: utilisation above 100 %
}

/// @notice Why collateral was slashed.
enum SlashReason {
    None,
    StartTimeout, // the provider never started the rental
    SlaBreach // missed seconds exceeded the SLA share of the elapsed rental
}

/// @notice A provider's account in the registry. Amounts are in the stake token.
struct Provider {
    // slot 0
    uint128 staked; // everything the registry holds for this provider: free + locked + unbonding
    uint128 locked; // collateral held by open rentals
    // slot 1
    uint128 unbonding; // requested for withdrawal, waiting for the unbonding period
    uint40 unbondingEndsAt;
    // slot 2: reputation counters
    uint32 rentalsCompleted; // rentals that started and were settled
    uint32 slashes;
    uint32 declines; // rentals the provider declined before the start
    uint64 secondsDelivered;
    uint64 secondsMissed;
    // slot 3
    address agent; // the provider machine's telemetry signing key
}

/// @notice A listed bundle of GPUs at a price per second for the whole bundle.
struct Offer {
    // slot 0
    address provider;
    uint16 gpuCount;
    uint16 utilFloorBps; // 10000 = pure time pricing; lower = utilisation-weighted with that floor
    OfferStatus status;
    uint32 minDuration;
    bool egress; // jobs may open outbound network connections when their spec asks for it
    // slot 1
    uint64 pricePerSecond; // payment token units, whole offer
    uint32 maxDuration;
    uint32 vramMiB; // per GPU
    bytes16 region;
    // slot 2
    bytes32 gpuModel;
    // slot 3 (length) and the array data
    bytes32[] gpuUuidHashes;
}

/// @notice What a provider passes to `createOffer`. The GPU count is the number of UUID hashes.
struct OfferTerms {
    bytes32 gpuModel;
    uint32 vramMiB;
    uint64 pricePerSecond;
    uint32 minDuration;
    uint32 maxDuration;
    bytes16 region;
    uint16 utilFloorBps;
    bool egress; // jobs may open outbound network connections when their spec asks for it; fixed for the offer
    bytes32[] gpuUuidHashes;
}

/// @notice One cumulative usage report for one rental, as signed by the oracles (EIP-712 type `Report`): the
/// rental's totals from its start up to `coveredUntil`. Applying it credits the difference from the last applied
/// totals, so any intermediate report may stay off chain.
/// @dev `status` is a `ReportStatus` carried as uint8 so that an out-of-range value is skipped with its reason.
struct Report {
    uint256 rentalId;
    uint32 seq; // above the last applied seq; gaps are fine
    uint40 coveredUntil; // the totals cover the rental from its start to here: <= now, clamped to the rental end
    uint32 deliveredSeconds; // seconds since the start with healthy telemetry from every GPU of the offer
    uint32 utilSeconds; // delivered seconds weighted by GPU utilisation (a second at 40 % counts 0.4), rounded down
    uint8 status; // ReportStatus
    bytes32 telemetryRoot; // commits to this period's samples and the previous report's root: the whole history
}

/// @notice The settlement state of a rental: one storage word, the only one a report reads and writes.
struct RentalState {
    uint32 nonce; // rentals opened on this offer so far; the rental id is offerId << 32 | nonce
    uint40 since; // opening time while Open, start time once started
    uint32 duration; // seconds from `since`; a termination shortens it
    RentalStatus status;
    uint16 utilFloorBps;
    uint32 seq; // last applied report seq
    uint32 coveredSeconds; // seconds after `since` the applied totals cover
    uint32 deliveredSeconds; // total delivered seconds of the applied report
    uint32 utilSeconds; // total utilisation-weighted seconds of the applied report
}

/// @notice The money terms of a rental, fixed at opening, and what its provider already claimed.
struct RentalTerms {
    // slot 1
    uint64 pricePerSecond;
    uint16 feeBps;
    uint96 claimed; // gross earnings already credited to the provider and the treasury by claims
    // slot 2
    address renter;
}

/// @notice The live (or last) rental of an offer. Storage is reused by every rental of the same offer, so
/// opening a rental rewrites warm slots instead of allocating new ones; older rentals live in events.
struct Rental {
    RentalState state; // slot 0
    RentalTerms terms; // slots 1-2
}
