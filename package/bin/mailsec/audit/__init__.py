"""Google Workspace Email Audit API mailbox export watcher (SPEC section 5)."""
