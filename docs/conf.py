"""Sphinx configuration for the smtpproto documentation (MyST Markdown, furo theme).

Build from the project root, as scripts/check does:
``.venv/bin/python -m sphinx -W -n -q -b html docs docs/_build/html``. The build needs no network.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pygments.lexers.special import TextLexer
from sphinx.application import Sphinx

# Document the tree the docs live in, whether or not the package is installed (editable) in the venv.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import smtpproto

# -- Project ------------------------------------------------------------------------------------------------

project = "smtpproto"
author = "the smtpproto authors"
copyright = author
release = smtpproto.__version__
version = ".".join(release.split(".")[:2])

# -- General ------------------------------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
# sphinx.ext.intersphinx is left out on purpose: every useful mapping (the Python standard library) would
# be fetched over the network at build time, and the build must work offline. The few standard-library
# names the API mentions are listed in nitpick_ignore below instead. sphinx.ext.napoleon is left out too:
# the docstrings are reST, and napoleon would read "#: PLAIN: the password" as a type followed by text.

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "make_state_diagram.py", "Thumbs.db", ".DS_Store"]

# Every cross-reference must resolve, as with sphinx-build -n; set here so that a build without -n checks too.
nitpicky = True
# Standard-library objects that autodoc mentions in signatures and docstrings. Without an intersphinx
# inventory (see above) they cannot be resolved offline; they are not part of this project's API.
nitpick_ignore = [
    ("py:class", "collections.abc.Callable"),  # ServerConfig.nonce_factory
    ("py:class", "collections.abc.Mapping"),  # MailFrom.args, RcptTo.args, ProxyHeader.tlvs
    ("py:mod", "ipaddress"),  # ProxyHeader's docstring
    # smtpproto_adapters (ServerOptions fields, SMTPServer.sockets):
    ("py:class", "collections.abc.Collection"),  # ServerOptions.disabled_commands, use_proxy, ...
    ("py:class", "logging.Logger"),  # ServerOptions.logger
    ("py:class", "os.PathLike"),  # ServerOptions.tls_cert, tls_key
    ("py:class", "socket.socket"),  # SMTPServer.sockets (asyncio, anyio, blocking)
    ("py:class", "ssl.SSLContext"),  # ServerOptions.ssl_context, sni
    # Not the standard library but just as unreachable offline: trio's own socket type.
    ("py:class", "trio.socket.SocketType"),  # smtpproto_adapters.trio.SMTPServer.sockets
]

# -- MyST ---------------------------------------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist"]
# Give h1-h3 headings anchors so that pages can link to sections of each other ("core.md#errors").
myst_heading_anchors = 3

# -- autodoc ------------------------------------------------------------------------------------------------

autodoc_member_order = "bysource"
# Type hints go in the description ("Parameters", "Return type"), not in the signature: signatures stay
# short, and a private alias (smtpproto._connection.DecisionEvent) is shown as what it stands for, whose
# parts (smtpproto._events.MailFrom, ...) resolve to the public names documented in api.md.
autodoc_typehints = "description"
autodoc_typehints_description_target = "all"
autodoc_preserve_defaults = True

# -- HTML ---------------------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"smtpproto {release}"
html_static_path: list[str] = []


# -- Local additions ----------------------------------------------------------------------------------------


def setup(app: Sphinx) -> dict[str, Any]:
    # docs/state-diagram.md holds a ```mermaid block (GitHub draws it). Pygments has no Mermaid lexer and
    # drawing it here would need mermaid.js from the network, so the build shows its source as plain text.
    app.add_lexer("mermaid", TextLexer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
