"""Objects named ``"package.module:attribute.path"``: task functions, hooks, tasklet steps,
launcher factories. One importer for all of them, so each reports the same failures the same
way. Import-light (the worker loads it): only :mod:`importlib`, which Python has loaded anyway.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing costs a task process milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

__all__ = ["TargetError", "import_target"]


class TargetError(Exception):
    """What names ``target`` cannot be imported: its module (or what it raised on import),
    or an attribute it does not have. The message says which."""


def import_target(
    target: str,
    importer: Callable[[str], ModuleType] = importlib.import_module,
    failures: tuple[type[Exception], ...] = (Exception,),
) -> Any:
    """The object ``target`` (``"pkg.mod:attr"`` or ``"pkg.mod:Class.method"``) names.

    ``importer`` imports the module (by default :func:`importlib.import_module`). A module
    that fails to import with one of ``failures`` (by default whatever it raises) and a
    missing attribute are a :class:`TargetError`; a target not of that form is a ValueError.
    """
    module_name, sep, attributes = target.partition(":")
    if not sep or not module_name or not attributes:
        raise ValueError(f"{target!r} is not of the form 'package.module:function'")
    try:
        found: Any = importer(module_name)
    except failures as exc:
        raise TargetError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in attributes.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attributes!r}") from None
    return found
