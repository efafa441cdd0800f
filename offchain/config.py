"""Settings of the off-chain services (pydantic-settings, environment prefix `GPUEX_`).

Private keys are `SecretStr` and never printed; each may be given inline (`GPUEX_..._KEY`) or as a path to a
file holding the hex key (`GPUEX_..._KEY_FILE`), never on the command line.
"""

from __future__ import annotations

import warnings
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KeyConfigError(ValueError):
    """A key was given both inline and as a file, neither, or is not a 32-byte hex key."""


def read_key(inline: SecretStr | None, key_file: Path | None, what: str) -> SecretStr:
    """The private key from exactly one of an inline secret or a key file, checked to be 32 hex bytes."""
    if (inline is None) == (key_file is None):
        raise KeyConfigError(f"{what}: give exactly one of the key or the key file")
    raw = inline.get_secret_value() if inline is not None else Path(str(key_file)).read_text()
    key = raw.strip().removeprefix("0x")
    if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
        raise KeyConfigError(f"{what}: not a 32-byte hex private key")
    return SecretStr("0x" + key.lower())


#: Blocks deep a transaction's receipt must be before it is final, by chain id, when `ChainSettings.confirmations`
#: is not set. Every transaction manager the services build waits this deep, re-checking the receipt's block at each
#: tick; an oracle settles a batch's reports only then, and still re-checks them against the chain for
#: `OracleSettings.reorg_window_seconds` after, in case a reorg went deeper (docs/PROTOCOL.md, "Finality").
#:
#: - Ethereum mainnet (1) and Sepolia (11155111): 12 s slots; one- and two-block reorgs of the head happen every
#:   day, deeper ones are rare (seven blocks on the beacon chain in May 2022) and nothing reverts past the
#:   finalised checkpoint (two epochs, about 13 minutes). 12 blocks (about 2.4 minutes) puts a batch past every
#:   reorg seen since the merge without making a report wait for full finality.
#: - OP-stack rollups: Base (8453), OP Mainnet (10), Base Sepolia (84532), OP Sepolia (11155420): 2 s blocks from a
#:   single sequencer, whose "unsafe" head is final in practice unless the sequencer fails before posting the
#:   batch to L1 or L1 itself reorgs, which then reorgs the L2 by minutes. 10 blocks (20 s) rides out a
#:   sequencer restart; deeper L1-driven reorgs are what the oracle's re-check window is for.
#: - Arbitrum One (42161) and Arbitrum Sepolia (421614): blocks about every 0.25 s while transactions arrive; the
#:   sequencer's feed orders them for good unless it misbehaves, and L1 settles them later. 20 blocks (a few
#:   seconds) is the same soft-finality margin.
#: - Development chains (1337: Brownie's and Ganache's anvil, 31337: anvil and Hardhat): reorgs happen only when a
#:   test makes one, so one block keeps every flow fast; tests set a deeper value where they reorg.
#: Any other chain gets `FALLBACK_CONFIRMATIONS`, the L1 value: unknown, so assumed to reorg like Ethereum.
DEFAULT_CONFIRMATIONS: dict[int, int] = {
    1: 12,
    11155111: 12,
    8453: 10,
    10: 10,
    84532: 10,
    11155420: 10,
    42161: 20,
    421614: 20,
    1337: 1,
    31337: 1,
}
FALLBACK_CONFIRMATIONS = 12
#: How long after landing an oracle re-checks a report against the chain (`OracleSettings.reorg_window_seconds`):
#: past Ethereum's finality (two epochs, about 13 minutes) and an OP-stack chain's L1-safe head, with margin.
DEFAULT_REORG_WINDOW_SECONDS = 3_600.0


def default_confirmations(chain_id: int) -> int:
    """The confirmations a chain's transactions wait for when none are configured (`DEFAULT_CONFIRMATIONS`)."""
    return DEFAULT_CONFIRMATIONS.get(chain_id, FALLBACK_CONFIRMATIONS)


class ChainSettings(BaseModel):
    """Where the contracts are, and how deep a transaction must be before it counts as final (`confirmations`,
    `GPUEX_ORACLE_CHAIN__CONFIRMATIONS` or `GPUEX_AGENT_CHAIN__CONFIRMATIONS`; by default the chain's entry of
    `DEFAULT_CONFIRMATIONS`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpc_url: str = "http://127.0.0.1:8545"
    chain_id: int = Field(default=1337, ge=1)
    registry: str
    escrow: str
    confirmations: int = Field(default=FALLBACK_CONFIRMATIONS, ge=1, le=1_000)  # unset: the chain's default

    @model_validator(mode="before")
    @classmethod
    def _default_confirmations(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("confirmations") in (None, ""):
            chain_id = data.get("chain_id", 1337)
            try:
                chain = int(chain_id)
            except (TypeError, ValueError):
                return data  # the field's own validation names the bad chain id
            return {**data, "confirmations": default_confirmations(chain)}
        return data

    @field_validator("registry", "escrow")
    @classmethod
    def _checksummed(cls, value: str) -> str:
        from web3 import Web3

        if not Web3.is_address(value):
            raise ValueError(f"not an address: {value}")
        return Web3.to_checksum_address(value)


class _ServiceSettings(BaseSettings):
    """Shared by the agent and the oracle: the service's key, the chain and whether simulated telemetry is
    accepted."""

    model_config = SettingsConfigDict(env_prefix="GPUEX_", env_nested_delimiter="__", extra="forbid")

    key: SecretStr | None = None
    key_file: Path | None = None
    chain: ChainSettings
    allow_simulated: bool = False  # dev and demo only: real deployments refuse simulated telemetry
    state_dir: Path = Path(".gpuex")

    @property
    def private_key(self) -> SecretStr:
        """The service's key, which validation read from `key` or `key_file` (so it is always set)."""
        if self.key is None:
            raise KeyConfigError("no key: the settings were built without validation")
        return self.key


class SubmitPolicy(StrEnum):
    """Which due reports an oracle lands itself (`offchain.oracle.rotation`)."""

    ROTATE = "rotate"  # in its turn, or as a fallback once the oracles before it let `handoff_seconds` pass each
    ALWAYS = "always"  # every report as soon as it is due, whoever's turn it is (what the single leader once did)
    NEVER = "never"  # none: co-signs only, and runs neither the batcher, the keeper nor a tx manager


class OracleSettings(_ServiceSettings):
    """One oracle of the k-of-n set."""

    model_config = SettingsConfigDict(env_prefix="GPUEX_ORACLE_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    peers: list[str] = []  # base URLs of the other oracles, for co-signing
    # Every oracle that submits batches reports, collects co-signatures and sends transactions from its own key.
    submit: SubmitPolicy = SubmitPolicy.ROTATE
    # Deprecated alias of `submit`: true is `always`, false is `never`; unset leaves `submit` as given.
    leader: bool | None = None
    # How long each oracle in the turn order waits for the one before it to land a due report; the last one's turn
    # must come well within the escrow's reportGrace (`rotation.check_handoff`, checked at start).
    handoff_seconds: int = Field(default=30, ge=1)
    keeper: bool = True  # unless `submit` is never: also finalise and time out due rentals
    # The keeper holds back `finalize` while this oracle holds a due report the chain has not applied, for at most
    # this long past the time finalize became possible.
    finalize_defer_seconds: int = Field(default=600, ge=0)
    keeper_interval_seconds: float = Field(default=5.0, gt=0)
    epoch_seconds: float = Field(default=30.0, gt=0)
    max_batch_reports: int = Field(default=100, ge=1)
    # A rental's latest report lands at the latest once its coverage is this far past what last landed.
    checkpoint_interval_seconds: int = Field(default=3_600, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_clock_skew_seconds: int = Field(default=30, ge=0)
    # How long after landing a report is re-checked against the chain, for reorgs deeper than the confirmations.
    reorg_window_seconds: float = Field(default=DEFAULT_REORG_WINDOW_SECONDS, ge=0)
    web: bool = False  # also serve the marketplace web page under /web/ (needs the deployment record)
    web_confirmations: int = Field(default=0, ge=0)  # blocks the page's event index stays behind the head
    # Recovery of held reports from the peers (offchain.oracle.recovery), at start and when a report skips seqs.
    recovery_max_pages: int = Field(default=1_000, ge=0)  # pages of GET /v1/reports taken from a peer; 0: none
    recovery_timeout_seconds: float = Field(default=10.0, gt=0)  # for each page

    @model_validator(mode="after")
    def _one_key(self) -> "OracleSettings":
        self.key = read_key(self.key, self.key_file, "oracle key")
        self.key_file = None
        return self

    @model_validator(mode="after")
    def _leader_alias(self) -> "OracleSettings":
        if self.leader is not None:
            if "submit" in self.model_fields_set and self.submit is not _LEADER_POLICY[self.leader]:
                raise ValueError("leader (deprecated) and submit disagree: set submit only")
            warnings.warn(
                "GPUEX_ORACLE_LEADER is deprecated: every oracle of the set may submit; use GPUEX_ORACLE_SUBMIT",
                DeprecationWarning,
                stacklevel=2,
            )
            self.submit = _LEADER_POLICY[self.leader]
            self.leader = None
        return self


_LEADER_POLICY = {True: SubmitPolicy.ALWAYS, False: SubmitPolicy.NEVER}


class AgentSettings(_ServiceSettings):
    """The provider machine's agent."""

    model_config = SettingsConfigDict(env_prefix="GPUEX_AGENT_", env_nested_delimiter="__", extra="forbid")

    provider: str
    oracles: list[str]
    report_interval_seconds: float = Field(default=60.0, ge=1.0)

    @model_validator(mode="after")
    def _one_key(self) -> "AgentSettings":
        self.key = read_key(self.key, self.key_file, "agent key")
        self.key_file = None
        return self
