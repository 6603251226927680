"""Every public function and method in `lmjax/` has type hints (parameters and return type)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lmjax"

# Paths (relative to lmjax/) not checked: none; a file added here needs a reason.
EXCLUDE: tuple[str, ...] = ()


def _excluded(rel: str) -> bool:
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in EXCLUDE)


def _missing(fn: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> list[str]:
    """What `fn` leaves unannotated: parameter names, and "return"."""
    args = fn.args
    positional = args.posonlyargs + args.args
    if (
        is_method
        and positional
        and not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    ):
        positional = positional[1:]  # self / cls
    missing = [a.arg for a in positional + args.kwonlyargs if a.annotation is None]
    if fn.returns is None:
        missing.append("return")
    return missing


def _unannotated(tree: ast.Module) -> list[tuple[int, str, list[str]]]:
    found = []

    def visit_function(node, qualname, is_method):
        missing = _missing(node, is_method)
        if missing:
            found.append((node.lineno, qualname, missing))

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_"):
                visit_function(node, node.name, is_method=False)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    not item.name.startswith("_") or item.name == "__call__"
                ):
                    visit_function(item, f"{node.name}.{item.name}", is_method=True)
    return found


def test_public_functions_have_type_hints():
    problems = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert files
    for path in files:
        rel = path.relative_to(PACKAGE).as_posix()
        if _excluded(rel):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for lineno, name, missing in _unannotated(tree):
            problems.append(f"lmjax/{rel}:{lineno} {name}: no annotation for {', '.join(missing)}")
    assert not problems, "public functions without type hints:\n" + "\n".join(problems)
