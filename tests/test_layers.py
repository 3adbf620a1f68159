"""The package's layering: dependencies point down only (faces -> recognizer and trainer -> model, rewrite rules,
export -> charset and config), for imports at module level and inside functions alike."""

from __future__ import annotations

import ast
from pathlib import Path

import lprnet

SRC = Path(lprnet.__file__).parent

#: lowest first; a module may import its own layer and the ones below it
LAYERS: list[set[str]] = [
    {"charset", "config", "errors", "layers"},
    {"core", "model"},
    {"weights", "data", "rewrite"},
    {"export"},
    {"recognizer", "train"},
    {"evaluate", "bench", "bench_gpu", "profile", "scale", "serve"},
    {"cli", "__main__", "__init__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """``lprnet.export.onnx`` -> ``export``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, lprnet module) of every import in ``path``; ``from lprnet import rewrite`` is ``lprnet.rewrite``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "lprnet"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "lprnet":
                out += [(node.lineno, f"lprnet.{a.name}" if a.name in LAYER else "lprnet") for a in node.names]
            elif node.module.split(".")[0] == "lprnet":
                out.append((node.lineno, node.module))
    return out


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert parts == set(LAYER), f"new or removed parts: {sorted(parts ^ set(LAYER))}"


def test_imports_point_down_only() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        here = LAYER[_part(".".join(rel.parts))]
        for line, module in _imports(path):
            there = LAYER[_part(module)]
            if there > here:
                upward.append(f"{path.relative_to(SRC.parent)}:{line} imports {module} (layer {there} > {here})")
    assert not upward, "\n".join(upward)


def test_the_version_is_the_projects() -> None:
    import re

    import pytest

    pyproject = SRC.parents[1] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("lprnet is not imported from a source tree")
    found = re.search(r'^version = "([^"]+)"', pyproject.read_text(encoding="utf-8"), re.M)
    assert found and lprnet.__version__ == found.group(1)


def test_importing_the_package_and_its_command_line_does_not_load_torch() -> None:
    """``import lprnet`` and ``lprnet --help`` take a fraction of a second: PyTorch (about 2 s to import) comes with
    the first use of the recognizer, not with the package."""
    import subprocess
    import sys

    code = ("import sys, lprnet, lprnet.cli; assert 'torch' not in sys.modules, 'torch loaded'; "
            "assert lprnet.load.__module__ == 'lprnet.recognizer'; assert 'torch' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
