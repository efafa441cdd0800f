// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";
import {IRentalEscrow} from "./interfaces/IRentalEscrow.sol";
import {RentalMath} from "./libraries/RentalMath.sol";
import {Offer, OfferStatus, OfferTerms, Provider, RentalStatus, SlashReason} from "./types/DataTypes.sol";

/// @title ProviderRegistry
/// @notice See {IProviderRegistry}. Holds provider stake in the stake token; the escrow bound at deployment
/// locks it as rental collateral and slashes only from that locked collateral.
/// @dev The escrow address is fixed at construction (the deploy script predicts it from the deployer's nonce,
/// and the escrow's constructor checks the binding), so no owner or setter is needed here.
contract ProviderRegistry is IProviderRegistry, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @notice Most GPUs one offer may list; bounds the loops of createOffer and closeOffer.
    uint256 public constant MAX_GPUS_PER_OFFER = 64;
    /// @notice Longest agent URL a provider may publish, in bytes; bounds the storage and the event.
    uint256 public constant MAX_AGENT_URL_BYTES = 256;

    /// @inheritdoc IProviderRegistry
    IERC20 public immutable override stakeToken;
    /// @inheritdoc IProviderRegistry
    address public immutable override escrow;
    /// @inheritdoc IProviderRegistry
    uint256 public immutable override minStakePerGpu;
    /// @inheritdoc IProviderRegistry
    uint256 public immutable override unbondingPeriod;

    mapping(address provider => Provider) private _providers;
    mapping(uint256 offerId => Offer) private _offers;
    mapping(bytes32 uuidHash => address provider) private _gpuOwners;
    mapping(bytes32 uuidHash => uint256 offerId) private _gpuOffers;
    mapping(address renter => uint256 amount) private _compensation;
    mapping(address provider => string url) private _agentUrls;
    uint256 private _offerCount;

    modifier onlyEscrow() {
        if (msg.sender != escrow) revert Registry_CallerNotEscrow(msg.sender);
        _;
    }

    /// @param stakeToken_ The ERC20 staked by providers and paid out as slash compensation.
    /// @param escrow_ The RentalEscrow that will be deployed for this registry.
    /// @param minStakePerGpu_ Collateral one rental locks per GPU of its offer.
    /// @param unbondingPeriod_ Seconds an unstake request waits before withdrawal.
    constructor(IERC20 stakeToken_, address escrow_, uint256 minStakePerGpu_, uint256 unbondingPeriod_) {
        stakeToken = stakeToken_;
        escrow = escrow_;
        minStakePerGpu = minStakePerGpu_;
        unbondingPeriod = unbondingPeriod_;
    }

    /*//////////////////////////////////////////////////////////////
                                 STAKE
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderRegistry
    function stake(uint256 amount) external override nonReentrant {
        // Checks
        if (amount == 0) revert Registry_ZeroAmount();

        // Effects
        _providers[msg.sender].staked += amount.toUint128();
        emit Staked(msg.sender, amount);

        // Interactions
        uint256 balanceBefore = stakeToken.balanceOf(address(this));
        stakeToken.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = stakeToken.balanceOf(address(this)) - balanceBefore;
        if (received != amount) revert Registry_TransferAmountMismatch(amount, received);
    }

    /// @inheritdoc IProviderRegistry
    function requestUnstake(uint256 amount) external override {
        Provider storage p = _providers[msg.sender];
        if (amount == 0) revert Registry_ZeroAmount();
        uint256 free = _freeStake(p);
        if (amount > free) revert Registry_InsufficientFreeStake(msg.sender, free, amount);

        uint256 endsAt = block.timestamp + unbondingPeriod;
        p.unbonding += amount.toUint128();
        p.unbondingEndsAt = endsAt.toUint40();
        emit UnstakeRequested(msg.sender, amount, p.unbonding, endsAt);
    }

    /// @inheritdoc IProviderRegistry
    function withdrawUnstaked() external override nonReentrant {
        // Checks
        Provider storage p = _providers[msg.sender];
        uint256 amount = p.unbonding;
        if (amount == 0) revert Registry_NothingUnbonding(msg.sender);
        if (block.timestamp < p.unbondingEndsAt) revert Registry_UnbondingNotOver(msg.sender, p.unbondingEndsAt);

        // Effects
        p.unbonding = 0;
        // Unbonding stake is part of staked and never locked, so staked >= unbonding here.
        p.staked -= uint128(amount);
        emit UnstakeWithdrawn(msg.sender, amount);

        // Interactions
        stakeToken.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IProviderRegistry
    function setAgent(address agent) external override {
        _providers[msg.sender].agent = agent;
        emit AgentSet(msg.sender, agent);
    }

    /// @inheritdoc IProviderRegistry
    function setAgentUrl(string calldata url) external override {
        uint256 length = bytes(url).length;
        if (length > MAX_AGENT_URL_BYTES) revert Registry_AgentUrlTooLong(length, MAX_AGENT_URL_BYTES);
        _agentUrls[msg.sender] = url;
        emit AgentUrlSet(msg.sender, url);
    }

    /*//////////////////////////////////////////////////////////////
                                  GPUS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderRegistry
    function registerGpus(bytes32[] calldata uuidHashes) external override {
        uint256 count = uuidHashes.length;
        if (count == 0) revert Registry_NoGpus();
        for (uint256 i; i < count; ++i) {
            bytes32 uuidHash = uuidHashes[i];
            address owner = _gpuOwners[uuidHash];
            if (owner != address(0)) revert Registry_GpuAlreadyRegistered(uuidHash, owner);
            _gpuOwners[uuidHash] = msg.sender;
        }
        emit GpusRegistered(msg.sender, uuidHashes);
    }

    /// @inheritdoc IProviderRegistry
    function deregisterGpus(bytes32[] calldata uuidHashes) external override {
        uint256 count = uuidHashes.length;
        if (count == 0) revert Registry_NoGpus();
        for (uint256 i; i < count; ++i) {
            bytes32 uuidHash = uuidHashes[i];
            if (_gpuOwners[uuidHash] != msg.sender) revert Registry_GpuNotOwned(uuidHash, msg.sender);
            uint256 listedIn = _gpuOffers[uuidHash];
            if (listedIn != 0) revert Registry_GpuInOffer(uuidHash, listedIn);
            delete _gpuOwners[uuidHash];
        }
        emit GpusDeregistered(msg.sender, uuidHashes);
    }

    /*//////////////////////////////////////////////////////////////
                                 OFFERS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderRegistry
    function createOffer(OfferTerms calldata terms) external override returns (uint256 offerId) {
        uint256 gpuCount = terms.gpuUuidHashes.length;
        if (gpuCount == 0) revert Registry_NoGpus();
        if (gpuCount > MAX_GPUS_PER_OFFER) revert Registry_TooManyGpus(gpuCount, MAX_GPUS_PER_OFFER);
        if (
            terms.pricePerSecond == 0 || terms.minDuration == 0 || terms.minDuration > terms.maxDuration
                || terms.utilFloorBps > RentalMath.BPS
        ) revert Registry_InvalidTerms();

        offerId = ++_offerCount;
        for (uint256 i; i < gpuCount; ++i) {
            bytes32 uuidHash = terms.gpuUuidHashes[i];
            if (_gpuOwners[uuidHash] != msg.sender) revert Registry_GpuNotOwned(uuidHash, msg.sender);
            uint256 listedIn = _gpuOffers[uuidHash];
            if (listedIn != 0) revert Registry_GpuInOffer(uuidHash, listedIn);
            _gpuOffers[uuidHash] = offerId;
        }
        _offers[offerId] = Offer({
            provider: msg.sender,
            // gpuCount <= MAX_GPUS_PER_OFFER fits uint16.
            gpuCount: uint16(gpuCount),
            utilFloorBps: terms.utilFloorBps,
            status: OfferStatus.Active,
            minDuration: terms.minDuration,
            egress: terms.egress,
            pricePerSecond: terms.pricePerSecond,
            maxDuration: terms.maxDuration,
            vramMiB: terms.vramMiB,
            region: terms.region,
            gpuModel: terms.gpuModel,
            gpuUuidHashes: terms.gpuUuidHashes
        });
        emit OfferCreated(offerId, msg.sender, terms);
    }

    /// @inheritdoc IProviderRegistry
    function updateOfferPrice(uint256 offerId, uint256 pricePerSecond) external override {
        Offer storage offer = _ownedOffer(offerId);
        if (offer.status == OfferStatus.Closed) revert Registry_OfferClosed(offerId);
        if (pricePerSecond == 0) revert Registry_InvalidTerms();
        offer.pricePerSecond = pricePerSecond.toUint64();
        emit OfferPriceUpdated(offerId, pricePerSecond);
    }

    /// @inheritdoc IProviderRegistry
    function pauseOffer(uint256 offerId) external override {
        Offer storage offer = _ownedOffer(offerId);
        if (offer.status != OfferStatus.Active) revert Registry_OfferNotActive(offerId);
        offer.status = OfferStatus.Paused;
        emit OfferPaused(offerId);
    }

    /// @inheritdoc IProviderRegistry
    function resumeOffer(uint256 offerId) external override {
        Offer storage offer = _ownedOffer(offerId);
        if (offer.status != OfferStatus.Paused) revert Registry_OfferNotPaused(offerId);
        offer.status = OfferStatus.Active;
        emit OfferResumed(offerId);
    }

    /// @inheritdoc IProviderRegistry
    function closeOffer(uint256 offerId) external override {
        Offer storage offer = _ownedOffer(offerId);
        if (offer.status == OfferStatus.Closed) revert Registry_OfferClosed(offerId);
        if (IRentalEscrow(escrow).liveRentalOf(offerId) != 0) revert Registry_OfferRented(offerId);

        offer.status = OfferStatus.Closed;
        bytes32[] storage gpus = offer.gpuUuidHashes;
        uint256 count = gpus.length;
        for (uint256 i; i < count; ++i) {
            delete _gpuOffers[gpus[i]];
        }
        emit OfferClosed(offerId);
    }

    /*//////////////////////////////////////////////////////////////
                              COMPENSATION
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderRegistry
    function withdrawCompensation() external override nonReentrant {
        // Checks
        uint256 amount = _compensation[msg.sender];
        if (amount == 0) revert Registry_NothingToWithdraw(msg.sender);

        // Effects
        _compensation[msg.sender] = 0;
        emit CompensationWithdrawn(msg.sender, amount);

        // Interactions
        stakeToken.safeTransfer(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////
                              ESCROW HOOKS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderRegistry
    function reserve(uint256 offerId, uint256 duration)
        external
        override
        onlyEscrow
        returns (uint256 pricePerSecond, uint256 utilFloorBps)
    {
        Offer storage offer = _offers[offerId];
        if (offer.status != OfferStatus.Active) revert Registry_OfferNotActive(offerId);
        uint256 minDuration = offer.minDuration;
        uint256 maxDuration = offer.maxDuration;
        if (duration < minDuration || duration > maxDuration) {
            revert Registry_DurationOutOfRange(offerId, duration, minDuration, maxDuration);
        }

        address provider = offer.provider;
        Provider storage p = _providers[provider];
        uint256 collateral = minStakePerGpu * offer.gpuCount;
        uint256 free = _freeStake(p);
        if (collateral > free) revert Registry_InsufficientFreeStake(provider, free, collateral);
        // collateral <= free <= staked, which is a uint128.
        p.locked += uint128(collateral);
        emit CollateralLocked(provider, offerId, collateral);

        return (offer.pricePerSecond, offer.utilFloorBps);
    }

    /// @inheritdoc IProviderRegistry
    function settle(
        uint256 offerId,
        address renter,
        RentalStatus finalStatus,
        uint256 deliveredSeconds,
        uint256 missedSeconds,
        uint256 slashBps,
        SlashReason reason
    ) external override onlyEscrow returns (address provider, uint256 slashed) {
        Offer storage offer = _offers[offerId];
        provider = offer.provider;
        Provider storage p = _providers[provider];
        uint256 collateral = minStakePerGpu * offer.gpuCount;

        // The escrow passes slashBps <= 10000, so slashed <= collateral <= locked <= staked.
        slashed = (collateral * slashBps) / RentalMath.BPS;
        unchecked {
            // Safe: collateral was locked by `reserve` for this rental and slashed <= collateral.
            p.locked -= uint128(collateral);
            p.staked -= uint128(slashed);
        }
        if (finalStatus == RentalStatus.Declined) {
            ++p.declines;
        } else if (finalStatus != RentalStatus.TimedOut && finalStatus != RentalStatus.Cancelled) {
            // Only a rental that started counts as completed.
            ++p.rentalsCompleted;
            p.secondsDelivered += uint64(deliveredSeconds);
        }
        p.secondsMissed += uint64(missedSeconds);
        if (slashed != 0) {
            ++p.slashes;
            _compensation[renter] += slashed;
            emit Slashed(provider, offerId, renter, slashed, reason);
        }
        emit CollateralReleased(provider, offerId, collateral - slashed);
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderRegistry
    function getProvider(address provider) external view override returns (Provider memory) {
        return _providers[provider];
    }

    /// @inheritdoc IProviderRegistry
    function freeStake(address provider) external view override returns (uint256) {
        return _freeStake(_providers[provider]);
    }

    /// @inheritdoc IProviderRegistry
    function agentOf(address provider) external view override returns (address) {
        return _providers[provider].agent;
    }

    /// @inheritdoc IProviderRegistry
    function agentUrlOf(address provider) external view override returns (string memory) {
        return _agentUrls[provider];
    }

    /// @inheritdoc IProviderRegistry
    function getOffer(uint256 offerId) external view override returns (Offer memory) {
        Offer storage offer = _offers[offerId];
        if (offer.status == OfferStatus.None) revert Registry_UnknownOffer(offerId);
        return offer;
    }

    /// @inheritdoc IProviderRegistry
    function offerCount() external view override returns (uint256) {
        return _offerCount;
    }

    /// @inheritdoc IProviderRegistry
    function collateralOf(uint256 offerId) external view override returns (uint256) {
        return minStakePerGpu * _offers[offerId].gpuCount;
    }

    /// @inheritdoc IProviderRegistry
    function gpuOwner(bytes32 uuidHash) external view override returns (address) {
        return _gpuOwners[uuidHash];
    }

    /// @inheritdoc IProviderRegistry
    function gpuOffer(bytes32 uuidHash) external view override returns (uint256) {
        return _gpuOffers[uuidHash];
    }

    /// @inheritdoc IProviderRegistry
    function isProviderOrAgent(uint256 offerId, address account) external view override returns (bool) {
        address provider = _offers[offerId].provider;
        return account != address(0) && (account == provider || account == _providers[provider].agent);
    }

    /// @inheritdoc IProviderRegistry
    function providerOf(uint256 offerId) external view override returns (address) {
        return _offers[offerId].provider;
    }

    /// @inheritdoc IProviderRegistry
    function compensationOf(address account) external view override returns (uint256) {
        return _compensation[account];
    }

    /*//////////////////////////////////////////////////////////////
                               INTERNALS
    //////////////////////////////////////////////////////////////*/

    function _freeStake(Provider storage p) private view returns (uint256) {
        return p.staked - p.locked - p.unbonding;
    }

    function _ownedOffer(uint256 offerId) private view returns (Offer storage offer) {
        offer = _offers[offerId];
        if (offer.status == OfferStatus.None) revert Registry_UnknownOffer(offerId);
        if (offer.provider != msg.sender) revert Registry_NotOfferProvider(offerId, msg.sender);
    }
}
