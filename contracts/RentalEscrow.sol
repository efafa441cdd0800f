// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";
import {IRentalEscrow, RentalView} from "./interfaces/IRentalEscrow.sol";
import {RentalMath} from "./libraries/RentalMath.sol";
import {
    DeclineReason,
    Rental,
    RentalState,
    RentalStatus,
    RentalTerms,
    Report,
    ReportStatus,
    SkipReason,
    SlashReason
} from "./types/DataTypes.sol";

/// @title RentalEscrow
/// @notice See {IRentalEscrow}. Holds renter deposits in the payment token and settles them from oracle usage
/// reports: delivered seconds are paid to the provider (less the protocol fee), everything else is refunded.
/// @dev Trust model and token assumptions: SECURITY.md. The rental of an offer lives in storage reused by
/// every rental of that offer; past rentals are read from events.
contract RentalEscrow is IRentalEscrow, EIP712, Ownable2Step, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice EIP-712 type of one report.
    bytes32 private constant _REPORT_TYPEHASH = keccak256(
        "Report(uint256 rentalId,uint32 seq,uint40 coveredUntil,uint32 deliveredSeconds,uint32 utilSeconds,uint8 status,bytes32 telemetryRoot)"
    );
    /// @notice EIP-712 type of a batch: the oracle set version makes an old set's signatures unusable.
    bytes32 private constant _BATCH_TYPEHASH = keccak256(
        "ReportBatch(uint64 oracleSetVersion,Report[] reports)Report(uint256 rentalId,uint32 seq,uint40 coveredUntil,uint32 deliveredSeconds,uint32 utilSeconds,uint8 status,bytes32 telemetryRoot)"
    );
    /// @notice Most oracles in a set: a signer's index must fit the 256-bit duplicate mask, and scheduling and
    /// activating the largest set must each fit a block (about 5M gas each at 100 signers).
    uint256 public constant MAX_ORACLES = 100;
    /// @dev What `_skipReason` returns for a report that applies: no SkipReason.
    uint256 private constant _APPLIES = type(uint256).max;
    /// @dev Bit offsets of `RentalState`'s fields in its storage word (Solidity packs from the low end, in order):
    /// nonce 0, since 32, duration 72, status 104, utilFloorBps 112, then the part a report rewrites: seq 128,
    /// coveredSeconds 160, deliveredSeconds 192, utilSeconds 224. A unit test reads each back through getRental.
    uint256 private constant _BITS_SINCE = 32;
    uint256 private constant _BITS_DURATION = 72;
    uint256 private constant _BITS_STATUS = 104;
    uint256 private constant _BITS_SEQ = 128;
    uint256 private constant _BITS_COVERED = 160;
    uint256 private constant _BITS_DELIVERED = 192;
    uint256 private constant _BITS_UTIL = 224;
    uint256 private constant _MASK32 = type(uint32).max;
    uint256 private constant _MASK40 = type(uint40).max;
    uint256 private constant _LOW_128 = type(uint128).max;
    /// @dev Half the secp256k1 curve order: the largest s OpenZeppelin's ECDSA accepts.
    uint256 private constant _HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @inheritdoc IRentalEscrow
    IERC20 public immutable override paymentToken;
    /// @inheritdoc IRentalEscrow
    IProviderRegistry public immutable override registry;
    /// @notice Highest protocol fee governance may set, in bps.
    uint256 public immutable feeCapBps;
    /// @notice Seconds after opening within which the provider must start.
    uint256 public immutable startTimeout;
    /// @notice Seconds after a rental's end during which reports may still arrive before anyone can finalise.
    uint256 public immutable reportGrace;
    /// @notice Share of the elapsed rental (bps) that must be delivered; below it the SLA slash applies.
    uint256 public immutable slaBps;
    /// @notice Share of collateral (bps) slashed for an SLA breach when everything was missed.
    uint256 public immutable slaSlashBps;
    /// @notice Share of collateral (bps) slashed to the renter when the provider never starts.
    uint256 public immutable startSlashBps;
    /// @notice Seconds between the owner's proposal of an oracle set and the earliest time it can take effect.
    uint256 public immutable governanceDelay;

    /// @dev Settings read together on hot paths, packed into one slot.
    struct Config {
        address treasury;
        uint16 feeBps;
        uint8 threshold;
        uint64 oracleSetVersion;
    }

    /// @dev An oracle of the current set; every other address reads zero (a set change clears its old members), so
    /// a batch verifies from its signers' slots alone. `threshold` is the set's, repeated in each member's slot.
    struct OracleSlot {
        uint64 version;
        uint8 index;
        uint8 threshold;
    }

    /// @dev An oracle set the owner proposed, which anyone can activate once `effectiveAt` has passed.
    struct PendingOracleSet {
        address[] signers;
        uint8 threshold;
        uint40 effectiveAt;
    }

    /// @dev Lifetime totals, so a balance slot never returns to zero and later credits rewrite a warm slot.
    struct Balance {
        uint128 credited;
        uint128 withdrawn;
    }

    /// @notice Deployment parameters of an escrow.
    struct Params {
        IERC20 paymentToken;
        IProviderRegistry registry;
        address owner;
        address treasury;
        uint16 feeBps;
        uint16 feeCapBps;
        uint32 startTimeout;
        uint32 reportGrace;
        uint16 slaBps;
        uint16 slaSlashBps;
        uint16 startSlashBps;
        uint32 governanceDelay;
        address[] oracleSigners;
        uint8 threshold;
    }

    Config private _config;
    address[] private _oracleSigners;
    mapping(address signer => OracleSlot) private _oracles;
    mapping(uint256 offerId => Rental) private _rentals;
    mapping(address account => Balance) private _balances;
    PendingOracleSet private _pending;

    constructor(Params memory params) EIP712("gpuex RentalEscrow", "1") Ownable(params.owner) {
        if (address(params.paymentToken) == address(0) || params.treasury == address(0)) revert Escrow_ZeroAddress();
        if (
            params.feeCapBps > RentalMath.BPS || params.slaBps > RentalMath.BPS
                || params.slaSlashBps > RentalMath.BPS || params.startSlashBps > RentalMath.BPS
                || params.startTimeout == 0
        ) revert Escrow_InvalidParameter();
        if (params.feeBps > params.feeCapBps) revert Escrow_FeeAboveCap(params.feeBps, params.feeCapBps);
        address boundEscrow = params.registry.escrow();
        if (boundEscrow != address(this)) revert Escrow_RegistryNotBound(boundEscrow);

        paymentToken = params.paymentToken;
        registry = params.registry;
        feeCapBps = params.feeCapBps;
        startTimeout = params.startTimeout;
        reportGrace = params.reportGrace;
        slaBps = params.slaBps;
        slaSlashBps = params.slaSlashBps;
        startSlashBps = params.startSlashBps;
        governanceDelay = params.governanceDelay;
        _config = Config({treasury: params.treasury, feeBps: params.feeBps, threshold: 0, oracleSetVersion: 0});
        emit TreasuryUpdated(params.treasury);
        emit FeeUpdated(params.feeBps);
        _checkOracleSet(params.oracleSigners, params.threshold);
        _installOracleSet(params.oracleSigners, params.threshold);
    }

    /*//////////////////////////////////////////////////////////////
                             RENTER ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRentalEscrow
    function openRental(uint256 offerId, uint256 duration, uint256 maxPricePerSecond, bytes32 jobSpecHash)
        external
        override
        nonReentrant
        whenNotPaused
        returns (uint256 rentalId)
    {
        // Checks
        Rental storage rental = _rentals[offerId];
        if (_isLive(rental.state.status)) revert Escrow_OfferRented(offerId);
        // The registry is immutable and trusted, and locks collateral as part of the checks; every
        // state-changing entry point of both contracts that could re-enter is nonReentrant or escrow-only.
        // slither-disable-next-line reentrancy-no-eth
        (uint256 price, uint256 utilFloorBps) = registry.reserve(offerId, duration);
        if (price > maxPricePerSecond) revert Escrow_PriceAboveMax(offerId, price, maxPricePerSecond);

        // Effects
        uint32 nonce = rental.state.nonce + 1;
        rentalId = (offerId << 32) | nonce;
        uint256 deposit = price * duration;
        // The registry stores price as uint64 and bounds duration by the offer's uint32 maximum.
        _rentals[offerId].state = RentalState({
            nonce: nonce,
            since: uint40(block.timestamp),
            duration: uint32(duration),
            status: RentalStatus.Open,
            utilFloorBps: uint16(utilFloorBps),
            seq: 0,
            coveredSeconds: 0,
            deliveredSeconds: 0,
            utilSeconds: 0
        });
        _rentals[offerId].terms =
            RentalTerms({pricePerSecond: uint64(price), feeBps: _config.feeBps, claimed: 0, renter: msg.sender});
        emit RentalOpened(rentalId, offerId, msg.sender, price, duration, deposit, jobSpecHash);

        // Interactions
        _pullExactly(deposit);
    }

    /// @inheritdoc IRentalEscrow
    function terminate(uint256 rentalId) external override nonReentrant {
        (Rental storage rental, RentalState memory state) = _liveRental(rentalId);
        address renter = rental.terms.renter;
        if (msg.sender != renter) revert Escrow_NotRenter(rentalId, msg.sender);

        if (state.status == RentalStatus.Open) {
            if (block.timestamp > state.since + startTimeout) revert Escrow_StartTimedOut(rentalId);
            _settle(rentalId, rental, state, RentalStatus.Cancelled, 0, 0);
            return;
        }
        if (state.status != RentalStatus.Running) revert Escrow_RentalNotActive(rentalId, state.status);
        uint256 end = state.since + state.duration;
        if (block.timestamp >= end) revert Escrow_RentalEnded(rentalId, end);

        // Reports cover at most up to the block time, so the shortened duration still holds every
        // covered second and the remaining deposit still covers the earnings of any later totals.
        uint256 refund = rental.terms.pricePerSecond * (end - block.timestamp);
        state.duration = uint32(block.timestamp - state.since);
        state.status = RentalStatus.Terminated;
        rental.state = state;
        _credit(renter, refund);
        emit RentalTerminated(rentalId, block.timestamp, refund);
    }

    /// @inheritdoc IRentalEscrow
    function claimStartTimeout(uint256 rentalId) external override nonReentrant {
        (Rental storage rental, RentalState memory state) = _liveRental(rentalId);
        if (state.status != RentalStatus.Open) revert Escrow_RentalNotActive(rentalId, state.status);
        uint256 timeoutAt = state.since + startTimeout;
        if (block.timestamp <= timeoutAt) revert Escrow_StartTimeoutNotReached(rentalId, timeoutAt);

        _settle(rentalId, rental, state, RentalStatus.TimedOut, state.duration, startSlashBps);
    }

    /// @inheritdoc IRentalEscrow
    function finalize(uint256 rentalId) external override nonReentrant {
        (Rental storage rental, RentalState memory state) = _liveRental(rentalId);
        if (state.status == RentalStatus.Open) revert Escrow_RentalNotActive(rentalId, state.status);
        uint256 duration = state.duration;
        uint256 finalizableAt = state.since + duration + reportGrace;
        if (block.timestamp < finalizableAt) revert Escrow_NotYetFinalizable(rentalId, finalizableAt);

        _settleElapsed(rentalId, rental, state, RentalStatus.Expired, duration);
    }

    /// @inheritdoc IRentalEscrow
    /// @dev Not `nonReentrant`: the balance is settled before the transfer (checks-effects-interactions), so a
    /// call back from the token sees it withdrawn, and no other state is read after the transfer.
    function withdraw() external override {
        // Checks
        Balance storage balance = _balances[msg.sender];
        uint256 credited = balance.credited;
        uint256 amount = credited - balance.withdrawn;
        if (amount == 0) revert Escrow_NothingToWithdraw(msg.sender);

        // Effects
        balance.withdrawn = uint128(credited);
        emit Withdrawn(msg.sender, amount);

        // Interactions
        paymentToken.safeTransfer(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////
                            PROVIDER ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRentalEscrow
    function claimPayout(uint256 rentalId) external override nonReentrant {
        (Rental storage rental, RentalState memory state) = _liveRental(rentalId);
        if (state.status == RentalStatus.Open) revert Escrow_RentalNotActive(rentalId, state.status);
        RentalTerms memory terms = rental.terms;
        uint256 earned = _earned(state, terms.pricePerSecond);
        if (earned == terms.claimed) revert Escrow_NothingToClaim(rentalId);

        // earned <= price * duration < 2^96 (see `_earned`).
        rental.terms.claimed = uint96(earned);
        (uint256 payout, uint256 fee) =
            _payOut(registry.providerOf(rentalId >> 32), earned, terms.claimed, terms.feeBps);
        emit EarningsClaimed(rentalId, earned, payout, fee);
    }

    /// @inheritdoc IRentalEscrow
    function start(uint256 rentalId) external override {
        (Rental storage rental, RentalState memory state) = _liveRental(rentalId);
        if (state.status != RentalStatus.Open) revert Escrow_RentalNotActive(rentalId, state.status);
        if (!registry.isProviderOrAgent(rentalId >> 32, msg.sender)) {
            revert Escrow_NotProviderOrAgent(rentalId, msg.sender);
        }
        if (block.timestamp > state.since + startTimeout) revert Escrow_StartTimedOut(rentalId);

        state.since = uint40(block.timestamp);
        state.status = RentalStatus.Running;
        rental.state = state;
        emit RentalStarted(rentalId, block.timestamp, false);
    }

    /// @inheritdoc IRentalEscrow
    function decline(uint256 rentalId, uint8 reason) external override nonReentrant {
        // Checks
        (Rental storage rental, RentalState memory state) = _liveRental(rentalId);
        if (state.status != RentalStatus.Open) revert Escrow_RentalNotActive(rentalId, state.status);
        if (!registry.isProviderOrAgent(rentalId >> 32, msg.sender)) {
            revert Escrow_NotProviderOrAgent(rentalId, msg.sender);
        }
        // After the timeout the renter is owed the start-timeout slash, which a decline must not dodge.
        if (block.timestamp > state.since + startTimeout) revert Escrow_StartTimedOut(rentalId);
        if (reason > uint8(type(DeclineReason).max)) revert Escrow_UnknownDeclineReason(rentalId, reason);

        // Effects: `_settle` writes the final status, has the registry release the collateral unslashed and count
        // the decline, and credits the renter the whole deposit.
        emit RentalDeclined(rentalId, DeclineReason(reason));
        _settle(rentalId, rental, state, RentalStatus.Declined, 0, 0);
    }

    /*//////////////////////////////////////////////////////////////
                             ORACLE ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRentalEscrow
    /// @dev Not `nonReentrant`: its only external call is the registry's `settle`, a contract fixed at deployment
    /// that calls nothing back, and every state word a report touches is written before that call.
    function submitReports(Report[] calldata reports, uint24 oracleSetVersion, bytes32[] calldata signatures)
        external
        override
    {
        if (reports.length == 0) revert Escrow_EmptyBatch();
        _verifySignatures(_batchDigest(reports, oracleSetVersion), oracleSetVersion, signatures);

        for (uint256 i; i < reports.length; ++i) {
            _applyReport(reports[i]);
        }
    }

    /*//////////////////////////////////////////////////////////////
                               GOVERNANCE
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRentalEscrow
    function scheduleOracleSet(address[] calldata signers, uint256 threshold) external override onlyOwner {
        _checkOracleSet(signers, threshold);
        uint256 effectiveAt = block.timestamp + governanceDelay;
        // threshold <= count <= MAX_ORACLES fits uint8; a timestamp plus a uint32 delay fits uint40.
        _pending = PendingOracleSet({signers: signers, threshold: uint8(threshold), effectiveAt: uint40(effectiveAt)});
        emit OracleSetScheduled(_config.oracleSetVersion + 1, signers, threshold, effectiveAt);
    }

    /// @inheritdoc IRentalEscrow
    function cancelOracleSet() external override onlyOwner {
        if (_pending.effectiveAt == 0) revert Escrow_NoOracleSetScheduled();
        delete _pending;
        emit OracleSetCancelled(_config.oracleSetVersion + 1);
    }

    /// @inheritdoc IRentalEscrow
    function activateOracleSet() external override {
        uint256 effectiveAt = _pending.effectiveAt;
        if (effectiveAt == 0) revert Escrow_NoOracleSetScheduled();
        if (block.timestamp < effectiveAt) revert Escrow_OracleSetNotYetEffective(effectiveAt);
        address[] memory signers = _pending.signers;
        uint256 threshold = _pending.threshold;
        delete _pending;
        _installOracleSet(signers, threshold);
    }

    /// @inheritdoc IRentalEscrow
    function setFee(uint256 feeBps) external override onlyOwner {
        if (feeBps > feeCapBps) revert Escrow_FeeAboveCap(feeBps, feeCapBps);
        // feeBps <= feeCapBps <= 10000 fits uint16.
        _config.feeBps = uint16(feeBps);
        emit FeeUpdated(feeBps);
    }

    /// @inheritdoc IRentalEscrow
    function setTreasury(address treasury) external override onlyOwner {
        if (treasury == address(0)) revert Escrow_ZeroAddress();
        _config.treasury = treasury;
        emit TreasuryUpdated(treasury);
    }

    /// @inheritdoc IRentalEscrow
    function pause() external override onlyOwner {
        _pause();
    }

    /// @inheritdoc IRentalEscrow
    function unpause() external override onlyOwner {
        _unpause();
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRentalEscrow
    function getRental(uint256 rentalId) external view override returns (RentalView memory view_) {
        Rental storage rental = _rentals[rentalId >> 32];
        RentalState memory state = rental.state;
        uint32 nonce = uint32(rentalId);
        if (nonce == 0 || state.nonce != nonce) return view_;
        RentalTerms memory terms = rental.terms;
        view_ = RentalView({
            status: state.status,
            renter: terms.renter,
            pricePerSecond: terms.pricePerSecond,
            duration: state.duration,
            since: state.since,
            utilFloorBps: state.utilFloorBps,
            feeBps: terms.feeBps,
            lastSeq: state.seq,
            coveredSeconds: state.coveredSeconds,
            deliveredSeconds: state.deliveredSeconds,
            utilSeconds: state.utilSeconds,
            earned: _earned(state, terms.pricePerSecond),
            claimed: terms.claimed
        });
    }

    /// @inheritdoc IRentalEscrow
    function liveRentalOf(uint256 offerId) external view override returns (uint256) {
        Rental storage rental = _rentals[offerId];
        RentalState memory state = _rentals[offerId].state;
        return _isLive(state.status) ? (offerId << 32) | state.nonce : 0;
    }

    /// @inheritdoc IRentalEscrow
    function balanceOf(address account) external view override returns (uint256) {
        Balance storage balance = _balances[account];
        return balance.credited - balance.withdrawn;
    }

    /// @inheritdoc IRentalEscrow
    function oracleSet()
        external
        view
        override
        returns (uint256 version, address[] memory signers, uint256 threshold)
    {
        return (_config.oracleSetVersion, _oracleSigners, _config.threshold);
    }

    /// @inheritdoc IRentalEscrow
    function upcomingOracleSet()
        external
        view
        override
        returns (address[] memory signers, uint256 threshold, uint256 effectiveAt)
    {
        return (_pending.signers, _pending.threshold, _pending.effectiveAt);
    }

    /// @notice The fee in bps for rentals opened now, and the account fees are credited to.
    function feeConfig() external view returns (uint256 feeBps, address treasury) {
        return (_config.feeBps, _config.treasury);
    }

    /// @inheritdoc IRentalEscrow
    function batchDigest(Report[] calldata reports) external view override returns (bytes32) {
        return _batchDigest(reports, _config.oracleSetVersion);
    }

    /// @notice The EIP-712 domain separator of this escrow on the current chain.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /*//////////////////////////////////////////////////////////////
                               INTERNALS
    //////////////////////////////////////////////////////////////*/

    /// @dev Applies one report's totals, or skips it with a reason-coded event: a report never reverts its batch.
    /// This is the hot path of settlement, so it reads each report field from calldata once and works on the
    /// rental's packed state word (`RentalState`, whose layout the `_BITS_*` offsets mirror), read once and
    /// written once, instead of on a memory struct. Scoped blocks keep the stack shallow enough for the legacy
    /// pipeline that slither compiles with.
    function _applyReport(Report calldata report) private {
        uint256 rentalId;
        uint256 delivered;
        uint256 util;
        assembly ("memory-safe") {
            rentalId := calldataload(report)
            delivered := calldataload(add(report, 0x60))
            util := calldataload(add(report, 0x80))
        }
        Rental storage rental = _rentals[rentalId >> 32];
        uint256 word;
        assembly ("memory-safe") {
            word := sload(rental.slot)
        }
        uint256 since = (word >> _BITS_SINCE) & _MASK40;
        uint256 covered;
        // Unchecked: since < 2^40 and every other operand < 2^32, and each subtraction follows the check that
        // keeps it non-negative (coverage not before the applied coverage, so not before `since`).
        unchecked {
            uint256 seq;
            uint256 coveredUntil;
            uint256 status;
            assembly ("memory-safe") {
                seq := calldataload(add(report, 0x20))
                coveredUntil := calldataload(add(report, 0x40))
                status := calldataload(add(report, 0xa0))
            }
            // A word wider than its field was signed as such by the oracles (a typed-data signer cannot produce
            // one): the batch's quorum is bad, so the batch reverts as the ABI decoder would.
            if ((seq | delivered | util) > _MASK32 || coveredUntil > _MASK40 || status > type(uint8).max) {
                revert Escrow_MalformedReport(rentalId);
            }
            uint256 skip = _APPLIES;
            uint256 rentalStatus = (word >> _BITS_STATUS) & 0xff;
            if (uint32(rentalId) == 0 || word & _MASK32 != uint32(rentalId)) {
                skip = uint256(SkipReason.UnknownRental);
            } else if (
                rentalStatus != uint256(RentalStatus.Running) && rentalStatus != uint256(RentalStatus.Terminated)
            ) {
                if (rentalStatus != uint256(RentalStatus.Open)) skip = uint256(SkipReason.RentalClosed);
                else if (block.timestamp > since + startTimeout) skip = uint256(SkipReason.StartTimedOut);
            }
            if (skip == _APPLIES) {
                if (seq <= (word >> _BITS_SEQ) & _MASK32) skip = uint256(SkipReason.SeqNotIncreasing);
                else if (status > uint256(ReportStatus.Failed)) skip = uint256(SkipReason.UnknownStatus);
                else if (coveredUntil > block.timestamp) skip = uint256(SkipReason.CoverageInFuture);
                else if (
                    coveredUntil < since + ((word >> _BITS_COVERED) & _MASK32)
                        || delivered < (word >> _BITS_DELIVERED) & _MASK32 || util < word >> _BITS_UTIL
                ) skip = uint256(SkipReason.TotalsDecreased);
                else if (delivered > coveredUntil - since) skip = uint256(SkipReason.DeliveredAboveCovered);
                else if (util > delivered) skip = uint256(SkipReason.UtilisationAboveDelivered);
            }
            if (skip != _APPLIES) {
                emit ReportSkipped(rentalId, seq, SkipReason(skip));
                return;
            }
            // The totals are clamped to the rental's end, and each stays within the one before it; none goes
            // back because a raw total at or above the last applied one stays at or above it after clamping.
            covered = coveredUntil - since;
            uint256 duration = (word >> _BITS_DURATION) & _MASK32;
            if (covered > duration) covered = duration;
            if (delivered > covered) delivered = covered;
            if (util > delivered) util = delivered;
            // seq is a uint32; the three totals are at most the duration, a uint32.
            word = (word & _LOW_128) | (seq << _BITS_SEQ) | (covered << _BITS_COVERED)
                | (delivered << _BITS_DELIVERED) | (util << _BITS_UTIL);
        }
        if ((word >> _BITS_STATUS) & 0xff == uint256(RentalStatus.Open)) {
            // A rental the provider did not start explicitly is billed from its opening.
            word = word ^ ((uint256(RentalStatus.Open) ^ uint256(RentalStatus.Running)) << _BITS_STATUS);
            emit RentalStarted(rentalId, since, true);
        }
        assembly ("memory-safe") {
            sstore(rental.slot, word)
        }
        emit ReportApplied(
            rentalId, (word >> _BITS_SEQ) & _MASK32, since + covered, delivered, util, report.telemetryRoot
        );

        if (report.status != uint8(ReportStatus.Running)) {
            RentalStatus finalStatus =
                report.status == uint8(ReportStatus.Completed) ? RentalStatus.Completed : RentalStatus.Failed;
            _settleElapsed(rentalId, rental, rental.state, finalStatus, covered);
        }
    }

    /// @dev Settles a started rental over `elapsed` seconds from its start: seconds not delivered are missed,
    /// and missing more than the SLA allows slashes collateral in proportion.
    function _settleElapsed(
        uint256 rentalId,
        Rental storage rental,
        RentalState memory state,
        RentalStatus finalStatus,
        uint256 elapsed
    ) private {
        uint256 missed = elapsed - state.deliveredSeconds;
        uint256 slashBps = RentalMath.slaSlashBps(missed, elapsed, slaBps, slaSlashBps);
        _settle(rentalId, rental, state, finalStatus, missed, slashBps);
    }

    /// @dev What a settlement credited, gathered in memory for the {RentalFinalized} event.
    struct Settlement {
        uint256 payout;
        uint256 fee;
        uint256 refund;
        uint256 missed;
        uint256 slashed;
        SlashReason reason;
    }

    /// @dev Moves a rental to its final status, lets the registry settle its collateral and credits every party:
    /// the provider its earnings less the fee, the treasury the fee, the renter the rest of the deposit.
    function _settle(
        uint256 rentalId,
        Rental storage rental,
        RentalState memory state,
        RentalStatus finalStatus,
        uint256 missed,
        uint256 slashBps
    ) private {
        // Every caller passes the state as it is in storage, so only the status byte of the word changes.
        uint256 word;
        assembly ("memory-safe") {
            word := sload(rental.slot)
        }
        word = (word & ~(uint256(0xff) << _BITS_STATUS)) | (uint256(finalStatus) << _BITS_STATUS);
        assembly ("memory-safe") {
            sstore(rental.slot, word)
        }

        Settlement memory s =
            Settlement({payout: 0, fee: 0, refund: 0, missed: missed, slashed: 0, reason: SlashReason.None});
        if (slashBps != 0) {
            s.reason = finalStatus == RentalStatus.TimedOut ? SlashReason.StartTimeout : SlashReason.SlaBreach;
        }
        RentalTerms memory terms = rental.terms;
        uint256 offerId = rentalId >> 32;
        address provider;
        (provider, s.slashed) = registry.settle(
            offerId, terms.renter, finalStatus, state.deliveredSeconds, missed, slashBps, s.reason
        );

        // What claims already paid is part of the lifetime totals the event reports, but is not credited again.
        uint256 earned = _earned(state, terms.pricePerSecond);
        s.fee = RentalMath.fee(earned, terms.feeBps);
        s.payout = earned - s.fee;
        s.refund = uint256(terms.pricePerSecond) * state.duration - earned;
        if (terms.claimed == 0) {
            _credit(provider, s.payout);
            if (s.fee != 0) _credit(_config.treasury, s.fee);
        } else if (earned != terms.claimed) {
            _payOut(provider, earned, terms.claimed, terms.feeBps);
        }
        _credit(terms.renter, s.refund);
        emit RentalFinalized(
            rentalId, finalStatus, s.payout, s.fee, s.refund, state.deliveredSeconds, s.missed, s.slashed, s.reason
        );
    }

    /// @dev Credits the provider and the treasury the earnings between two gross totals, each side's share taken
    /// as the difference of its share of the totals: any sequence of claims adds up to the same split as one
    /// settlement of the final total.
    function _payOut(address provider, uint256 earned, uint256 alreadyPaid, uint256 feeBps)
        private
        returns (uint256 payout, uint256 fee)
    {
        fee = RentalMath.fee(earned, feeBps) - RentalMath.fee(alreadyPaid, feeBps);
        payout = earned - alreadyPaid - fee;
        _credit(provider, payout);
        _credit(_config.treasury, fee);
    }

    /// @dev Gross earnings of the rental's applied totals. delivered <= duration, so this is at most
    /// price * duration, the deposit, which is below 2^96 (price < 2^64, duration < 2^32).
    function _earned(RentalState memory state, uint256 pricePerSecond) private pure returns (uint256) {
        return RentalMath.earnings(pricePerSecond, state.deliveredSeconds, state.utilSeconds, state.utilFloorBps);
    }

    function _credit(address account, uint256 amount) private {
        if (amount != 0) _balances[account].credited += uint128(amount);
    }

    /// @dev Pulls exactly `amount` from the caller, rejecting tokens that deliver less (fee-on-transfer).
    function _pullExactly(uint256 amount) private {
        uint256 balanceBefore = paymentToken.balanceOf(address(this));
        paymentToken.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = paymentToken.balanceOf(address(this)) - balanceBefore;
        if (received != amount) revert Escrow_TransferAmountMismatch(amount, received);
    }

    /// @dev The rental with this id and its state, if it is the offer's current rental and not final.
    function _liveRental(uint256 rentalId) private view returns (Rental storage rental, RentalState memory state) {
        rental = _rentals[rentalId >> 32];
        state = rental.state;
        uint32 nonce = uint32(rentalId);
        if (nonce == 0 || state.nonce != nonce) revert Escrow_UnknownRental(rentalId);
        if (!_isLive(state.status)) revert Escrow_RentalNotActive(rentalId, state.status);
    }

    /// @dev The EIP-712 digest of a batch, hashed straight from calldata: a Report is seven static words, so
    /// TYPEHASH followed by them is exactly its `abi.encode`. The hashes of the reports and then the batch struct
    /// are built in memory past the free memory pointer, which is left where it was. A word with dirty high bits
    /// cannot slip through: it changes the digest, and `_applyReport` reverts on it.
    function _batchDigest(Report[] calldata reports, uint256 version) private view returns (bytes32) {
        bytes32 reportTypehash = _REPORT_TYPEHASH;
        bytes32 batchTypehash = _BATCH_TYPEHASH;
        bytes32 structHash;
        assembly ("memory-safe") {
            let count := reports.length
            let buffer := mload(0x40)
            let hashes := add(buffer, 0x100)
            mstore(buffer, reportTypehash)
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                calldatacopy(add(buffer, 0x20), add(reports.offset, mul(i, 0xe0)), 0xe0)
                mstore(add(hashes, mul(i, 0x20)), keccak256(buffer, 0x100))
            }
            let reportsHash := keccak256(hashes, mul(count, 0x20))
            mstore(buffer, batchTypehash)
            mstore(add(buffer, 0x20), version)
            mstore(add(buffer, 0x40), reportsHash)
            structHash := keccak256(buffer, 0x60)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @dev The signer of `digest` from a compact EIP-2098 signature, with OpenZeppelin ECDSA's rules and errors
    /// (s in the lower half of the curve order, so a signature has one valid encoding) and without its memory
    /// copies: this runs once per signer of every batch.
    function _recover(bytes32 digest, bytes32 r, bytes32 yParityAndS) private view returns (address signer) {
        uint256 s = uint256(yParityAndS) & ((1 << 255) - 1);
        if (s > _HALF_ORDER) revert ECDSA.ECDSAInvalidSignatureS(bytes32(s));
        uint256 v = (uint256(yParityAndS) >> 255) + 27;
        assembly ("memory-safe") {
            let buffer := mload(0x40)
            mstore(buffer, digest)
            mstore(add(buffer, 0x20), v)
            mstore(add(buffer, 0x40), r)
            mstore(add(buffer, 0x60), s)
            mstore(0x00, 0)
            // The ecrecover precompile returns nothing for an invalid signature, leaving the zero address.
            pop(staticcall(gas(), 0x01, buffer, 0x80, 0x00, 0x20))
            signer := mload(0x00)
        }
        if (signer == address(0)) revert ECDSA.ECDSAInvalidSignature();
    }

    /// @dev Requires at least `threshold` signatures, each a compact EIP-2098 pair (r, yParityAndS) and from a
    /// distinct oracle of the current set. Only members of the current set have a non-zero slot, and their slots
    /// hold its version: a batch signed under another version recovers to other addresses or fails that check.
    function _verifySignatures(bytes32 digest, uint256 version, bytes32[] calldata signatures) private view {
        uint256 words = signatures.length;
        if (words % 2 != 0) revert Escrow_MalformedSignatures(words);
        uint256 count = words / 2;
        uint256 threshold = 0;
        uint256 seen = 0;
        for (uint256 i; i < count; ++i) {
            bytes32 r;
            bytes32 yParityAndS;
            assembly ("memory-safe") {
                let at := add(signatures.offset, mul(i, 0x40))
                r := calldataload(at)
                yParityAndS := calldataload(add(at, 0x20))
            }
            address signer = _recover(digest, r, yParityAndS);
            // The slot's word, unpacked by hand: version in bits 0-63, index 64-71, threshold 72-79 (`OracleSlot`).
            OracleSlot storage slot = _oracles[signer];
            uint256 word;
            assembly ("memory-safe") {
                word := sload(slot.slot)
            }
            if (word & type(uint64).max != version || version == 0) revert Escrow_SignerNotInOracleSet(signer);
            uint256 bit = 1 << ((word >> 64) & 0xff);
            if (seen & bit != 0) revert Escrow_DuplicateSigner(signer);
            seen |= bit;
            threshold = (word >> 72) & 0xff;
        }
        if (count == 0) threshold = _config.threshold;
        if (count < threshold || count == 0) revert Escrow_NotEnoughSignatures(count, threshold);
    }

    /// @dev Reverts unless `signers` is a valid oracle set for `threshold`: 1..MAX_ORACLES distinct non-zero
    /// addresses and a threshold within 1..n.
    function _checkOracleSet(address[] memory signers, uint256 threshold) private pure {
        uint256 count = signers.length;
        if (count == 0 || count > MAX_ORACLES || threshold == 0 || threshold > count) {
            revert Escrow_InvalidOracleSet();
        }
        for (uint256 i; i < count; ++i) {
            if (signers[i] == address(0)) revert Escrow_InvalidOracleSet();
            for (uint256 j; j < i; ++j) {
                if (signers[j] == signers[i]) revert Escrow_InvalidOracleSet();
            }
        }
    }

    /// @dev Makes a checked set the current one under the next version: every older signature stops verifying.
    function _installOracleSet(address[] memory signers, uint256 threshold) private {
        uint64 version = _config.oracleSetVersion + 1;
        // Batches carry the version as a uint24 (16.7 million set changes).
        if (version > type(uint24).max) revert Escrow_InvalidOracleSet();
        uint256 previous = _oracleSigners.length;
        for (uint256 i; i < previous; ++i) {
            delete _oracles[_oracleSigners[i]];
        }
        uint256 count = signers.length;
        for (uint256 i; i < count; ++i) {
            // i < MAX_ORACLES and threshold <= count <= MAX_ORACLES fit uint8.
            _oracles[signers[i]] = OracleSlot({version: version, index: uint8(i), threshold: uint8(threshold)});
        }
        _oracleSigners = signers;
        _config.oracleSetVersion = version;
        // threshold <= count <= MAX_ORACLES fits uint8.
        _config.threshold = uint8(threshold);
        emit OracleSetUpdated(version, signers, threshold);
    }

    /// @dev A live rental holds its offer: no other rental can open on it until this one is final.
    function _isLive(RentalStatus status) private pure returns (bool) {
        return status == RentalStatus.Open || status == RentalStatus.Running || status == RentalStatus.Terminated;
    }
}
