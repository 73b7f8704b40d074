"""Google Vault mail export watcher (docs/vault_export.md)."""
