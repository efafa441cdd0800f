"""The agent's SQLite database (opened with `offchain.sqlite.open_db`): one file holds the watcher's cursor, the
rentals and the outbox, so that a report and the rental progress it consumes are committed in one transaction."""

DB_FILE_NAME = "agent.sqlite"
#: The agent's transactions (`offchain.chain.tx.manager.TxManager`): its `start` and `decline` calls.
TX_DB_FILE_NAME = "txmgr.sqlite"
