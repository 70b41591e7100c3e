"""The generated documentation stays in step with the code it is generated from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_state_diagram_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_state_diagram", DOCS / "make_state_diagram.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (DOCS / "state-diagram.md").read_text(encoding="utf-8")
    assert committed == module.render(), "run docs/make_state_diagram.py and commit the result"
    # Every state of the machine appears in the picture.
    from smtpproto import SessionState

    for state in SessionState:
        assert state.value in committed
