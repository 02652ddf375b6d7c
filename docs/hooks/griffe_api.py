"""Griffe extensions for the API reference (loaded by mkdocstrings, see mkdocs.yml).

- :class:`SphinxRoles`: our docstrings name other objects the Sphinx way (:func:`make_head`,
  :class:`~svhn_vae.models.vae.VAE`, :mod:`.gaussian`). Read as Markdown, a role would show as
  ``:func:`` before the code, so each becomes a code span that links to the object's entry when the
  name resolves (in the docstring's own scope, then as a module of the package), and plain code
  when it does not. The links are "optional" autorefs: an object the reference does not show (a
  private helper) gives plain text, never a build warning.
- :class:`DefinedHere`: a package that re-exports names in ``__all__`` (``svhn_vae.likelihoods``)
  would repeat their whole entries; each object is shown once, in the module that defines it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`(~?)([^`]+)`")


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring of a loaded package into links."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        objects = list(_walk(pkg))
        paths = {obj.path for obj in objects}
        for obj in objects:
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(lambda m, o=obj: _link(m, o, paths), obj.docstring.value)


def _link(match: re.Match, obj: griffe.Object, paths: set[str]) -> str:
    short, name = match[1], match[2]
    shown = name.rsplit(".", 1)[-1] if short else name
    target = _resolve(name, obj, paths)
    if target is None:
        return f"`{shown}`"
    return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'


def _resolve(name: str, obj: griffe.Object, paths: set[str]) -> str | None:
    module = obj if obj.is_module else obj.module
    package = module.path if module.is_init_module else module.path.rpartition(".")[0]
    if name.startswith("."):  # relative to the package, as in an import
        candidates = [package + name]
    else:
        head, _, rest = name.partition(".")
        try:
            scoped = obj.resolve(head) + ("." + rest if rest else "")
        except (griffe.NameResolutionError, ValueError):
            scoped = None
        candidates = [scoped, name, f"{module.path}.{name}", f"{package}.{name}", f"{module.package.path}.{name}"]
    return next((c for c in candidates if c in paths), None)


class DefinedHere(griffe.Extension):
    """Marks imported names as not public, so that no module page repeats another's entries."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.is_module:
                for member in obj.members.values():
                    if member.is_alias:
                        member.public = False
