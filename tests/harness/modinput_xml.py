"""The XML documents splunkd writes to a modular-input script's stdin
(harness.modinput): ``<input>`` in run mode, ``<items>`` for ``--validate-arguments``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

DEFAULT_SERVER_HOST = "harness-splunk"


# --------------------------------------------------------------------------- XML sent to the script


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _add_params(parent: ET.Element, params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        if value is None:
            continue  # absent from the .conf: splunkd sends nothing
        if isinstance(value, (list, tuple)):
            plist = ET.SubElement(parent, "param_list", name=key)
            for v in value:
                ET.SubElement(plist, "value").text = _param_text(v)
        else:
            ET.SubElement(parent, "param", name=key).text = _param_text(value)


def _metadata(
    root: ET.Element,
    server_host: str,
    server_uri: str,
    session_key: str,
    checkpoint_dir: Union[str, Path],
) -> None:
    ET.SubElement(root, "server_host").text = server_host
    ET.SubElement(root, "server_uri").text = server_uri
    ET.SubElement(root, "session_key").text = session_key
    ET.SubElement(root, "checkpoint_dir").text = str(checkpoint_dir)


def _serialize(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def stanza_name(input_type: str, name: str) -> str:
    """``ser_report://name`` from ``name`` (names that already have a scheme are kept)."""
    return name if "://" in name else f"{input_type}://{name}"


def input_xml(
    stanzas: Mapping[str, Mapping[str, Any]],
    *,
    input_type: str,
    server_uri: str,
    session_key: str,
    checkpoint_dir: Union[str, Path],
    server_host: str = DEFAULT_SERVER_HOST,
    app: str = "TA_mailsec",
    splunkd_defaults: bool = True,
) -> bytes:
    """The ``<input>`` document splunkd writes to an input's stdin in run mode.

    Stanza keys are ``"name"`` or ``"type://name"``. Values: str, int, bool (``1``/``0``),
    a list (sent as ``<param_list>``) or None (left out). With ``splunkd_defaults``, each
    stanza also gets what splunkd merges in from inputs.conf when the test did not set it:
    ``host`` (= server_host), ``index`` (``default``) and ``disabled`` (``0``).
    """
    root = ET.Element("input")
    _metadata(root, server_host, server_uri, session_key, checkpoint_dir)
    conf = ET.SubElement(root, "configuration")
    for name, params in stanzas.items():
        stanza = ET.SubElement(conf, "stanza", name=stanza_name(input_type, name), app=app)
        merged = dict(params)
        if splunkd_defaults:
            merged.setdefault("host", server_host)
            merged.setdefault("index", "default")
            merged.setdefault("disabled", "0")
        _add_params(stanza, merged)
    return _serialize(root)


def validation_xml(
    name: str,
    params: Mapping[str, Any],
    *,
    server_uri: str,
    session_key: str,
    checkpoint_dir: Union[str, Path],
    server_host: str = DEFAULT_SERVER_HOST,
) -> bytes:
    """The ``<items>`` document splunkd writes for ``--validate-arguments``.

    ``<item name=...>`` carries the bare input name (no ``type://``).
    """
    root = ET.Element("items")
    _metadata(root, server_host, server_uri, session_key, checkpoint_dir)
    item = ET.SubElement(root, "item", name=name.split("://", 1)[-1])
    _add_params(item, params)
    return _serialize(root)
