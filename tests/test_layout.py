"""The package layout stays as README's Architecture section draws it: no import circles, and the
backends and templates import under the project's own name only."""
import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def harness_imports() -> dict[str, set[str]]:
    """Module → the harness modules it imports (at any depth of the file, lazy imports included)."""
    graph: dict[str, set[str]] = {}
    files = [Path(d) / f for d, _, names in os.walk(ROOT / "harness", followlinks=True)
             for f in names if f.endswith(".py")]
    for path in sorted(files):
        rel = path.relative_to(ROOT).with_suffix("")
        package = list(rel.parts[:-1])
        module = ".".join(package if rel.name == "__init__" else rel.parts)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                # `from package import module` depends on that module too
                deps.update([source, *(f"{source}.{a.name}" for a in node.names)])
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("harness"))
        graph[module] = {d for d in deps if d != module and d.startswith("harness")}
    return graph


def test_no_import_circles():
    graph = harness_imports()
    assert "harness.run.runner" in graph and "harness.adapters.openai_compat" in graph
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if dep not in graph:
                continue
            assert state.get(dep) != 1, " → ".join(path + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_no_generic_top_level_package_is_importable_outside_the_repository(tmp_path):
    code = ("import importlib.util as u, harness.adapters, harness.prompts\n"
            "print(u.find_spec('adapters'), u.find_spec('prompts'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "None"]
