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
import {IRentalEscrow} from "./interfaces/IRentalEscrow.sol";
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
    bytes32 public constant REPORT_TYPEHASH = keccak256(
        "Report(uint256 rentalId,uint32 seq,uint40 periodEnd,uint32 deliveredSeconds,uint16 avgUtilBps,uint8 status,bytes32 telemetryRoot)"
    );
    /// @notice EIP-712 type of a batch: the oracle set version makes an old set's signatures unusable.
    bytes32 public constant BATCH_TYPEHASH = keccak256(
        "ReportBatch(uint64 oracleSetVersion,Report[] reports)Report(uint256 rentalId,uint32 seq,uint40 periodEnd,uint32 deliveredSeconds,uint16 avgUtilBps,uint8 status,bytes32 telemetryRoot)"
    );
    /// @notice Most oracles in a set; a signer's index must fit the 256-bit duplicate mask.
    uint256 public constant MAX_ORACLES = 255;

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

    /// @dev Settings read together on hot paths, packed into one slot.
    struct Config {
        address treasury;
        uint16 feeBps;
        uint8 threshold;
        uint64 oracleSetVersion;
    }

    /// @dev An oracle belongs to the current set only while `version` equals the set's version.
    struct OracleSlot {
        uint64 version;
        uint8 index;
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
    }

    Config private _config;
    address[] private _oracleSigners;
    mapping(address signer => OracleSlot) private _oracles;
    mapping(uint256 offerId => Rental) private _rentals;
    mapping(address account => Balance) private _balances;

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
        _config = Config({treasury: params.treasury, feeBps: params.feeBps, threshold: 0, oracleSetVersion: 0});
        emit TreasuryUpdated(params.treasury);
        emit FeeUpdated(params.feeBps);
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
        uint32 nonce = rental.terms.nonce + 1;
        rentalId = (offerId << 32) | nonce;
        uint256 deposit = price * duration;
        // The registry stores price as uint64 and bounds duration by the offer's uint32 maximum.
        _rentals[offerId].state = RentalState({
            since: uint40(block.timestamp),
            reportedSeconds: 0,
            seq: 0,
            deliveredSeconds: 0,
            status: RentalStatus.Open,
            utilFloorBps: uint16(utilFloorBps),
            earned: 0
        });
        _rentals[offerId].terms = RentalTerms({
            nonce: nonce,
            pricePerSecond: uint64(price),
            duration: uint32(duration),
            feeBps: _config.feeBps,
            renter: msg.sender
        });
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
        uint256 end = state.since + rental.terms.duration;
        if (block.timestamp >= end) revert Escrow_RentalEnded(rentalId, end);

        // Reports cover at most up to the block time, so the shortened duration still holds every
        // reported second and the remaining deposit still covers the accrued earnings.
        uint256 refund = rental.terms.pricePerSecond * (end - block.timestamp);
        rental.terms.duration = uint32(block.timestamp - state.since);
        rental.state.status = RentalStatus.Terminated;
        _credit(renter, refund);
        emit RentalTerminated(rentalId, block.timestamp, refund);
    }

    /// @inheritdoc IRentalEscrow
    function claimStartTimeout(uint256 rentalId) external override nonReentrant {
        (Rental storage rental, RentalState memory state) = _liveRental(rentalId);
        if (state.status != RentalStatus.Open) revert Escrow_RentalNotActive(rentalId, state.status);
        uint256 timeoutAt = state.since + startTimeout;
        if (block.timestamp <= timeoutAt) revert Escrow_StartTimeoutNotReached(rentalId, timeoutAt);

        _settle(rentalId, rental, state, RentalStatus.TimedOut, rental.terms.duration, startSlashBps);
    }

    /// @inheritdoc IRentalEscrow
    function finalize(uint256 rentalId) external override nonReentrant {
        (Rental storage rental, RentalState memory state) = _liveRental(rentalId);
        if (state.status == RentalStatus.Open) revert Escrow_RentalNotActive(rentalId, state.status);
        uint256 duration = rental.terms.duration;
        uint256 finalizableAt = state.since + duration + reportGrace;
        if (block.timestamp < finalizableAt) revert Escrow_NotYetFinalizable(rentalId, finalizableAt);

        _settleElapsed(rentalId, rental, state, RentalStatus.Expired, duration);
    }

    /// @inheritdoc IRentalEscrow
    function withdraw() external override nonReentrant {
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
    function submitReports(Report[] calldata reports, bytes[] calldata signatures) external override nonReentrant {
        if (reports.length == 0) revert Escrow_EmptyBatch();
        Config memory config = _config;
        _verifySignatures(_batchDigest(reports, config.oracleSetVersion), signatures, config);

        bool anyApplied = false;
        for (uint256 i; i < reports.length; ++i) {
            if (_applyReport(reports[i])) anyApplied = true;
        }
        if (!anyApplied) revert Escrow_BatchHadNoEffect();
    }

    /*//////////////////////////////////////////////////////////////
                               GOVERNANCE
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRentalEscrow
    function setOracleSet(address[] calldata signers, uint256 threshold) external override onlyOwner {
        uint256 count = signers.length;
        if (count == 0 || count > MAX_ORACLES || threshold == 0 || threshold > count) {
            revert Escrow_InvalidOracleSet();
        }
        uint64 version = _config.oracleSetVersion + 1;
        for (uint256 i; i < count; ++i) {
            address signer = signers[i];
            if (signer == address(0) || _oracles[signer].version == version) revert Escrow_InvalidOracleSet();
            // i < MAX_ORACLES fits uint8.
            _oracles[signer] = OracleSlot({version: version, index: uint8(i)});
        }
        _oracleSigners = signers;
        _config.oracleSetVersion = version;
        // threshold <= count <= MAX_ORACLES fits uint8.
        _config.threshold = uint8(threshold);
        emit OracleSetUpdated(version, signers, threshold);
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
    function getRental(uint256 rentalId)
        external
        view
        override
        returns (
            RentalStatus status,
            address renter,
            uint256 pricePerSecond,
            uint256 duration,
            uint256 since,
            uint256 lastSeq,
            uint256 reportedSeconds,
            uint256 deliveredSeconds,
            uint256 earned
        )
    {
        uint32 nonce = uint32(rentalId);
        Rental storage rental = _rentals[rentalId >> 32];
        if (nonce == 0 || rental.terms.nonce != nonce) return (RentalStatus.None, address(0), 0, 0, 0, 0, 0, 0, 0);
        RentalState memory state = rental.state;
        return (
            state.status,
            rental.terms.renter,
            rental.terms.pricePerSecond,
            rental.terms.duration,
            state.since,
            state.seq,
            state.reportedSeconds,
            state.deliveredSeconds,
            state.earned
        );
    }

    /// @inheritdoc IRentalEscrow
    function liveRentalOf(uint256 offerId) external view override returns (uint256) {
        Rental storage rental = _rentals[offerId];
        return _isLive(rental.state.status) ? (offerId << 32) | rental.terms.nonce : 0;
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

    /// @dev Applies one report, or skips it with an event when its rental no longer takes reports. The
    /// rental's state word is read once and written once.
    function _applyReport(Report calldata report) private returns (bool applied) {
        uint256 rentalId = report.rentalId;
        Rental storage rental = _rentals[rentalId >> 32];
        uint32 nonce = uint32(rentalId);
        if (nonce == 0 || rental.terms.nonce != nonce) {
            emit ReportSkipped(rentalId, report.seq, SkipReason.UnknownRental);
            return false;
        }
        RentalState memory state = rental.state;
        if (state.status == RentalStatus.Open && block.timestamp > state.since + startTimeout) {
            emit ReportSkipped(rentalId, report.seq, SkipReason.StartTimedOut);
            return false;
        }
        if (!_isLive(state.status)) {
            emit ReportSkipped(rentalId, report.seq, SkipReason.RentalClosed);
            return false;
        }

        uint256 elapsed = _accrue(rental, state, report);
        if (report.status == uint8(ReportStatus.Completed)) {
            _settleElapsed(rentalId, rental, state, RentalStatus.Completed, elapsed);
        } else if (report.status == uint8(ReportStatus.Failed)) {
            _settleElapsed(rentalId, rental, state, RentalStatus.Failed, elapsed);
        }
        return true;
    }

    /// @dev Validates a report and accrues its earnings to the rental, writing the state word once; returns the
    /// seconds from the rental's start to the end of the reported period.
    function _accrue(Rental storage rental, RentalState memory state, Report calldata report)
        private
        returns (uint256 elapsed)
    {
        (uint256 periodEnd, uint256 delivered) = _checkedPeriod(state, rental.terms.duration, report);
        uint256 amount =
            RentalMath.earnings(rental.terms.pricePerSecond, delivered, state.utilFloorBps, report.avgUtilBps);
        elapsed = periodEnd - state.since;
        // Bounds: reportedSeconds and deliveredSeconds <= duration (uint32); earned <= price * duration, which is
        // below 2^96 because price < 2^64 and duration < 2^32.
        state.seq = report.seq;
        state.reportedSeconds = uint32(elapsed);
        state.deliveredSeconds += uint32(delivered);
        state.earned += uint96(amount);
        if (state.status == RentalStatus.Open) {
            // A rental the provider did not start explicitly is billed from its opening.
            state.status = RentalStatus.Running;
            emit RentalStarted(report.rentalId, state.since, true);
        }
        rental.state = state;
        emit ReportApplied(
            report.rentalId, report.seq, periodEnd, delivered, report.avgUtilBps, amount, report.telemetryRoot
        );
    }

    /// @dev Validates a report against its rental and returns its period end and delivered seconds, both
    /// clamped to the rental's end: time past the end is neither billed nor counted.
    function _checkedPeriod(RentalState memory state, uint256 duration, Report calldata report)
        private
        view
        returns (uint256 periodEnd, uint256 delivered)
    {
        uint256 rentalId = report.rentalId;
        uint256 expectedSeq = uint256(state.seq) + 1;
        if (report.seq != expectedSeq) revert Escrow_UnexpectedSeq(rentalId, expectedSeq, report.seq);
        if (report.avgUtilBps > RentalMath.BPS) revert Escrow_UtilisationOutOfRange(rentalId, report.avgUtilBps);
        if (report.status > uint8(ReportStatus.Failed)) revert Escrow_UnknownReportStatus(rentalId, report.status);

        uint256 lastEnd = state.since + state.reportedSeconds;
        uint256 rawEnd = report.periodEnd;
        if (rawEnd > block.timestamp) revert Escrow_PeriodEndInFuture(rentalId, rawEnd, block.timestamp);
        if (rawEnd <= lastEnd) revert Escrow_PeriodEndNotAfterLast(rentalId, rawEnd, lastEnd);
        if (report.deliveredSeconds > rawEnd - lastEnd) {
            revert Escrow_DeliveredExceedsPeriod(rentalId, report.deliveredSeconds, rawEnd - lastEnd);
        }

        uint256 end = state.since + duration;
        periodEnd = rawEnd < end ? rawEnd : end;
        // lastEnd <= end: reports never cover time past the end, and a termination keeps what was reported.
        uint256 periodSeconds = periodEnd - lastEnd;
        delivered = report.deliveredSeconds < periodSeconds ? report.deliveredSeconds : periodSeconds;
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
        state.status = finalStatus;
        rental.state = state;

        Settlement memory s =
            Settlement({payout: 0, fee: 0, refund: 0, missed: missed, slashed: 0, reason: SlashReason.None});
        if (slashBps != 0) {
            s.reason = finalStatus == RentalStatus.TimedOut ? SlashReason.StartTimeout : SlashReason.SlaBreach;
        }
        address renter = rental.terms.renter;
        address provider;
        (provider, s.slashed) =
            registry.settle(rentalId >> 32, renter, finalStatus, state.deliveredSeconds, missed, slashBps, s.reason);

        uint256 earned = state.earned;
        s.fee = (earned * rental.terms.feeBps) / RentalMath.BPS;
        s.payout = earned - s.fee;
        s.refund = uint256(rental.terms.pricePerSecond) * rental.terms.duration - earned;
        _credit(provider, s.payout);
        _credit(_config.treasury, s.fee);
        _credit(renter, s.refund);
        emit RentalFinalized(
            rentalId, finalStatus, s.payout, s.fee, s.refund, state.deliveredSeconds, s.missed, s.slashed, s.reason
        );
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
        uint32 nonce = uint32(rentalId);
        if (nonce == 0 || rental.terms.nonce != nonce) revert Escrow_UnknownRental(rentalId);
        state = rental.state;
        if (!_isLive(state.status)) revert Escrow_RentalNotActive(rentalId, state.status);
    }

    /// @dev hashStruct of every report, hashed straight from calldata: a Report is seven static words, so
    /// TYPEHASH followed by them is exactly its `abi.encode`. A word with dirty high bits cannot slip through:
    /// it changes the digest, and reading the field later reverts in the ABI decoder.
    function _batchDigest(Report[] calldata reports, uint64 version) private view returns (bytes32) {
        uint256 count = reports.length;
        bytes32[] memory hashes = new bytes32[](count);
        bytes32 typehash = REPORT_TYPEHASH;
        assembly ("memory-safe") {
            let buffer := mload(0x40)
            mstore(buffer, typehash)
            let out := add(hashes, 0x20)
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                calldatacopy(add(buffer, 0x20), add(reports.offset, mul(i, 0xe0)), 0xe0)
                mstore(add(out, mul(i, 0x20)), keccak256(buffer, 0x100))
            }
        }
        bytes32 reportsHash;
        assembly ("memory-safe") {
            reportsHash := keccak256(add(hashes, 0x20), mul(count, 0x20))
        }
        return _hashTypedDataV4(keccak256(abi.encode(BATCH_TYPEHASH, version, reportsHash)));
    }

    /// @dev Requires at least `threshold` signatures, each from a distinct oracle of the current set.
    function _verifySignatures(bytes32 digest, bytes[] calldata signatures, Config memory config) private view {
        if (config.oracleSetVersion == 0) revert Escrow_NoOracleSet();
        uint256 count = signatures.length;
        if (count < config.threshold || count == 0) revert Escrow_NotEnoughSignatures(count, config.threshold);
        uint256 seen = 0;
        for (uint256 i; i < count; ++i) {
            address signer = ECDSA.recover(digest, signatures[i]);
            OracleSlot memory slot = _oracles[signer];
            if (slot.version != config.oracleSetVersion) revert Escrow_SignerNotInOracleSet(signer);
            uint256 bit = 1 << slot.index;
            if (seen & bit != 0) revert Escrow_DuplicateSigner(signer);
            seen |= bit;
        }
    }

    /// @dev A live rental holds its offer: no other rental can open on it until this one is final.
    function _isLive(RentalStatus status) private pure returns (bool) {
        return status == RentalStatus.Open || status == RentalStatus.Running || status == RentalStatus.Terminated;
    }
}
