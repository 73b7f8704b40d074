"""Where UCC keeps the add-on's configuration, and the add-on's own storage/passwords
realms.

Shared by the solnlib reader (`adapters.config`, modular inputs) and the lean reader
(`adapters.lean_config`, the alert action, which must not import solnlib): both
name the same conf files and storage/passwords realms. Standard library only.
"""

from __future__ import annotations

from mailsec import APP_NAME

# What the Logging and Proxy tabs mean is core's (the alert action reads them too);
# the adapters use it through this module.
from mailsec.core.settings import log_level_from_settings, proxy_from_settings  # noqa: F401

SETTINGS_CONF = "ta_mailsec_settings"


def conf_for_tab(tab: str) -> str:
    return f"ta_mailsec_{tab}"


def conf_realm(conf: str) -> str:
    """The storage/passwords realm of a UCC conf file's encrypted fields."""
    return f"__REST_CREDENTIAL__#{APP_NAME}#configs/conf-{conf}"


def input_realm(input_type: str) -> str:
    return f"__REST_CREDENTIAL__#{APP_NAME}#data/inputs/{input_type}"


def addon_realm(name: str) -> str:
    """A realm of the add-on's own (not UCC's) storage/passwords entries."""
    return f"__REST_CREDENTIAL__#{APP_NAME}#{name}"


#: Every realm of this add-on starts so (UCC's and its own).
REALM_PREFIX = f"__REST_CREDENTIAL__#{APP_NAME}#"

#: The alert action's cache of PEM client certificates (mailsec.rm.pem_cache), one
#: entry per RM account (docs/rm_send_mail.md#certificate-cache).
RM_PEM_CACHE_REALM = addon_realm("rm_pem_cache")
