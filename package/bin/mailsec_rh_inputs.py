"""REST handlers of the inputs: deleting an input deletes its KV-store checkpoint,
so a new input with an old name starts clean."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)

from solnlib import log
from splunktaucclib.rest_handler.admin_external import AdminExternalHandler

from mailsec.adapters.kvstore import delete_checkpoint_on_input_removal
from mailsec.sense.dedupe import forget_listener


class _DeleteCheckpointHandler(AdminExternalHandler):
    input_type = ""
    #: what the service keeps besides its checkpoint: (open_store, input_name) -> None
    forget_state = None

    def handleRemove(self, confInfo):
        delete_checkpoint_on_input_removal(
            self.getSessionKey(),
            self.input_type,
            str(self.callerArgs.id),
            log.Logs().get_logger("ta_mailsec_rest_handlers"),
            forget_state=type(self).forget_state,
        )
        AdminExternalHandler.handleRemove(self, confInfo)


class SerReportInputHandler(_DeleteCheckpointHandler):
    input_type = "ser_report"


class SerUsageInputHandler(_DeleteCheckpointHandler):
    input_type = "ser_usage"


class SenseListenerInputHandler(_DeleteCheckpointHandler):
    input_type = "sense_listener"
    forget_state = staticmethod(forget_listener)  # and the messageIds it remembers


class AuditExportInputHandler(_DeleteCheckpointHandler):
    input_type = "audit_export"


class VaultExportInputHandler(_DeleteCheckpointHandler):
    input_type = "vault_export"
