"""What the contracts and the off-chain services agree on, with no chain access of its own.

- `status`: the enums of contracts/types/DataTypes.sol.
- `eip712`: the EIP-712 struct types, each written once; `reports`: the on-chain report and its co-signed batch;
  `messages`: the agent's signed telemetry report and the oracle API; `digest`: its fast digest for ingest.
- `renterapi`: the renter API's wire format and signatures; `agenturl`: the check of a published agent URL.
"""
