"""Alert action `rm_send_mail`, run by splunkd as `rm_send_mail.py --execute` with the
JSON payload on stdin.

This file replaces the script UCC generates on splunktaucclib's ModularAlertBase:
that base imports splunk.rest (present only inside Splunk), reads every settings
tab through the add-on's REST handlers and cannot read an account tab other than
`account`; it also refuses an empty subject itself, where the SPEC wants RM's code.
The alert form and alert_actions.conf are still UCC's, from globalConfig.json.
Imports are deferred so that a mail costs as little start-up time as possible.
"""

import sys
import time

STARTED = time.perf_counter()


def main(argv, stdin):
    if len(argv) < 2 or argv[1] != "--execute":
        sys.stderr.write("FATAL Unsupported execution mode (expected --execute flag)\n")
        return 1
    import json

    import import_declare_test  # noqa: F401  (puts ../lib first on sys.path)

    from mailsec.adapters.alert import splunk_home
    from mailsec.adapters.lean_config import LeanSplunkd, load_account, load_settings
    from mailsec.adapters.splunkd import Splunkd
    from mailsec.rm.action import Runtime, run

    runtime = Runtime(splunk_home=splunk_home(__file__))
    runtime.timings["imports_ms"] = round((time.perf_counter() - STARTED) * 1000)
    try:
        payload = json.loads(stdin.read())
        splunkd = LeanSplunkd(Splunkd(payload["server_uri"], payload["session_key"]))
    except (ValueError, KeyError, TypeError) as error:
        sys.stderr.write(f"ERROR the alert payload on stdin is not usable: {error!r}\n")
        return 1
    runtime.load_account = lambda tab, name: load_account(splunkd, tab, name)
    runtime.load_settings = lambda: load_settings(splunkd)
    return run(payload, runtime)


if __name__ == "__main__":
    sys.exit(main(sys.argv, sys.stdin))
