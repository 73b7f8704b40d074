"""REST handlers of the account tabs: refuse a bad account at save time, with a
message that names the field and the fix; deleting a Release Manager account also
deletes the PEM form of its certificate that the alert action cached."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)

from splunktaucclib.rest_handler.admin_external import AdminExternalHandler
from splunktaucclib.rest_handler.error import RestError

from mailsec.accounts import validate_account
from mailsec.core.params import ConfigError


class _ValidatingAccountHandler(AdminExternalHandler):
    tab = ""

    def _validate(self):
        fields = {key: value for key, value in self.payload.items()}
        try:
            validate_account(self.tab, fields)
        except ConfigError as error:
            raise RestError(400, str(error)) from None

    def handleCreate(self, confInfo):
        self._validate()
        AdminExternalHandler.handleCreate(self, confInfo)

    def handleEdit(self, confInfo):
        self._validate()
        AdminExternalHandler.handleEdit(self, confInfo)


class SerAccountHandler(_ValidatingAccountHandler):
    tab = "ser_account"


class GoogleAccountHandler(_ValidatingAccountHandler):
    tab = "google_account"


class RmAccountHandler(_ValidatingAccountHandler):
    tab = "rm_account"

    def handleRemove(self, confInfo):
        forget_cached_certificate(self.getSessionKey(), str(self.callerArgs.id))
        AdminExternalHandler.handleRemove(self, confInfo)


def forget_cached_certificate(session_key: str, account: str) -> None:
    """A failure is logged and does not block the removal: the entry is encrypted by
    splunkd and a new account of that name replaces it (another PKCS#12 is a miss)."""
    from solnlib import log
    from solnlib.splunkenv import get_splunkd_uri

    from mailsec.adapters.secret_cache import delete_credential
    from mailsec.adapters.settings import RM_PEM_CACHE_REALM
    from mailsec.adapters.splunkd import Splunkd

    logger = log.Logs().get_logger("ta_mailsec_rest_handlers")
    try:
        splunkd = Splunkd(get_splunkd_uri(session_key), session_key)
        if delete_credential(splunkd, RM_PEM_CACHE_REALM, account):
            logger.info("Deleted the cached certificate of rm_account %s", account)
    except Exception as error:
        logger.warning(
            "Could not delete the cached certificate of rm_account %s: %s", account, error
        )
