"""TA_mailsec add-on logic.

`core` holds what every service shares and never imports splunklib or solnlib;
`adapters` is the only place that talks to splunkd (through splunklib and solnlib);
each service lives in its own sub-package and depends on `core` only.
"""

APP_NAME = "TA_mailsec"
