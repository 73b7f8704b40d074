"""The import rules of package/bin/mailsec, read from the source (every import statement,
inside functions too): the rules stated in mailsec/__init__.py are the ones checked here
(docs/development.md#layering)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mailsec

PACKAGE = Path(mailsec.__file__).resolve().parent

#: layer -> the layers it may import besides itself and the package root `mailsec`.
#: A service may import its own package, not another service.
MAY_IMPORT = {
    "core": set(),
    "adapters": {"core"},
    "service": {"core"},
    "wiring": {"core", "service"},
}

#: The rules as mailsec/__init__.py states them, one bullet each.
STATED_RULES = (
    "`mailsec.core` imports no other part of the add-on.",
    "`mailsec.adapters`, the only code that talks to splunkd (through splunklib and solnlib),"
    " imports `mailsec.core` only.",
    "Each service (every other sub-package: `mailsec.ser`, `mailsec.sense`, `mailsec.audit`,"
    " `mailsec.rm`, ...) imports `mailsec.core` only: neither the adapters nor another service."
    " Where a service needs splunkd, the entry script passes an adapter in, typed by a Protocol"
    " in `mailsec.core`.",
    "The modules beside the sub-packages (`mailsec.accounts`) put services together for the"
    " entry scripts: they import `mailsec.core` and the services; no sub-package imports them.",
    "Every layer may use the package root (`mailsec`: `APP_NAME`), which imports nothing.",
)


def unit_of(module: str, package: Path) -> tuple[str, str]:
    """(layer, unit) of a dotted module name under `mailsec`; the unit tells one service
    from another."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root", "mailsec"
    head = parts[1]
    if head in ("core", "adapters"):
        return head, head
    if (package / head).is_dir():
        return "service", head
    return "wiring", head


def module_name(path: Path, package: Path) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, package_root: Path) -> set[str]:
    """Every `mailsec...` module a file imports, relative imports resolved."""
    name = module_name(path, package_root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            for alias in node.names:  # `from mailsec import core` imports mailsec.core
                dotted = f"{base}.{alias.name}"
                where = package_root.parent.joinpath(*dotted.split("."))
                if where.is_dir() or where.with_suffix(".py").exists():
                    found.add(dotted)
    return {m for m in found if m == "mailsec" or m.startswith("mailsec.")}


def violations(package: Path = PACKAGE) -> list[str]:
    broken = []
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        layer, unit = unit_of(name, package)
        for target in sorted(imported_modules(path, package)):
            target_layer, target_unit = unit_of(target, package)
            if target_layer == "root" or target_unit == unit:
                continue
            if layer == "root" or target_layer not in MAY_IMPORT[layer]:
                broken.append(f"{name} imports {target}")
    return broken


def test_the_rules_stated_in_mailsec_init_are_the_rules_checked():
    stated = re.sub(r"\s+", " ", mailsec.__doc__ or "")
    bullets = re.findall(r"^\s*- ", mailsec.__doc__ or "", re.M)
    assert [rule for rule in STATED_RULES if rule not in stated] == []
    assert len(bullets) == len(STATED_RULES)


def test_every_module_keeps_the_import_rules():
    assert violations() == []


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    fake = tmp_path / "mailsec"
    for folder in ("core", "adapters", "sense", "ser"):
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("APP_NAME = 'x'\n")
    (fake / "accounts.py").write_text("from mailsec.ser import config\n")
    (fake / "core" / "http.py").write_text(
        "from mailsec import APP_NAME\nfrom . import ratelimit\n"
    )
    (fake / "adapters" / "kvstore.py").write_text(
        "def forget():\n    from mailsec.sense.dedupe import forget_input\n"
    )
    (fake / "sense" / "dedupe.py").write_text("from ..core import http\nfrom ..ser import client\n")
    (fake / "ser" / "service.py").write_text("from mailsec import accounts\n")
    assert violations(fake) == [
        "mailsec.adapters.kvstore imports mailsec.sense.dedupe",
        "mailsec.sense.dedupe imports mailsec.ser",
        "mailsec.ser.service imports mailsec.accounts",
    ]
