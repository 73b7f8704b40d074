"""Moved to `mailsec.core.mailbox.headers` (shared with vault_export); this name is an alias.

The alias is the moved module itself (not a copy of its names), so that setting an
attribute through either name changes the one module both services use.
"""

import sys

from mailsec.core.mailbox import headers as _moved

sys.modules[__name__] = _moved
