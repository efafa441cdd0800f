"""Running a suite: roles of a development chain (`roles`), deployment records (`deployments`), deploying
(`deploy`), a local exchange in the background (`devnet`) or in this process (`inprocess`), and process checks
(`processes`)."""
