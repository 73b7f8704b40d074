"""REST handlers of the account tabs: refuse a bad account at save time, with a
message that names the field and the fix."""

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
