"""PSI/J finds lute-async's executors here (the ``psij-descriptors`` namespace package).

PSI/J reads every ``psij-descriptors`` directory on ``sys.path``: from a clone's root with
lute-async also installed there are two, and registering both is an error PSI/J prints. Only
the copy beside the ``lute_async`` that ``import lute_async`` finds declares the executors.
"""

import importlib.util
import os

from packaging.version import Version
from psij.descriptor import Descriptor

_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_PACKAGE = importlib.util.find_spec("lute_async")
_OURS = (
    _PACKAGE is not None
    and _PACKAGE.origin is not None
    and os.path.dirname(os.path.dirname(os.path.realpath(_PACKAGE.origin))) == _ROOT
)

__PSI_J_EXECUTORS__ = [] if not _OURS else [
    Descriptor(
        name="lute-async",
        nice_name="lute-async",
        version=Version("0.1.0"),
        cls="lute_async.psij.executor.LuteAsyncJobExecutor",
    ),
    Descriptor(
        name="lute-async-slurm",
        nice_name="lute-async (SLURM)",
        version=Version("0.1.0"),
        cls="lute_async.psij.executor.LuteAsyncSlurmJobExecutor",
    ),
]
