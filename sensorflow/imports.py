"""Keep a library a process never uses out of it: ``refuse_pandas``.

Where pandas is installed (the test environment; the product's install has none), pyarrow
imports it at its first conversion that consults its pandas shim (~0.2-0.25 s of CPU and
~40 MB), although nothing here uses pandas. pyarrow does without it when the import fails,
as in the product's install, and remembers the answer for the life of the process: so refuse
it only in a process of our own (a command's, a writer's), never in a caller's.
"""

from __future__ import annotations

import importlib.abc
import sys

__all__ = ["refuse_pandas"]


class _WithoutPandas(importlib.abc.MetaPathFinder):
    """Makes ``import pandas`` fail."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("this process does not use pandas", name=name)
        return None


def refuse_pandas() -> None:
    """From now on ``import pandas`` fails in this process (a no-op if pandas is imported already)."""
    if "pandas" not in sys.modules and not any(isinstance(f, _WithoutPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _WithoutPandas())
