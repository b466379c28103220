"""PSI/J finds lute-async's executors here (the ``psij-descriptors`` namespace package)."""

from packaging.version import Version
from psij.descriptor import Descriptor

__PSI_J_EXECUTORS__ = [
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
