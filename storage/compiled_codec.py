"""Which record codec this process runs: the compiled loops (storage/_codec.c) or pure Python.

The C extension is built by `pip install` when a C compiler and Python's headers are there
(setup.py marks it optional). Without it, or with `STROM_PURE_PYTHON=1` in the environment, the
pure-Python codec runs: the same bytes, the same errors, several times slower per record. A
process that wanted the compiled codec and did not get it says so once, when this module is
first imported (a WARNING on the `strom.storage` logger); `strom --version` and a node's start
line name the codec in use.

The pure-Python functions are the reference (DESIGN.md §4): each compiled kernel handles the
common well-formed case and hands everything else to the reference, which raises every error a
user sees (tests/unit/test_codec_equivalence.py runs both on the same inputs).
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

PURE_PYTHON_ENV = "STROM_PURE_PYTHON"


def _load() -> tuple[ModuleType | None, str, str]:
    """(the extension module or None, why not in a phrase, the import error if any)."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None, f"{PURE_PYTHON_ENV} is set", ""
    try:
        from . import _codec
    except ImportError as err:
        return None, "the C extension is not built", str(err)
    return _codec, "", ""


codec, unavailable_reason, _import_error = _load()
COMPILED = codec is not None


def describe() -> str:
    """One phrase for version lines and logs: which codec, and why not the compiled one."""
    if codec is not None:
        return "compiled (C)"
    return f"pure Python ({unavailable_reason})"


if _import_error:
    logging.getLogger("strom.storage").warning(
        "record codec: %s (%s); running the pure-Python codec, which costs several times more "
        "CPU per record (reinstall with a C compiler and Python headers present to build it)",
        unavailable_reason,
        _import_error,
    )
