// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {Offer, OfferTerms, Provider, RentalStatus, SlashReason} from "../types/DataTypes.sol";

/// @title IProviderRegistry
/// @notice Provider stake, GPU identities, offers, rental collateral and reputation counters for gpuex.
/// @dev Collateral is locked and settled only by the escrow bound at deployment. Amounts of stake are in the
/// stake token; prices are in the escrow's payment token.
interface IProviderRegistry {
    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice The caller is not the escrow this registry is bound to.
    error Registry_CallerNotEscrow(address caller);
    /// @notice An amount of zero was given where a positive amount is required.
    error Registry_ZeroAmount();
    /// @notice The registry received a different amount than it asked the token to transfer.
    error Registry_TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice The provider's free stake (staked - locked - unbonding) cannot cover the amount.
    error Registry_InsufficientFreeStake(address provider, uint256 free, uint256 needed);
    /// @notice Nothing is unbonding for this provider.
    error Registry_NothingUnbonding(address provider);
    /// @notice The unbonding period has not ended yet.
    error Registry_UnbondingNotOver(address provider, uint256 endsAt);
    /// @notice An empty GPU list was given.
    error Registry_NoGpus();
    /// @notice More GPUs were given than one offer may hold.
    error Registry_TooManyGpus(uint256 count, uint256 max);
    /// @notice The GPU UUID hash is already registered by a provider.
    error Registry_GpuAlreadyRegistered(bytes32 uuidHash, address owner);
    /// @notice The GPU UUID hash is not registered to the caller.
    error Registry_GpuNotOwned(bytes32 uuidHash, address caller);
    /// @notice The GPU is listed in an offer that is not closed.
    error Registry_GpuInOffer(bytes32 uuidHash, uint256 offerId);
    /// @notice The offer's terms are not valid (zero price, bad duration range, floor above 10000 bps).
    error Registry_InvalidTerms();
    /// @notice No offer has this id.
    error Registry_UnknownOffer(uint256 offerId);
    /// @notice The caller does not own the offer.
    error Registry_NotOfferProvider(uint256 offerId, address caller);
    /// @notice The offer is not in the status this action needs.
    error Registry_OfferNotActive(uint256 offerId);
    /// @notice The offer is not paused.
    error Registry_OfferNotPaused(uint256 offerId);
    /// @notice The offer is already closed.
    error Registry_OfferClosed(uint256 offerId);
    /// @notice The offer has a live rental and cannot be closed now.
    error Registry_OfferRented(uint256 offerId);
    /// @notice The requested rental duration is outside the offer's range.
    error Registry_DurationOutOfRange(uint256 offerId, uint256 duration, uint256 min, uint256 max);
    /// @notice The renter has no compensation to withdraw.
    error Registry_NothingToWithdraw(address account);
    /// @notice The agent URL is longer than a provider may publish.
    error Registry_AgentUrlTooLong(uint256 length, uint256 max);

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Emitted when a provider adds stake.
    event Staked(address indexed provider, uint256 amount);
    /// @notice Emitted when a provider starts unbonding stake; `endsAt` applies to all that is unbonding.
    event UnstakeRequested(address indexed provider, uint256 amount, uint256 unbonding, uint256 endsAt);
    /// @notice Emitted when a provider withdraws stake whose unbonding period has ended.
    event UnstakeWithdrawn(address indexed provider, uint256 amount);
    /// @notice Emitted when a provider sets its telemetry signing key.
    event AgentSet(address indexed provider, address indexed agent);
    /// @notice Emitted when a provider publishes, replaces or clears (empty `url`) its agent's URL.
    event AgentUrlSet(address indexed provider, string url);
    /// @notice Emitted when a provider registers GPU UUID hashes.
    event GpusRegistered(address indexed provider, bytes32[] uuidHashes);
    /// @notice Emitted when a provider releases GPU UUID hashes it no longer lists.
    event GpusDeregistered(address indexed provider, bytes32[] uuidHashes);
    /// @notice Emitted when an offer is listed.
    event OfferCreated(uint256 indexed offerId, address indexed provider, OfferTerms terms);
    /// @notice Emitted when an offer's price for future rentals changes.
    event OfferPriceUpdated(uint256 indexed offerId, uint256 pricePerSecond);
    /// @notice Emitted when an offer stops taking new rentals until resumed.
    event OfferPaused(uint256 indexed offerId);
    /// @notice Emitted when a paused offer takes new rentals again.
    event OfferResumed(uint256 indexed offerId);
    /// @notice Emitted when an offer is delisted for good and its GPUs are freed.
    event OfferClosed(uint256 indexed offerId);
    /// @notice Emitted when a rental locks a provider's collateral.
    event CollateralLocked(address indexed provider, uint256 indexed offerId, uint256 amount);
    /// @notice Emitted when a settled rental unlocks collateral (after any slash).
    event CollateralReleased(address indexed provider, uint256 indexed offerId, uint256 amount);
    /// @notice Emitted when collateral is slashed to a renter as compensation.
    event Slashed(
        address indexed provider, uint256 indexed offerId, address indexed renter, uint256 amount, SlashReason reason
    );
    /// @notice Emitted when a renter withdraws slash compensation.
    event CompensationWithdrawn(address indexed account, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                            PROVIDER ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Adds `amount` of the stake token to the caller's stake.
    /// @dev Emits {Staked}. Requirements: amount > 0; the allowance covers it; the token delivers exactly it.
    function stake(uint256 amount) external;

    /// @notice Starts unbonding `amount` of free stake; it can be withdrawn after the unbonding period.
    /// @dev Emits {UnstakeRequested}. A new request restarts the period for everything unbonding.
    /// Requirements: 0 < amount <= free stake.
    function requestUnstake(uint256 amount) external;

    /// @notice Sends the caller all of its unbonded stake once the unbonding period has ended.
    /// @dev Emits {UnstakeWithdrawn}.
    function withdrawUnstaked() external;

    /// @notice Sets the key whose signature the oracles accept on the caller's telemetry (zero unsets it).
    /// @dev Emits {AgentSet}.
    function setAgent(address agent) external;

    /// @notice Publishes the public base URL of the caller's agent API, where renters reach the agent (job spec
    /// upload, logs, results); replaces the one published before, and an empty `url` clears it.
    /// @dev Emits {AgentUrlSet}. Notes: the registry stores the bytes as given and does not parse them; clients
    /// check the scheme and form, and that the agent behind the URL signs with the provider's {agentOf} key, since
    /// nothing on chain vouches for the URL. Requirements: `url` is at most `MAX_AGENT_URL_BYTES` (256) bytes.
    function setAgentUrl(string calldata url) external;

    /// @notice Claims GPU identities (hashes of NVML UUIDs) for the caller.
    /// @dev Emits {GpusRegistered}. Requirements: each hash is unregistered, so one card is listed once.
    function registerGpus(bytes32[] calldata uuidHashes) external;

    /// @notice Releases GPU identities the caller owns and no open offer lists.
    /// @dev Emits {GpusDeregistered}.
    function deregisterGpus(bytes32[] calldata uuidHashes) external;

    /// @notice Lists the caller's registered GPUs as one offer and returns its id.
    /// @dev Emits {OfferCreated}. Notes: `egress` is fixed for the offer's life, like its GPUs; no setter changes
    /// it. Requirements: price > 0; 0 < minDuration <= maxDuration; utilFloorBps <= 10000; 1..MAX_GPUS_PER_OFFER
    /// hashes, each owned by the caller and in no other open offer.
    function createOffer(OfferTerms calldata terms) external returns (uint256 offerId);

    /// @notice Sets the price per second for rentals opened from now on; live rentals keep their price.
    /// @dev Emits {OfferPriceUpdated}. Requirements: caller owns the offer, it is not closed, price > 0.
    function updateOfferPrice(uint256 offerId, uint256 pricePerSecond) external;

    /// @notice Stops new rentals of an active offer; a live rental continues.
    /// @dev Emits {OfferPaused}.
    function pauseOffer(uint256 offerId) external;

    /// @notice Lets a paused offer take new rentals again.
    /// @dev Emits {OfferResumed}.
    function resumeOffer(uint256 offerId) external;

    /// @notice Delists an offer for good and frees its GPUs for other offers.
    /// @dev Emits {OfferClosed}. Requirements: no live rental on the offer.
    function closeOffer(uint256 offerId) external;

    /// @notice Sends the caller all slash compensation credited to it.
    /// @dev Emits {CompensationWithdrawn}.
    function withdrawCompensation() external;

    /*//////////////////////////////////////////////////////////////
                              ESCROW HOOKS
    //////////////////////////////////////////////////////////////*/

    /// @notice Checks that the offer can be rented for `duration` and locks its collateral.
    /// @dev Only the escrow. Emits {CollateralLocked}. Reverts if the offer is not active, the duration is out of
    /// range, or the provider's free stake is short of `minStakePerGpu * gpuCount`.
    /// @return pricePerSecond The offer's current price.
    /// @return utilFloorBps The offer's utilisation floor.
    function reserve(uint256 offerId, uint256 duration)
        external
        returns (uint256 pricePerSecond, uint256 utilFloorBps);

    /// @notice Settles the collateral of a finished rental: slashes `slashBps` of it to the renter, unlocks the
    /// rest and updates the provider's reputation counters.
    /// @dev Only the escrow. Emits {Slashed} when something is slashed, then {CollateralReleased}.
    /// @param finalStatus The rental's final status. A rental that started (any final status but TimedOut,
    /// Cancelled and Declined) counts as completed with its delivered seconds; a Declined one counts a decline.
    /// @return provider The offer's provider, who is owed the rental's earnings.
    /// @return slashed The amount of stake credited to the renter.
    function settle(
        uint256 offerId,
        address renter,
        RentalStatus finalStatus,
        uint256 deliveredSeconds,
        uint256 missedSeconds,
        uint256 slashBps,
        SlashReason reason
    ) external returns (address provider, uint256 slashed);

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice The token providers stake and slashes are paid in.
    function stakeToken() external view returns (IERC20);

    /// @notice The escrow allowed to lock and settle collateral.
    function escrow() external view returns (address);

    /// @notice Collateral a rental locks per GPU of its offer.
    function minStakePerGpu() external view returns (uint256);

    /// @notice Seconds between an unstake request and its withdrawal.
    function unbondingPeriod() external view returns (uint256);

    /// @notice The provider's account: stake, locked collateral, unbonding and reputation counters.
    function getProvider(address provider) external view returns (Provider memory);

    /// @notice Stake the provider can lock or unbond now: staked - locked - unbonding.
    function freeStake(address provider) external view returns (uint256);

    /// @notice The provider's telemetry signing key (zero if unset).
    function agentOf(address provider) external view returns (address);

    /// @notice The base URL of the provider's agent API as the provider published it (empty if unset).
    function agentUrlOf(address provider) external view returns (string memory);

    /// @notice The offer with this id (reverts if unknown).
    function getOffer(uint256 offerId) external view returns (Offer memory);

    /// @notice Number of offers ever created; ids run from 1 to this.
    function offerCount() external view returns (uint256);

    /// @notice Collateral one rental of this offer locks.
    function collateralOf(uint256 offerId) external view returns (uint256);

    /// @notice The provider that registered this GPU UUID hash (zero if none).
    function gpuOwner(bytes32 uuidHash) external view returns (address);

    /// @notice The open offer that lists this GPU (zero if none).
    function gpuOffer(bytes32 uuidHash) external view returns (uint256);

    /// @notice Whether `account` is the offer's provider or that provider's agent key.
    function isProviderOrAgent(uint256 offerId, address account) external view returns (bool);

    /// @notice The provider of an offer (the zero address for an unknown offer).
    function providerOf(uint256 offerId) external view returns (address);

    /// @notice Slash compensation credited to `account` and not yet withdrawn.
    function compensationOf(address account) external view returns (uint256);
}
