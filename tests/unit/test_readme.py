"""The README's Python examples import what exists: every ``import`` / ``from ... import``
statement of its ```python blocks is run (the rest of the blocks loads real models and is not)."""

from __future__ import annotations

import ast
import importlib
import re

import pytest

from tests.support import REPO_ROOT

README = REPO_ROOT / "README.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(markdown: str) -> list[str]:
    """The code of each ```python fenced block, in order."""
    return PYTHON_BLOCK.findall(markdown)


def import_statements(block: str) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names) of each import in ``block``: ``import a.b`` -> ("a.b", ()),
    ``from a import x, y`` -> ("a", ("x", "y"))."""
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, tuple(alias.name for alias in node.names)))
    return found


def readme_imports() -> list[tuple[str, tuple[str, ...]]]:
    return [imp for block in python_blocks(README.read_text(encoding="utf-8")) for imp in import_statements(block)]


def test_the_extraction_finds_single_multiline_and_plain_imports():
    text = (
        "intro\n```python\nfrom a.b import x, y  # comment\nimport c.d\nz = 1\n```\n"
        "```sh\nimport not_python\n```\n"
        "```python\nfrom e import (\n    f,\n    g,\n)\nif True:\n    import h\n```\n"
    )
    blocks = python_blocks(text)
    assert len(blocks) == 2
    assert [import_statements(b) for b in blocks] == [
        [("a.b", ("x", "y")), ("c.d", ())],
        [("e", ("f", "g")), ("h", ())],
    ]


def test_the_readme_has_python_imports():
    assert len(readme_imports()) >= 5


@pytest.mark.parametrize(("module", "names"), readme_imports(), ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_readme_import_works(module, names):
    imported = importlib.import_module(module)
    for name in names:
        if hasattr(imported, name):
            continue
        try:  # ``from package import submodule`` works without the attribute
            importlib.import_module(f"{module}.{name}")
        except ModuleNotFoundError:
            pytest.fail(f"README: 'from {module} import {name}': {module} has no {name}")
