"""UCC input helper for `audit_export`: reads the configuration and hands over to mailsec.audit."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)

from splunklib import modularinput as smi

from mailsec.adapters.modinput import run_inputs, validate
from mailsec.audit.config import AuditInputConfig


def validate_input(definition: smi.ValidationDefinition) -> None:
    validate(definition, AuditInputConfig.from_params)


def stream_events(inputs: smi.InputDefinition, event_writer: smi.EventWriter) -> None:
    from mailsec.audit.service import run

    run_inputs("audit_export", inputs, event_writer, run)
