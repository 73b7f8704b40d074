"""Google Workspace Email Audit API mailbox export watcher (docs/audit_export.md)."""
