"""The mailbox pipeline shared by the two mailbox watchers (audit_export, vault_export).

Each watcher keeps its own API client, downloads and checkpoint layout; what they
share lives here, one implementation each:

- `windows.UserWindows`: the per-user window plan (next window, windows to redo,
  retry counts; no gap, no overlap);
- `files`: the per-file resume state (a dict in the checkpoint), and `FileIndexer`,
  which turns any mbox byte stream into message events in batches, saving the
  checkpoint after each batch, resuming after the last message written;
- `pipeline`, `mbox`, `message`, `wholemessage`, `headers`, `base64fast`: split,
  parse and decode, in bounded memory whatever the message size;
- `lifecycle.Lifecycle`: the lifecycle events (`google:workspace:audit:export`),
  each carrying `api` (`audit` or `vault`).

A sketch of a watcher's file step (what audit_export does with gpg's plaintext, and
vault_export with the mbox member of a zip):

    lifecycle = Lifecycle(run.sink, domain, run.name, index, clock, api="vault",
                          id_namespace=("vault",))
    files = FileIndexer(lifecycle, save, run.check_stop, log, "vault",
                        include_body, body_max_bytes, max_attempts=3)
    entry = request["files"].setdefault(key, new_entry())
    if not settled(entry):
        try:
            files.index(request, key, entry, mbox_chunks, export_time, "extracted")
        except (MyTransferError, NotAnMbox) as error:
            files.error(request, key, entry, str(error), counted=True)

Everything here is `core`: no splunklib, no solnlib, no import of a service.
"""
