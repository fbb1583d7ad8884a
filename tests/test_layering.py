"""The import-cycle contract (tools/layering.py) finds loops across packages, function-level
imports included, and is quiet about a graph without one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

from tools.layering import cycles, loop_through


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))


def _package(root: Path, name: str, modules: dict[str, str]) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for module, text in modules.items():
        (root / name / f"{module}.py").write_text(text)


def test_a_loop_through_two_packages_and_a_function_level_import_is_found(tree: Path) -> None:
    _package(tree, "lay_dom", {"charges": "def f():\n    from lay_act import invoice\n"})
    _package(tree, "lay_act", {"invoice": "from lay_dom import charges\n", "other": ""})
    graph = grimp.build_graph("lay_dom", "lay_act", cache_dir=None)
    found = cycles(graph, ["lay_dom", "lay_act"])
    assert found == [["lay_act.invoice", "lay_dom.charges"]]
    assert loop_through(graph, found[0]) == [
        "lay_act.invoice",
        "lay_dom.charges",
        "lay_act.invoice",
    ]


def test_imports_that_only_point_down_make_no_loop(tree: Path) -> None:
    _package(tree, "lay_top", {"a": "from lay_low import b\n", "c": "from lay_top import a\n"})
    _package(tree, "lay_low", {"b": "import json\n"})
    graph = grimp.build_graph("lay_top", "lay_low", cache_dir=None)
    assert cycles(graph, ["lay_top", "lay_low"]) == []
