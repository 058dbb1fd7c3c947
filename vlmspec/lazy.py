"""Lazy package exports: `vlmspec.X` imports X's module on first use, not at `import vlmspec`.

Importing torch and transformers takes seconds; the command line (`vlmspec --help`,
`--version`) and light users (errors, configs) should not pay it. A package lists its
public names and the submodule holding each; `lazy_exports` returns the module-level
`__getattr__` and `__dir__` that import them on first access (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """exports: public name -> submodule (relative to `package`, e.g. ".api")."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later accesses skip __getattr__
        return value

    def __dir__() -> list[str]:
        namespace = importlib.import_module(package).__dict__
        return sorted(set(namespace) | set(exports) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
