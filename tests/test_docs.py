"""The API reference covers the library: every module has a ``::: module`` entry in docs/api/, and every
public function and class has a docstring for mkdocstrings to show (it hides members without one).

The site itself is built in strict mode by ``make test`` (broken links and entries that do not load fail
there); these checks say by name what is missing.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import svhn_vae

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"
ENTRY = re.compile(r"^:::\s+(\S+)\s*$", re.MULTILINE)


def library_modules() -> list[str]:
    """Every module of the package, except private ones (``__main__`` runs the command on import)."""
    names = [m.name for m in pkgutil.walk_packages(svhn_vae.__path__, prefix="svhn_vae.")]
    return ["svhn_vae"] + sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))


def documented_modules() -> set[str]:
    return {name for page in API_DIR.glob("*.md") for name in ENTRY.findall(page.read_text())}


def public_objects(module_name: str) -> dict[str, object]:
    """Functions and classes whose name has no leading underscore and that the module itself defines."""
    module = importlib.import_module(module_name)
    return {name: obj for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module_name}


def source_docstrings(module_name: str) -> dict[str, str | None]:
    """Docstrings of the module's top-level ``def`` and ``class`` statements as written in the source
    (a dataclass without one gets a generated ``__doc__`` at run time, which mkdocstrings does not show)."""
    tree = ast.parse(Path(importlib.import_module(module_name).__file__).read_text())
    return {node.name: ast.get_docstring(node) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def test_every_module_is_in_the_api_reference():
    missing = [name for name in library_modules() if name not in documented_modules()]
    assert not missing, f"modules without a '::: module' line in docs/api/*.md: {missing}"


def test_api_reference_entries_name_existing_modules():
    unknown = sorted(documented_modules() - set(library_modules()))
    assert not unknown, f"docs/api/*.md has entries for modules the package does not have: {unknown}"


def test_every_public_function_and_class_has_a_docstring():
    missing = []
    for module_name in library_modules():
        written = source_docstrings(module_name)
        for name, obj in public_objects(module_name).items():
            doc = written[name] if name in written else inspect.getdoc(obj)
            if not (doc and doc.strip()):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public functions and classes without a docstring (not shown in the API reference): {missing}"


def test_readme_is_short_and_has_the_two_set_up_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.startswith("make ")]
    assert commands == ["make demo", "make test"]


def test_readme_links_to_docs_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    targets = {link.split("#")[0] for link in re.findall(r"\]\(((?:docs/|CHANGELOG)[^)\s]*)\)", readme)}
    assert targets, "the README links to no documentation page"
    missing = sorted(t for t in targets if not (ROOT / t).exists())
    assert not missing, f"README links to files that do not exist: {missing}"
