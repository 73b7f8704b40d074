"""Reading SER's numbers leniently, and digests that stand for a report's content.

Both SER inputs use these (docs/ser_report.md, docs/ser_usage.md): a count sent as a
string, missing, or not a number never stops an input; equal digests mean nothing
changed, so a revisit writes a new revision only when a count did.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def lenient_number(value: Any, where: str, problems: list[str]) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        problems.append(f"{where} is {value!r}, not a number; counted as 0")
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(f"{where} is {value!r}, not a number; counted as 0")
        return 0
    if not math.isfinite(number):  # "NaN", "Infinity", 1e400: int() would raise
        problems.append(f"{where} is {value!r}, not a finite number; counted as 0")
        return 0
    return int(number) if number == int(number) else number


def finite_or_null(value: Any, where: str, problems: list[str]) -> Any:
    """A vendor value kept as it came, but for NaN and infinities anywhere in it:
    json reads them and writes them back bare, which is not JSON to Splunk. They
    become null, reported as problems the way a non-finite count is."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        problems.append(f"{where} is {value!r}, not a finite number; kept as null")
        return None
    if not isinstance(value, (list, dict)):
        return value
    try:
        json.dumps(value, allow_nan=False)
        return value
    except ValueError:
        pass
    found: list[str] = []

    def null(name: str) -> None:
        found.append(name)

    kept = json.loads(json.dumps(value), parse_constant=null)
    problems.append(f"{where} holds {found[0]}, not a finite number; kept as null")
    return kept


def digest(data: Any) -> str:
    material = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]
