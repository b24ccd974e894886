"""Every torch.load in the source tree passes weights_only=True (checkpoints and artifacts never unpickle code)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "build", "dist", "node_modules", "__pycache__"}
LOADERS = {"load", "load_from_checkpoint"}  # torch.load, torch.serialization.load, Lightning's load_from_checkpoint


def python_files() -> list[Path]:
    return [p for p in REPO.rglob("*.py") if not SKIP & set(p.relative_to(REPO).parts)
            and not any(part.startswith(".") for part in p.relative_to(REPO).parts)]


def unsafe_loads(source: str) -> list[int]:
    """Lines of torch.load(...) / X.load_from_checkpoint(...) calls without the keyword weights_only=True."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOADERS):
            continue
        owner = ast.unparse(node.func.value)
        if node.func.attr == "load" and owner not in ("torch", "torch.serialization"):
            continue
        ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                 for k in node.keywords)
        if not ok:
            bad.append(node.lineno)
    return bad


def test_the_checker_flags_unsafe_calls_and_accepts_safe_ones():
    assert unsafe_loads("import torch\ntorch.load(p)\ntorch.load(p, weights_only=False)\n") == [2, 3]
    assert unsafe_loads("torch.serialization.load(p, map_location='cpu')\nM.load_from_checkpoint(p)\n") == [1, 2]
    assert unsafe_loads("torch.load(p, map_location='cpu', weights_only=True)\njson.load(f)\n") == []


def test_every_torch_load_in_the_repository_uses_weights_only():
    files = python_files()
    assert len(files) > 50 and any(p.name == "tracking.py" for p in files)  # the walk really sees the tree
    offenders = {str(p.relative_to(REPO)): lines for p in files
                 if (lines := unsafe_loads(p.read_text(encoding="utf-8")))}
    assert offenders == {}, f"torch.load without weights_only=True at {offenders}"
