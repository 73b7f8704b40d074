"""REST handlers of the inputs: deleting an input deletes its KV-store checkpoint,
so a new input with an old name starts clean."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)
from solnlib import log
from splunktaucclib.rest_handler.admin_external import AdminExternalHandler

from mailsec.adapters.kvstore import KVStoreCheckpointStore, checkpoint_collection


class _DeleteCheckpointHandler(AdminExternalHandler):
    input_type = ""

    def handleRemove(self, confInfo):
        name = str(self.callerArgs.id)
        logger = log.Logs().get_logger("ta_mailsec_rest_handlers")
        try:
            # Inside splunkd, solnlib finds the management port itself.
            store = KVStoreCheckpointStore.inside_splunkd(
                self.getSessionKey(), checkpoint_collection(self.input_type)
            )
            store.delete(name)
            logger.info("Deleted the checkpoint of %s://%s", self.input_type, name)
        except Exception as error:
            log.log_exception(
                logger, error, "CheckpointError",
                msg_before=f"Could not delete the checkpoint of {self.input_type}://{name}: ",
            )  # fmt: skip
        AdminExternalHandler.handleRemove(self, confInfo)


class SerReportInputHandler(_DeleteCheckpointHandler):
    input_type = "ser_report"


class SenseListenerInputHandler(_DeleteCheckpointHandler):
    input_type = "sense_listener"


class AuditExportInputHandler(_DeleteCheckpointHandler):
    input_type = "audit_export"
