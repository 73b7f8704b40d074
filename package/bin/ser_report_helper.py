"""UCC input helper for `ser_report`: reads the configuration and hands over to mailsec.ser."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)

from splunklib import modularinput as smi

from mailsec.adapters.modinput import run_inputs, validate
from mailsec.ser.config import SerInputConfig


def validate_input(definition: smi.ValidationDefinition) -> None:
    validate(definition, SerInputConfig.from_params)


def stream_events(inputs: smi.InputDefinition, event_writer: smi.EventWriter) -> None:
    from mailsec.ser.service import run

    run_inputs("ser_report", inputs, event_writer, run)
