"""Every file path the documentation names exists: the README, BENCHMARKS.md, docs/ pages, and
every docstring and comment in the code. A moved or renamed module must take its references
along (`launch/loop/trainer.py`, `agents/seeding`, a glob like `launch/config/presets/*.yaml`, or a path
relative to a package such as `sac/config.py`)."""

import ast
import os
import re
from pathlib import Path

from tests.conftest import REPO

TOP = r"(?:agents|envs|continual|metrics|launch|tests|benchmarks|integrations|docs|\.ci)"
ROOTED = re.compile(rf"(?<![\w./<-])({TOP}/[\w./*<>-]*[\w*>])")
RELATIVE = re.compile(r"(?<![\w./<-])((?:[\w-]+/)+[\w-]+\.(?:py|yaml|md|sh|json))\b")
SKIP = {".venv", ".git", "runs", "report", "__pycache__", ".pytest_cache", "build"}


def _files() -> list[Path]:
    out = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP and not d.endswith(".egg-info")]
        out += [Path(folder) / name for name in names]
    return out


def _texts():
    for name in ("README.md", "BENCHMARKS.md"):
        yield name, (REPO / name).read_text()
    for page in sorted((REPO / "docs").glob("*.md")):
        yield str(page.relative_to(REPO)), page.read_text()
    for py in sorted(p for p in _files() if p.suffix == ".py"):
        source = py.read_text()
        where = str(py.relative_to(REPO))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                yield where, ast.get_docstring(node) or ""
        for line in source.splitlines():
            if "#" in line:
                yield where, line.split("#", 1)[1]


def _exists(path: str, suffixes: set[str]) -> bool:
    path = re.sub(r":\d.*$", "", path).rstrip(".")
    if "*" in path or "<" in path:
        return bool(list(REPO.glob(re.sub(r"<[^>]*>", "*", path))))
    return (REPO / path).exists() or (REPO / f"{path}.py").exists() or any(s.endswith("/" + path) for s in suffixes)


def test_every_path_the_docs_name_exists():
    files = _files()
    suffixes = {str(p.relative_to(REPO)) for p in files}
    # A relative path is ours when it starts in one of our folders (sac/, balancers/, presets/ ...);
    # others (mtrl_files/uw.py) are the references' files.
    ours = {part for p in files for part in p.relative_to(REPO).parts[:-1]}
    missing = set()
    for where, text in _texts():
        paths = [m.group(1) for m in ROOTED.finditer(text)]
        paths += [m.group(1) for m in RELATIVE.finditer(text) if m.group(1).split("/")[0] in ours]
        missing |= {f"{where}: {path}" for path in paths if not _exists(path, suffixes)}
    assert not missing, sorted(missing)


def test_the_check_can_fail():
    suffixes = {str(p.relative_to(REPO)) for p in _files()}
    assert _exists("launch/loop/trainer.py", suffixes) and _exists("agents/seeding", suffixes)
    assert _exists("sac/config.py", suffixes) and _exists("launch/config/presets/*.yaml", suffixes)
    assert not _exists("launch/no_such_module.py", suffixes) and not _exists("sac/nothing.py", suffixes)
