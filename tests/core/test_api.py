"""The public surface: one explicit ``__all__`` per package, every public name documented, a stdlib-only core,
and adapters that use the core's public API only (CONVENTIONS §10 "ambiguous public surface", §9 trio's
``test_exports.py``)."""

from __future__ import annotations

import ast
import enum
import inspect
import json
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import smtpproto
import smtpproto_adapters

CORE_SRC = Path(smtpproto.__file__).parent
ADAPTERS_SRC = Path(smtpproto_adapters.__file__).parent


def public_names(package: types.ModuleType) -> set[str]:
    """The names a package actually exposes: no underscore, not a submodule, plus ``__version__``."""
    names = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    if hasattr(package, "__version__"):
        names.add("__version__")
    return names


@pytest.mark.parametrize("package", [smtpproto, smtpproto_adapters], ids=lambda p: p.__name__)
def test_all_matches_the_exported_names(package: types.ModuleType) -> None:
    exported = package.__all__
    assert len(exported) == len(set(exported)), "duplicate names in __all__"
    assert set(exported) == public_names(package)
    for name in exported:
        assert hasattr(package, name), f"{package.__name__}.__all__ names a missing {name}"


def test_all_covers_the_documented_core() -> None:
    # The names DESIGN.md and the docs teach are all exported (the reverse of the check above).
    taught = {
        "ServerConnection",
        "ServerConfig",
        "Reply",
        "NEED_DATA",
        "PAUSED",
        "ProtocolError",
        "LocalProtocolError",
        "RemoteProtocolError",
        "SMTPError",
        "Hello",
        "MailFrom",
        "RcptTo",
        "DataStart",
        "DataChunk",
        "DataEnd",
        "Reset",
        "Verify",
        "Quit",
        "ConnectionClosed",
        "LineEndings",
    }
    assert taught <= set(smtpproto.__all__)


def test_version() -> None:
    assert isinstance(smtpproto.__version__, str)
    assert re.fullmatch(
        r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", smtpproto.__version__
    )


# -- documentation ---------------------------------------------------------------------------------------


def has_doc_comment(source: str, node: ast.stmt, body: list[ast.stmt]) -> bool:
    """Whether an assignment is documented the Sphinx way: ``#:`` comment lines above it, or a string
    literal right after it (an attribute docstring)."""
    lines = source.splitlines()
    above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
    if above.startswith("#:"):
        return True
    index = body.index(node)
    if index + 1 < len(body):
        following = body[index + 1]
        return (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        )
    return False


def assigned_name(node: ast.stmt) -> str | None:
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
    ):
        return node.targets[0].id
    return None


def attribute_documented(source: str, body: list[ast.stmt], name: str) -> bool | None:
    """Whether ``name``'s assignment in ``body`` carries documentation; None when it is not assigned there."""
    for node in body:
        if assigned_name(node) == name:
            return has_doc_comment(source, node, body)
    return None


def module_level_doc(name: str) -> bool | None:
    """Look for the assignment of ``name`` in the core's private modules."""
    for path in sorted(CORE_SRC.glob("_*.py")):
        source = path.read_text(encoding="utf-8")
        found = attribute_documented(source, ast.parse(source).body, name)
        if found is not None:
            return found
    return None


def enum_member_doc(member: enum.Enum) -> bool:
    cls = type(member)
    source = textwrap.dedent(inspect.getsource(cls))
    [class_def] = ast.parse(source).body
    assert isinstance(class_def, ast.ClassDef)
    return bool(attribute_documented(source, class_def.body, member.name))


def is_documented(name: str, value: object) -> bool:
    if inspect.isclass(value):
        doc = vars(value).get("__doc__")
        if not isinstance(doc, str) or not doc.strip():
            return False
        # A dataclass without a docstring gets its signature as __doc__: that documents nothing.
        return not doc.startswith(f"{value.__name__}(")
    if inspect.isroutine(value):
        return bool(inspect.getdoc(value))
    if isinstance(value, enum.Enum):
        # The constant re-exports an enum member: a doc comment on either the member or the alias counts.
        return enum_member_doc(value) or bool(module_level_doc(name))
    # Constants and type aliases cannot carry __doc__; Sphinx reads a "#:" comment or attribute docstring.
    return bool(module_level_doc(name))


@pytest.mark.parametrize("name", sorted(set(smtpproto.__all__) - {"__version__"}))
def test_every_public_name_is_documented(name: str) -> None:
    # __version__ is exempt: its meaning is fixed by convention (test_version checks its shape).
    assert is_documented(name, getattr(smtpproto, name)), f"smtpproto.{name} has no documentation"


def test_documentation_check_can_fail() -> None:
    source = "X = 1\n#: documented\nY = 2\nZ = 3\n'''documented too'''\n"
    body = ast.parse(source).body
    assert attribute_documented(source, body, "X") is False
    assert attribute_documented(source, body, "Y") is True
    assert attribute_documented(source, body, "Z") is True
    assert attribute_documented(source, body, "W") is None

    class Undocumented:
        pass

    assert not is_documented("Undocumented", Undocumented)
    assert is_documented("Reply", smtpproto.Reply)


def test_package_docstrings() -> None:
    assert smtpproto.__doc__
    assert smtpproto.__doc__.strip()
    assert smtpproto_adapters.__doc__
    assert smtpproto_adapters.__doc__.strip()


# -- stdlib-only core --------------------------------------------------------------------------------------

IMPORTED_BY = """
import json, sys
before = set(sys.modules)
import {package}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def non_stdlib_imports(package: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED_BY.format(package=package)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout)
    assert package in loaded, "the import did not happen in the subprocess"
    return [
        module
        for module in loaded
        if module.partition(".")[0] not in sys.stdlib_module_names
        and not module.startswith("smtpproto")
    ]


@pytest.mark.parametrize("package", ["smtpproto", "smtpproto_adapters"])
def test_import_loads_only_the_standard_library(package: str) -> None:
    # smtpproto_adapters' __init__ must not import a backend (trio, anyio, cryptography) either.
    assert non_stdlib_imports(package) == []


# -- adapters use the public API only ------------------------------------------------------------------------


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_core_uses(source: str) -> list[str]:
    """Every place ``source`` reaches into ``smtpproto._*``: imports and attribute access."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("smtpproto._"):
                found.append(f"from {node.module} import ...")
            elif node.module == "smtpproto":
                found += [
                    f"from smtpproto import {a.name}" for a in node.names if is_private(a.name)
                ]
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("smtpproto._")]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "smtpproto"
            and is_private(node.attr)
        ):
            found.append(f"smtpproto.{node.attr}")
    return found


def test_private_core_uses_detects_every_form() -> None:
    source = textwrap.dedent(
        """
        import smtpproto
        import smtpproto._state
        from smtpproto._connection import ServerConnection
        from smtpproto import _events, Reply
        from smtpproto import __version__
        from . import _hooks
        x = smtpproto._config.ServerConfig
        y = smtpproto.Reply
        """
    )
    assert private_core_uses(source) == [
        "import smtpproto._state",
        "from smtpproto._connection import ...",
        "from smtpproto import _events",
        "smtpproto._config",
    ]


def test_adapters_use_only_the_public_core_api() -> None:
    files = sorted(ADAPTERS_SRC.rglob("*.py"))
    assert ADAPTERS_SRC / "__init__.py" in files
    offences = {
        str(path.relative_to(ADAPTERS_SRC)): uses
        for path in files
        if (uses := private_core_uses(path.read_text(encoding="utf-8")))
    }
    assert offences == {}
