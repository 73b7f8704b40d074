"""Alert action `rm_send_mail`: UCC's generated script calls process_event here."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)


def process_event(helper, *args, **kwargs):
    from mailsec.rm.action import process_event as send

    return send(helper, *args, **kwargs)
