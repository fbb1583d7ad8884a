"""arflow: accounts-receivable collections orchestrator (shared settings, storage, CLI)."""
