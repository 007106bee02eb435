"""Sphinx configuration: MyST markdown, furo, autodoc; built with -n -W."""

from __future__ import annotations

from importlib.metadata import version as _version

project = "tipkit"
author = "the tipkit developers"
copyright = "2026, the tipkit developers"
release = _version("tipkit")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "perf/*.md", "_*.md"]

html_theme = "furo"
html_title = f"tipkit {release}"
html_static_path = ["_static"]
html_css_files = ["tipkit.css"]  # tables fit their column (see the file)

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

napoleon_use_ivar = True

# No network at build time, so no intersphinx inventories. Without them, nitpicky
# mode flags every reference into the standard library and dependencies; the build
# runs with -W (warnings are errors) and checks tipkit's own references by keeping
# docstrings' cross-references to tipkit names.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
# "more than one target" for bare attribute names such as `name` (on several NamedTuples)
suppress_warnings = ["myst.header", "ref.python"]


def _only_tipkit_sources(app: object) -> list[object]:
    """Drop non-tipkit modules from viewcode's list before it writes its pages.

    An object documented through a stdlib alias (``time``) puts that module in
    the source index with no page behind it: a broken link on _modules/index.html.
    """
    modules = getattr(getattr(app, "env", None), "_viewcode_modules", {})
    for name in [m for m in modules if m.split(".")[0] != "tipkit"]:
        del modules[name]
    return []


def _public_bases(
    app: object,  # noqa: ARG001  # the event's signature
    name: str,  # noqa: ARG001  # same
    obj: object,  # noqa: ARG001  # same
    options: object,  # noqa: ARG001  # same
    bases: list[type],
) -> None:
    """Show a class's public bases: a private base (``_StoreEvent``) is replaced by its own.

    A private base shares code between public classes; it is no part of the API,
    so "Bases:" names what it stands for instead (in place, as autodoc expects).
    """

    def public(base: type) -> list[type]:
        if not base.__name__.startswith("_"):
            return [base]
        return [p for b in base.__bases__ if b is not object for p in public(b)]

    shown = [p for b in bases for p in public(b)]
    bases[:] = list(dict.fromkeys(shown)) or [object]


def setup(app: object) -> None:
    """Register the hooks above (the pages one ahead of viewcode's own, priority 500)."""
    app.connect("html-collect-pages", _only_tipkit_sources, priority=400)  # type: ignore[attr-defined]  # sphinx.application.Sphinx
    app.connect("autodoc-process-bases", _public_bases)  # type: ignore[attr-defined]  # sphinx.application.Sphinx
