"""UCC input helper for `sense_listener`: reads the configuration, calls mailsec.sense."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)

from splunklib import modularinput as smi

from mailsec.adapters.modinput import run_inputs, validate
from mailsec.sense.config import SenseListenerConfig


def validate_input(definition: smi.ValidationDefinition) -> None:
    validate(definition, SenseListenerConfig.from_params)


def stream_events(inputs: smi.InputDefinition, event_writer: smi.EventWriter) -> None:
    from mailsec.sense.service import run

    run_inputs("sense_listener", inputs, event_writer, run)
