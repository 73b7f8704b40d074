"""UCC input helper for `ser_usage`: reads the configuration, hands over to mailsec.ser."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)

from splunklib import modularinput as smi

from mailsec.adapters.modinput import run_inputs, validate
from mailsec.ser.config import SerUsageInputConfig


def validate_input(definition: smi.ValidationDefinition) -> None:
    validate(definition, SerUsageInputConfig.from_params)


def stream_events(inputs: smi.InputDefinition, event_writer: smi.EventWriter) -> None:
    from mailsec.ser.usage_service import run

    run_inputs("ser_usage", inputs, event_writer, run)
