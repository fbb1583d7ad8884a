"""Activities: they do what the workflow decided (record, send, escalate), idempotently."""
