"""A digest of the library code a rule's script runs, for the rule's ``params:``.

Snakemake reruns a rule when its script file changes (rerun trigger ``code``), but not when a module
of ``lokiml`` that the script imports changes. ``workflow/rules/common.smk`` gives every rule
``params: code=library_code("<script>")``: a change of that digest reruns the rule (trigger
``params``), and only that rule and what depends on its outputs.

The digest follows definitions, not whole modules: ``read_export`` and ``normalise_images`` both
import ``lokiml.pipeline``, which imports ``images.py``; a change of the crop in ``images.py`` must
rerun normalisation, not the reading of the export (which uses only the image decoder) and so not
every experiment downstream of it. Python's own import system can't say this (it works per module,
and importing TensorFlow at DAG-build time would cost seconds), so it is done here with ``ast``:

- the script and every module of the package are parsed (never imported; a few ms for the whole
  library, cached per process);
- from the script's top level, every name is followed to its definition: a function, class or
  module-level assignment of the same module, or of a package module it imports (``from .images
  import decode_grey``, ``from . import images`` then ``images.decode_grey``, ``import lokiml.x``,
  re-exports followed), transitively;
- a class counts whole (its methods are reached through instances the analysis can't type), and a
  module's top-level statements other than definitions and imports (e.g. ``Image.MAX_IMAGE_PIXELS =``)
  count for every module reached;
- the digest hashes the ``ast.dump`` of what was reached, docstrings removed: a change of a comment,
  a docstring or the formatting reruns nothing; a change of code that runs does.

Over-inclusion is the safe side (a rerun too many), and this is where the analysis errs: a name used
as a local variable that is also a module-level name counts, and a module used as a value (passed
around, not as ``module.name``) counts whole.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

PACKAGE = "lokiml"

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class _Module:
    """One parsed source file: its definitions, its import aliases, its other top-level statements."""

    def __init__(self, name: str, source: str, filename: str, package: str):
        self.name = name
        self.is_package = os.path.basename(filename) == "__init__.py"
        self.tree = ast.parse(source, filename=filename)
        _strip_docstrings(self.tree)
        self.defs: dict[str, list[ast.stmt]] = {}
        self.imports: dict[str, tuple[str, str | None]] = {}  # alias -> (module, attribute or None)
        self.other: list[ast.stmt] = []
        for stmt in self.tree.body:
            self._top_level(stmt)
        # Imports anywhere (inside functions too: the scripts import their library function lazily).
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == package or a.name.startswith(package + "."):
                        if a.asname:
                            self.imports[a.asname] = (a.name, None)
                        else:  # `import lokiml.x`: `lokiml.x.y` is resolved through the package alias
                            self.imports[package] = (package, None)
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(node, package)
                if base is None:
                    continue
                for a in node.names:
                    if a.name != "*":
                        self.imports[a.asname or a.name] = (base, a.name)

    def _absolute(self, node: ast.ImportFrom, package: str) -> str | None:
        if node.level:
            parts = self.name.split(".")
            # `from . import` in module `lokiml.x` means package `lokiml`; in `lokiml/__init__.py`, itself
            base = parts[: len(parts) - node.level + (1 if self.is_package else 0)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        return mod if mod == package or mod.startswith(package + ".") else None

    def _top_level(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, _DEFS):
            self.defs.setdefault(stmt.name, []).append(stmt)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            for n in names:
                self.defs.setdefault(n, []).append(stmt)
            if not names:  # `Image.MAX_IMAGE_PIXELS = ...`: a side effect of importing the module
                self.other.append(stmt)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            pass
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            pass  # a bare string
        else:
            self.other.append(stmt)
            # definitions inside a top-level `if`/`try` are definitions too
            for sub in ast.walk(stmt):
                if isinstance(sub, _DEFS):
                    self.defs.setdefault(sub.name, []).append(sub)


def _strip_docstrings(tree: ast.AST) -> None:
    """Remove every docstring of a parsed module, in place."""
    for sub in ast.walk(tree):
        body = getattr(sub, "body", None)
        if (isinstance(sub, (*_DEFS, ast.Module)) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            sub.body = body[1:] or [ast.Pass()]


def _references(node: ast.AST) -> list:
    """Bare names and `name.attribute` pairs that a statement uses."""
    return list(dict.fromkeys((n, tuple(c) if c else None) for n, c in _walk_references(node)))


def _walk_references(node: ast.AST):
    """Bare names, and `name.a.b` chains whose base is a name (that base is not also a bare use)."""
    bases = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            chain = []
            cur = sub
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                bases.add(id(cur))
                chain.reverse()
                yield cur.id, chain
    for sub in ast.walk(node):
        # A name that is only assigned (a dataclass field `images: int`, `x = ...`) uses nothing: in
        # lokiml.manifest the field `images` made read_export reach every function of lokiml.images.
        if isinstance(sub, ast.Name) and id(sub) not in bases and isinstance(sub.ctx, ast.Load):
            yield sub.id, None


class Library:
    """The package's sources under ``root`` (the folder holding ``lokiml/``), parsed on demand.

    ``read(path)`` returns a source file's text; the default reads the file. ``workflow/rules/common.smk``
    passes one that fetches files through Snakemake's source cache when the workflow is a remote module.
    """

    def __init__(self, root, read: Callable[[str], str] | None = None, package: str = PACKAGE, cache=None):
        self.root = str(root)
        self.package = package
        self._local = read is None
        self._read = read or (lambda p: Path(p).read_text(encoding="utf-8"))
        self._modules: dict[str, _Module | None] = {}
        self._digests: dict[str, str] = {}
        # per statement (the trees live as long as this object, so id() is safe)
        self._scripts: dict[str, _Module] = {}
        self._refs: dict[int, list] = {}
        self._dumps: dict[int, str] = {}
        self._cache = Path(cache) if cache and self._local else None
        self._stamp = None

    def _script(self, script: str) -> _Module:
        """The parsed script, kept as long as this object: the per-statement caches are keyed by id(), and
        a freed tree's ids are reused by the next one (a script's digest then came out of another's
        references: an empty digest, different from one process to the next)."""
        if script not in self._scripts:
            self._scripts[script] = _Module("__script__", self._read(script), script, self.package)
        return self._scripts[script]

    def _refs_of(self, node: ast.AST) -> list:
        key = id(node)
        if key not in self._refs:
            self._refs[key] = _references(node)
        return self._refs[key]

    def _dump(self, node: ast.AST) -> str:
        key = id(node)
        if key not in self._dumps:
            self._dumps[key] = ast.dump(node)
        return self._dumps[key]

    # -- sources ---------------------------------------------------------------------------------
    def _path(self, module: str) -> list[str]:
        rel = module.split(".")
        return [os.path.join(self.root, *rel) + ".py", os.path.join(self.root, *rel, "__init__.py")]

    def module(self, name: str) -> _Module | None:
        """The parsed module ``name`` (``lokiml.images``), or None when the package has no such module."""
        if name not in self._modules:
            self._modules[name] = None
            for path in self._path(name):
                try:
                    source = self._read(path)
                except Exception:  # noqa: BLE001 - no such file (locally or at a remote module's source)
                    continue
                self._modules[name] = _Module(name, source, path, self.package)
                break
        return self._modules[name]

    def is_module(self, name: str) -> bool:
        return self.module(name) is not None

    # -- the walk --------------------------------------------------------------------------------
    def reached(self, script) -> dict[tuple[str, str], list[ast.stmt]]:
        """Every definition the script's top level reaches: ``(module, name) -> statements``.

        The script itself is module ``"__script__"`` (its whole top level is the start).
        """
        script = str(script)
        start = self._script(script)
        modules = {"__script__": start}
        seen: dict[tuple[str, str], list[ast.stmt]] = {}
        todo: list[tuple[_Module, ast.AST]] = [(start, s) for s in start.tree.body]

        def resolve(mod: _Module, name: str, chain: list[str] | None, depth: int = 0):
            """Queue the definition that `name` (`name.chain[0]`) means inside `mod`."""
            if depth > 20:
                return
            if name in mod.defs:
                key = (mod.name, name)
                if key not in seen:
                    seen[key] = mod.defs[name]
                    todo.extend((mod, s) for s in mod.defs[name])
                return
            if name not in mod.imports:
                return  # a builtin, a local variable, or another package's name
            target, attr = mod.imports[name]
            if attr is not None:
                sub = f"{target}.{attr}"
                if self.is_module(sub):  # `from . import images`: a module alias
                    target, attr = sub, None
            if attr is None:  # a module alias: `images.decode_grey`, or `lokiml.images.decode_grey`
                names = list(chain or ())
                while names and self.is_module(f"{target}.{names[0]}"):
                    target = f"{target}.{names.pop(0)}"
                other = self.module(target)
                if other is None:
                    return
                enter(other)
                if names:
                    resolve(other, names[0], names[1:], depth + 1)
                else:  # the module used as a value: all of it
                    for n in other.defs:
                        resolve(other, n, None, depth + 1)
                return
            other = self.module(target)
            if other is not None:
                enter(other)
                resolve(other, attr, chain, depth + 1)

        def enter(mod: _Module):
            if mod.name not in modules:
                modules[mod.name] = mod
                todo.extend((mod, s) for s in mod.other)
                seen[(mod.name, "<module>")] = mod.other
                # importing a submodule runs its package's __init__
                parts = mod.name.split(".")
                for i in range(1, len(parts)):
                    parent = self.module(".".join(parts[:i]))
                    if parent is not None:
                        enter(parent)

        while todo:
            mod, node = todo.pop()
            for name, chain in self._refs_of(node):
                resolve(mod, name, chain)
        return seen

    def imported(self, script) -> list[str]:
        """Every package module that importing the script's imports can load, transitively, sorted.

        Wider than :meth:`modules_used`: a module imported but none of whose code is reached still has
        to exist for the import to succeed (a remote module's files are fetched by reading them).
        """
        script = str(script)
        start = self._script(script)
        found: set[str] = set()
        todo = [start]
        while todo:
            mod = todo.pop()
            for target, attr in mod.imports.values():
                for name in ([target] + ([f"{target}.{attr}"] if attr else [])):
                    parts = name.split(".")
                    for i in range(1, len(parts) + 1):  # a submodule's packages are imported too
                        sub = ".".join(parts[:i])
                        if sub not in found and self.is_module(sub):
                            found.add(sub)
                            todo.append(self.module(sub))
        return sorted(found)

    def modules_used(self, script) -> list[str]:
        """The package modules whose code the script reaches, sorted."""
        return sorted({m for m, _ in self.reached(script) if m != "__script__"})

    def digest(self, script) -> str:
        """A short hex digest of the package code the script reaches (the script itself excluded).

        With ``cache`` (a JSON file), digests are kept between processes while no source file of the
        package or the script changed size or time: a Snakemake start then costs a few ``stat`` calls.
        """
        script = str(script)
        if script in self._digests:
            return self._digests[script]
        cached = self._load_cache()
        key = f"{script}|{self._file_stamp(script)}"
        if key in cached:
            self._digests[script] = cached[key]
            return cached[key]
        h = hashlib.sha1()
        for (mod, name), stmts in sorted(self.reached(script).items()):
            if mod == "__script__":
                continue  # Snakemake's own `code` trigger watches the script
            h.update(f"{mod}:{name}\n".encode())
            for s in stmts:
                h.update(self._dump(s).encode())
        self._digests[script] = h.hexdigest()[:16]
        cached[key] = self._digests[script]
        self._save_cache(cached)
        return self._digests[script]

    # -- the cache between processes ---------------------------------------------------------------
    def _file_stamp(self, path: str) -> str:
        try:
            st = os.stat(path)
            return f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return "-"

    def _package_stamp(self) -> str:
        if self._stamp is None:
            parts = []
            for dirpath, dirnames, filenames in os.walk(os.path.join(self.root, self.package)):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for f in sorted(filenames):
                    if f.endswith(".py"):
                        p = os.path.join(dirpath, f)
                        parts.append(f"{os.path.relpath(p, self.root)}:{self._file_stamp(p)}")
            self._stamp = hashlib.sha1("\n".join(parts).encode()).hexdigest()
        return self._stamp

    def _load_cache(self) -> dict:
        if self._cache is None:
            return {}
        try:
            data = json.loads(self._cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("package") != self._package_stamp():
            return {}
        return dict(data.get("digests", {}))

    def _save_cache(self, digests: dict) -> None:
        if self._cache is None:
            return
        try:
            self._cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._cache.with_name(f".{self._cache.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"package": self._package_stamp(), "digests": digests}, sort_keys=True))
            os.replace(tmp, self._cache)
        except OSError:
            pass  # a read-only working directory: digests are computed at each start
