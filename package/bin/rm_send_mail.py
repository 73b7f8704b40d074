"""Alert action `rm_send_mail`, run by splunkd as `rm_send_mail.py --execute` with the
JSON payload on stdin.

This file replaces the script UCC generates on splunktaucclib's ModularAlertBase:
that base imports splunk.rest (present only inside Splunk), reads every settings
tab through the add-on's REST handlers and cannot read an account tab other than
`account`; it also refuses an empty subject itself, where docs/rm_send_mail.md
promises RM's code.
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

    from mailsec.adapters import lean_config
    from mailsec.adapters.alert import SplunkHomeOutput, splunk_home
    from mailsec.adapters.settings import RM_PEM_CACHE_REALM
    from mailsec.rm import client  # noqa: F401  (imported here to be timed)
    from mailsec.rm.action import Runtime, run

    runtime = Runtime(output=SplunkHomeOutput(splunk_home(__file__)))
    runtime.timings["imports_ms"] = round((time.perf_counter() - STARTED) * 1000)
    try:
        payload = json.loads(stdin.read())
        missing = [key for key in ("server_uri", "session_key") if not payload.get(key)]
        if missing:
            raise KeyError(", ".join(missing))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        sys.stderr.write(f"ERROR the alert payload on stdin is not usable: {error!r}\n")
        return 1
    # the account, the settings and the certificate cache, read from the splunkd that
    # sent the payload over one connection (docs/development.md#layering)
    splunkd = lean_config.LeanSplunkd(payload["server_uri"], payload["session_key"])
    runtime.load_account = lambda tab, name: lean_config.load_account(splunkd, tab, name)
    runtime.load_settings = lambda: lean_config.load_settings(splunkd)
    runtime.cert_cache = splunkd.secret_cache(RM_PEM_CACHE_REALM)
    try:
        return run(payload, runtime)
    finally:
        splunkd.close()


if __name__ == "__main__":
    status = main(sys.argv, sys.stdin)
    # By now every file is written and closed (the log is opened per line, the event
    # file is written and renamed, temporary certificate files are gone): leave without
    # the interpreter's teardown of each module, a tenth of the run's time.
    sys.stdout.flush()
    sys.stderr.flush()
    import os

    os._exit(status)
