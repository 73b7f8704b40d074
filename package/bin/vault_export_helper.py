"""UCC input helper for `vault_export`: reads the configuration and hands over to mailsec.vault."""

import import_declare_test  # noqa: F401  (puts ../lib on sys.path)

from splunklib import modularinput as smi

from mailsec.adapters.modinput import run_inputs, validate
from mailsec.vault.config import VaultInputConfig


def validate_input(definition: smi.ValidationDefinition) -> None:
    validate(definition, VaultInputConfig.from_params)


def stream_events(inputs: smi.InputDefinition, event_writer: smi.EventWriter) -> None:
    from mailsec.vault.service import run

    run_inputs("vault_export", inputs, event_writer, run)
