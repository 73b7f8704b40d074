"""A throw-away ``$SPLUNK_HOME`` holding the built add-on, laid out as splunkd lays it out.

splunktaucclib derives the app name from the running script's path and solnlib logs to
``$SPLUNK_HOME/var/log/splunk/``, so the scripts of ``output/TA_mailsec`` must run from
``<splunk_home>/etc/apps/TA_mailsec/bin/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

APP_NAME = "TA_mailsec"

# Directories splunkd has under $SPLUNK_HOME that the add-on (or solnlib) may write to.
_RUNTIME_DIRS = (
    ("var", "log", "splunk"),
    ("var", "lib", "splunk", "modinputs"),
    ("var", "run", "splunk", "dispatch"),
    ("etc", "system", "local"),
)


def make_splunk_home(splunk_home: Path) -> Path:
    """Create the runtime directories of a SPLUNK_HOME (idempotent); return the path."""
    splunk_home = Path(splunk_home)
    for parts in _RUNTIME_DIRS:
        splunk_home.joinpath(*parts).mkdir(parents=True, exist_ok=True)
    splunk_home.joinpath("etc", "apps").mkdir(parents=True, exist_ok=True)
    return splunk_home


def install_app(
    build_dir: Path,
    splunk_home: Path,
    *,
    app_name: str = APP_NAME,
    replace: bool = False,
    link_lib: bool = False,
) -> Path:
    """Copy a built app (``output/TA_mailsec``) to ``<splunk_home>/etc/apps/<app_name>``.

    Creates ``var/log/splunk`` and the other runtime directories. ``link_lib=True``
    symlinks ``lib/`` instead of copying it (faster; the scripts find it through
    ``import_declare_test``, which works with a symlink). Symlinks inside the build are
    copied as symlinks. Returns the installed app directory.
    """
    build_dir = Path(build_dir)
    if not (build_dir / "bin").is_dir():
        raise FileNotFoundError(f"{build_dir} does not look like a built app (no bin/)")
    make_splunk_home(splunk_home)
    dest = app_dir(splunk_home, app_name)
    if dest.exists():
        if not replace:
            raise FileExistsError(f"{dest} already exists (pass replace=True)")
        shutil.rmtree(dest)
    ignore = None
    if link_lib and (build_dir / "lib").is_dir():
        ignore = _ignore_top_level_lib(build_dir)
    shutil.copytree(
        build_dir,
        dest,
        symlinks=True,
        ignore=ignore,
        ignore_dangling_symlinks=True,
    )
    if link_lib and (build_dir / "lib").is_dir():
        (dest / "lib").symlink_to((build_dir / "lib").resolve(), target_is_directory=True)
    return dest


def _ignore_top_level_lib(build_dir: Path):
    top = str(Path(build_dir))

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {"lib"} if directory == top and "lib" in names else set()

    return ignore


def app_dir(splunk_home: Path, app_name: str = APP_NAME) -> Path:
    return Path(splunk_home) / "etc" / "apps" / app_name


def bin_script(splunk_home: Path, name: str, app_name: str = APP_NAME) -> Path:
    """``<app>/bin/<name>.py`` (``name`` with or without ``.py``)."""
    if not name.endswith(".py"):
        name += ".py"
    return app_dir(splunk_home, app_name) / "bin" / name


def log_dir(splunk_home: Path) -> Path:
    """``$SPLUNK_HOME/var/log/splunk`` (where solnlib writes ``ta_mailsec_*.log``)."""
    return Path(splunk_home) / "var" / "log" / "splunk"


def checkpoint_dir(splunk_home: Path, input_type: str) -> Path:
    """The ``checkpoint_dir`` splunkd passes to an input type (created if missing)."""
    path = Path(splunk_home) / "var" / "lib" / "splunk" / "modinputs" / input_type
    path.mkdir(parents=True, exist_ok=True)
    return path


def dispatch_dir(splunk_home: Path, sid: str) -> Path:
    """``$SPLUNK_HOME/var/run/splunk/dispatch/<sid>`` (created if missing)."""
    path = Path(splunk_home) / "var" / "run" / "splunk" / "dispatch" / sid
    path.mkdir(parents=True, exist_ok=True)
    return path


def splunk_home_of(script: Path) -> Path:
    """The SPLUNK_HOME a script at ``<home>/etc/apps/<app>/bin/<x>.py`` belongs to.

    Raises ``ValueError`` if the script is not laid out as splunkd lays apps out
    (splunktaucclib would then derive a wrong app name).
    """
    script = Path(script).absolute()
    parents = script.parents
    if len(parents) < 5 or parents[0].name != "bin" or parents[2].name != "apps":
        raise ValueError(
            f"{script} is not at <SPLUNK_HOME>/etc/apps/<app>/bin/: install the app with "
            "harness.splunk_home.install_app() or pass splunk_home="
        )
    if parents[3].name != "etc":
        raise ValueError(f"{script} is not under <SPLUNK_HOME>/etc/apps/")
    return parents[4]


def app_name_of(script: Path) -> str:
    splunk_home_of(script)
    return Path(script).absolute().parents[1].name
