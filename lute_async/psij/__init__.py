"""PSI/J (ExaWorks' portable job API) executors backed by lute-async: ``lute-async`` and
``lute-async-slurm``, found by PSI/J through ``psij-descriptors/lute_async_psij.py``.

Needs the ``psij`` extra (``pip install 'lute-async[psij]'``).
"""

from lute_async.psij.executor import LuteAsyncJobExecutor, LuteAsyncSlurmJobExecutor

__all__ = ["LuteAsyncJobExecutor", "LuteAsyncSlurmJobExecutor"]
