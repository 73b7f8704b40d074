"""Alert action `rm_send_mail`: the `customScript` of globalConfig.json.

The shipped bin/rm_send_mail.py calls mailsec.rm.action directly; this module keeps
the entry UCC's generated ModularAlertBase script would call.
"""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)


def process_event(helper, *args, **kwargs):
    from mailsec.rm.action import process_event as send

    return send(helper, *args, **kwargs)
