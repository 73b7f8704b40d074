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


def digest(data: Any) -> str:
    material = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]
