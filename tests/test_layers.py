"""The README's layout lists the package's modules in layers, bottom up, and says that a module imports
only from its own line and the lines above: checked here against every import the code holds, lazy
ones inside functions too, so that the layering holds as the code moves."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> dict[str, int]:
    """Module (or subpackage) name -> its line of the README's layout, counted from the bottom layer."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("\npyrohvae/\n", 1)[1].split("\nexperiments/", 1)[0]
    layer, level = 0, {}
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 26):  # a description's continuation
            continue
        names = re.findall(r"([a-z_]+)(?:\.py|/)", re.split(r"\s{2,}", line.strip())[0])
        if not line.startswith("    "):  # a module list continued on the next line keeps its layer
            layer += 1
        level.update(dict.fromkeys(names, layer))
    return level


def _imports(path: Path, package: Path):
    """(module imported, line) for every import of a module of the package in `path`."""
    inside = path.relative_to(package).parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level == 1 and len(inside) > 1:  # from within a subpackage: itself
                yield inside[0], node.lineno
            elif node.module:
                yield node.module.split(".")[0], node.lineno
            else:
                yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for name in names:
                if name and name.startswith("pyrohvae."):
                    yield name.split(".")[1], node.lineno


def test_every_module_of_the_package_has_a_place_in_the_readme_layout():
    package = ROOT / "pyrohvae"
    level = _layers()
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    modules |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert modules - set(level) == set()
    assert set(level) - modules == set()


def test_no_module_imports_from_a_layer_above_its_own():
    package = ROOT / "pyrohvae"
    level = _layers()
    upward = []
    for path in sorted(package.rglob("*.py")):
        own = path.relative_to(package).parts[0].removesuffix(".py")
        if own == "__init__":  # the package's face re-exports the API, the top layer
            continue
        for name, line in _imports(path, package):
            if level.get(name, 0) > level[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert upward == []
