"""Extension points chosen by name: built-ins in a registry, packages' entry points, or a user's
``package.module:attr``.

Strategies, score functions and samplers are all resolved here, so each says the same thing when
a name is unknown (the known names) or an import fails (what could not be imported). Code that
handles untrusted configs (the MCP server's tools) runs inside ``modules_forbidden``: a config
then names only built-ins and installed packages' entry points, and no module of its choosing is
ever imported (importing runs the module's top-level code).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import site
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from genesis_core.errors import ConfigError, clip
from genesis_core.fingerprint import code_version, fingerprint, package_source

_forbidden: ContextVar[str | None] = ContextVar("genesis_modules_forbidden", default=None)  # why, when forbidden


@contextmanager
def modules_forbidden(reason: str | None) -> Iterator[None]:
    """Within this block (this thread or task), ``package.module:attr`` names are refused with
    ``reason``; None changes nothing (a server started with them allowed, a child of a process that
    allowed them: ``forbidden_why``)."""
    if reason is None:
        yield
        return
    token = _forbidden.set(reason)
    try:
        yield
    finally:
        _forbidden.reset(token)


def forbidden_why() -> str | None:
    """Why ``modules_forbidden`` holds here, or None: what a child process must be given to hold it too."""
    return _forbidden.get()


def load_object(name: str, kind: str) -> Any:
    """The attribute named by ``package.module:attr``; ConfigError saying why it cannot be had."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} {clip(name)!r}: expected package.module:attr")
    if _forbidden.get() is not None:
        raise ConfigError(f"{kind} {clip(name)!r}: a config may not name a module here ({_forbidden.get()}); "
                          f"use a built-in or an installed package's entry point")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{kind} {name!r}: cannot import {module_name}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{kind} {name!r}: cannot import {attr} from {module_name}: no such attribute") from None


def entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    """Installed packages' plugins of ``group`` by name (``[project.entry-points."<group>"]``)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}


def resolve(name: str, registry: Mapping[str, Any], kind: str, group: str | None = None) -> Any:
    """A registered ``kind`` by name, an installed package's entry point of ``group`` by name, or a
    user's object by ``package.module:attr``."""
    if ":" in name:
        return load_object(name, kind)
    if name in registry:
        return registry[name]
    installed = entry_points(group) if group else {}
    if name in installed:
        try:
            return installed[name].load()
        except Exception as exc:  # a broken plugin package: say which, whatever it raised
            raise ConfigError(f"{kind} {name!r}: the entry point {installed[name].value} "
                              f"({group}) cannot be loaded: {clip(str(exc), 200)}") from None
    known = sorted({*registry, *installed})
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown {kind} {clip(name)!r}; {hint}known: {', '.join(known)} (or package.module:attr)")


def describe(obj: Any) -> str:
    """What ``obj`` is, for an error saying it is not what was expected."""
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    return "None" if obj is None else f"a {type(obj).__name__}"


# each user source file hashed in this process: the sha256 of its bytes then, and the spec of the module
# loaded from it (None if none was), which a reload replaces: ``check_user_code`` tells an edit the
# process runs (reloaded, or not imported) from one it does not
_HASHED: dict[str, tuple[str, Any]] = {}
_STALE = ("this process would run the code as it was, and a process it starts the code on disk, with no telling their "
          "results apart. Restart this process (an MCP server, a notebook's kernel)")  # why ``check_user_code`` stops a run


@functools.cache
def _source_tree(root: str) -> str:
    """sha256 of the Python source at ``root``: a file, or every .py file under a folder (once a
    process, until ``check_user_code`` finds it edited)."""
    path = Path(root)
    h = hashlib.sha256()
    loaded = _loaded_specs(root)
    for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
        h.update(file.relative_to(path).as_posix().encode() if path.is_dir() else file.name.encode())
        body = file.read_bytes()
        h.update(body)
        _HASHED[str(file)] = (hashlib.sha256(body).hexdigest(), loaded.get(str(file)))
    return h.hexdigest()


def _loaded_specs(root: str) -> dict[str, Any]:
    """The modules of this process loaded from files at ``root``: their files and specs."""
    files = ((getattr(m, "__file__", None), m) for m in list(sys.modules.values()))
    return {file: m.__spec__ for file, m in files if isinstance(file, str) and file.startswith(root)}


def check_user_code() -> None:
    """Said as a run starts. A user's source is hashed once a process, so after an edit a notebook
    (the module reloaded) or an MCP server (the module as it was, and a process it starts for a
    trial importing the new one) resumed the study and recorded new results as the old code's.
    Now an edited file whose module this process still runs as it was imported is a ConfigError;
    any other edit is hashed again. So is Genesis-Core's own source changed under the process (an
    upgrade, an edit), which no reload brings in."""
    if not code_version.cache_info().currsize:
        code_version()  # the first run of this process: its hash taken now, against which the next runs' are checked
    elif package_source() != code_version():
        raise ConfigError(f"Genesis-Core's source in {Path(__file__).parent} changed after this process imported it (an "
                          f"upgrade, an edit): {_STALE}")
    edited = []
    for file, (digest, spec) in _HASHED.items():
        try:
            now = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        except OSError:
            now = None
        if now != digest:
            edited.append((file, spec))
    if not edited:
        return
    stale = [file for file, spec in edited if spec is not None and _loaded_specs(file).get(file) is spec]
    if stale:
        raise ConfigError(f"{stale[0]} was edited after this process imported it: {_STALE} or reload the module "
                          "(importlib.reload, IPython's %autoreload)")
    _HASHED.clear()
    for cached in (_source_tree, _user_source, _imported_tops):
        cached.cache_clear()


def plugin_source(obj: Any) -> tuple[str, str] | None:
    """(top-level package, sha256 of its source) for a user's plugin, None for Genesis-Core's own
    (``code_version`` covers those). The whole top-level package is hashed, so an edit to a
    helper module the plugin imports counts too, and so is every other top-level package or module
    of the user's it imports, at any depth (``_user_source``): a strategy in ``mine.py`` that took
    its size from ``sizes.py`` beside it resumed its study after an edit to ``sizes.py``, and the
    score cache answered its duplicates with scores of the old size."""
    module = inspect.getmodule(obj if inspect.isclass(obj) or callable(obj) else type(obj))
    top = (module.__name__ if module else type(obj).__module__).partition(".")[0]
    if top == "genesis_core":
        return None
    file = getattr(sys.modules.get(top), "__file__", None) or getattr(module, "__file__", None)
    if file is None:
        return top, "unknown source"
    return top, _user_source(top, _source_root(file))


def _source_root(file: str) -> str:
    """What is hashed for a module's top level: its package's folder, or the module's own file."""
    return str(Path(file).parent if Path(file).name == "__init__.py" else Path(file))


@functools.cache
def _user_source(top: str, root: str) -> str:
    """sha256 of ``root``'s source with that of the user's code it imports (``_source_tree`` alone when
    it imports none, as before that was followed); keyed by module name, not path, so the same code
    in another folder (another machine of a fleet) is the same."""
    trees = {top: root}
    todo = [root]
    while todo:
        for name in sorted(_imported_tops(todo.pop())):
            dep = _user_root(name)
            if dep is not None and name not in trees:
                trees[name] = dep
                todo.append(dep)
    if len(trees) == 1:
        return _source_tree(root)
    return fingerprint({name: _source_tree(path) for name, path in sorted(trees.items())})


_IMPORT = re.compile(rb"^[ \t]*(?:from[ \t]+([A-Za-z_]\w*)|import[ \t]+([^#;\n]+))", re.MULTILINE)


@functools.cache
def _imported_tops(root: str) -> frozenset[str]:
    """The top-level names the Python source at ``root`` imports, read line by line (a relative
    import stays in its package, which is hashed whole). Not parsed: the ``tests`` package took
    0.8 s to parse and walk, against milliseconds to read; an import statement in a string counts
    too, which can only add code to the hash."""
    path = Path(root)
    tops: set[str] = set()
    for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
        for source, names in _IMPORT.findall(file.read_bytes()):
            for name in [source] if source else names.split(b","):
                top = name.strip().partition(b".")[0].partition(b" ")[0].decode(errors="replace")
                if top.isidentifier():
                    tops.add(top)
    return frozenset(tops)


# where the interpreter's and installed packages' code lives (a user's --user installs and a system's
# dist-packages among them): not the user's own code, whose edits change results
_LIBRARIES = tuple({Path(p) for p in (*(sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")),
                                      *site.getsitepackages(), site.getusersitepackages()) if p})


def _user_root(name: str) -> str | None:
    """The source root of top-level module ``name`` if it is a user's (not the standard library, an
    installed package or Genesis-Core), None otherwise or if it cannot be found. Found without
    importing it."""
    if name == "genesis_core" or name in sys.stdlib_module_names:
        return None
    file = getattr(sys.modules.get(name), "__file__", None)
    if file is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        file = spec.origin if spec is not None and spec.has_location else None
    if file is None or any(Path(file).is_relative_to(lib) for lib in _LIBRARIES):
        return None
    return _source_root(file)


def code_fingerprint(*plugins: Any) -> str:
    """The code that produces a result: Genesis-Core's (``code_version``) alone when every plugin is
    built in, else that and each user plugin's source, so an edit to either is a different code."""
    users = dict(filter(None, (plugin_source(p) for p in plugins)))
    return code_version() if not users else fingerprint({"genesis_core": code_version(), **users})

