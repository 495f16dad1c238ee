"""The command layer stays a layer: ``--help`` answers before torch loads, and the library never imports it.

Every stage's parser is built from light modules (the library's heavy modules are imported by ``main``
after the arguments parse), so ``fedsim STAGE --help`` and its ``python -m`` twin answer at Python's
start-up cost (``benchmarks/cli_help.py`` times them). The library (``fedsim/``, ``attacks/`` outside
their ``cli`` packages and the ``python -m`` shims) imports no command: a library module that is also a
``python -m`` twin hands over to its command in a ``__main__`` block before its own imports, so the
command is not a second copy of the module and imports the library once, under its own name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.cli.main import STAGES

ROOT = Path(__file__).resolve().parents[1]
#: What a parser must not load: seconds of imports between the user and the help.
HEAVY = ("torch", "sklearn", "matplotlib", "ray", "flwr", "nibabel", "nilearn", "pandas", "scipy")
COMMAND_LAYER = ("fedsim.cli", "attacks.cli")

_HELP = """
import contextlib, importlib, io, runpy, sys

def loaded():
    return [m for m in {heavy!r} if m in sys.modules]

def answers(command):
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        command()
    assert "usage:" in out.getvalue(), out.getvalue()

from fedsim.cli.main import main
answers(lambda: main({argv!r}))
print("fedsim:", *loaded())
if {module!r}:
    twin = importlib.import_module({module!r}).parser().prog.removeprefix("python -m ")
    sys.argv = [twin, "--help"]
    answers(lambda: runpy.run_module(twin, run_name="__main__", alter_sys=True))
    print(twin + ":", *loaded())
"""


@pytest.mark.parametrize("stage", ["", *STAGES])
def test_help_imports_no_heavy_library(stage: str):
    """``fedsim [STAGE] --help`` and the stage's ``python -m`` twin, in a fresh process each."""
    argv = [stage, "--help"] if stage else ["--help"]
    module = STAGES[stage][0] if stage else ""
    code = _HELP.format(heavy=HEAVY, argv=argv, module=module)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        command, _, loaded = line.partition(":")
        assert not loaded.split(), f"{command} {' '.join(argv)} imported {loaded.strip()}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":``"""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value == "__main__")


def _imports(nodes: list[ast.stmt]) -> set[str]:
    """Every module ``nodes`` import, at any depth (``from fedsim import cli`` counts as ``fedsim.cli``)."""
    found: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def _is_shim(body: list[ast.stmt]) -> bool:
    """A ``python -m`` name of a command: imports, ``__all__`` and a ``__main__`` block, nothing of its own."""
    def plain(node: ast.stmt) -> bool:
        return (isinstance(node, (ast.Import, ast.ImportFrom)) or _is_main_guard(node)
                or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # the docstring
                or (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]))
    return all(plain(node) for node in body) and any(_is_main_guard(node) for node in body)


def _library() -> dict[str, list[ast.stmt]]:
    """Module name -> its statements, for every module of fedsim/ and attacks/ outside the command layer."""
    modules = {}
    for package in ("fedsim", "attacks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = _module_name(path)
            if not name.startswith(COMMAND_LAYER):
                modules[name] = ast.parse(path.read_text(), filename=str(path)).body
    return modules


def _command(module: str, shims: set[str]) -> bool:
    return module.startswith(tuple(f"{m}." for m in COMMAND_LAYER)) or module in (*COMMAND_LAYER, *shims)


def test_the_library_never_imports_the_command_layer():
    modules = _library()
    shims = {name for name, body in modules.items() if _is_shim(body)}
    assert {"fedsim.run", "attacks.run", "attacks.attribute.__main__"} <= shims  # the test sees the shims
    offenders = {}
    for name, body in modules.items():
        if name in shims:
            continue
        imported = _imports([node for node in body if not _is_main_guard(node)])
        commands = sorted(m for m in imported if _command(m, shims))
        if commands:
            offenders[name] = commands
    assert not offenders, f"library modules import the command layer: {offenders}"


def test_a_library_twin_hands_over_before_its_own_imports():
    """``python -m fedsim.centralized`` runs the command, never a ``__main__`` copy of the library: the
    module's ``__main__`` block comes first (after its docstring and ``from __future__``)."""
    modules = _library()
    shims = {name for name, body in modules.items() if _is_shim(body)}
    twins = {}
    for name, body in modules.items():
        guards = [i for i, node in enumerate(body) if _is_main_guard(node) and any(_command(m, shims) for m in _imports([node]))]
        if name not in shims and guards:
            first = next(i for i, node in enumerate(body) if not (
                (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
                or (isinstance(node, ast.ImportFrom) and node.module == "__future__")))
            twins[name] = guards == [first]
    assert twins == {"fedsim.centralized": True, "fedsim.data.cohort": True}
