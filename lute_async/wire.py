"""Names both ends of the wire share: the protocol version and the ``LUTE_ASYNC_*`` variables.

Kept free of imports because every task process loads it.
"""

PROTOCOL_VERSION = 1

ENV_RUN = "LUTE_ASYNC_RUN"
ENV_NAME = "LUTE_ASYNC_NAME"
ENV_FD = "LUTE_ASYNC_FD"
ENV_SOCKET = "LUTE_ASYNC_SOCKET"
ENV_TCP = "LUTE_ASYNC_TCP"
ENV_SECRET = "LUTE_ASYNC_SECRET"
ENV_PARAMS = "LUTE_ASYNC_PARAMS"
ENV_PARAMS_FILE = "LUTE_ASYNC_PARAMS_FILE"
ENV_EXECUTOR_PID = "LUTE_ASYNC_EXECUTOR_PID"

#: Rank variables, most specific first: Open MPI, PMIx, MPICH's PMI, then SLURM.
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")
