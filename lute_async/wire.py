"""Names both ends of the wire share: the protocol versions, the TCP challenge's layout and MAC,
and the ``LUTE_ASYNC_*`` variables.

Kept free of module-level imports because every task process loads it.
"""

#: The hello on the pipe and the Unix socket: ``{"v": 1, "run", "pid", "rank", "secret"}``.
PROTOCOL_VERSION = 1
#: The hello on TCP answers the executor's challenge ``{"v": 2, "nonce": 16 bytes}`` with
#: ``{"v": 2, "run", "pid", "rank", "mac"}``: the secret never crosses the network.
TCP_PROTOCOL_VERSION = 2
NONCE_BYTES = 16
#: The challenge's bytes before its nonce: msgpack of ``{"v": 2, "nonce": <bin 16>}``.
CHALLENGE_PREFIX = b"\x82\xa1v\x02\xa5nonce\xc4\x10"
CHALLENGE_BYTES = len(CHALLENGE_PREFIX) + NONCE_BYTES


def hello_mac(secret: str, nonce: bytes, run: str, pid: int, rank: int | None) -> bytes:
    """HMAC-SHA256 keyed by the run's secret over ``nonce || run || pid || rank`` (NUL between
    the fields, decimal numbers, an empty rank for None): what a TCP hello proves itself with."""
    import hmac  # ~1 ms: only TCP tasks and the executor pay it

    sender = f"{run}\0{pid}\0{'' if rank is None else rank}".encode()
    return hmac.digest(secret.encode(), nonce + sender, "sha256")


ENV_RUN = "LUTE_ASYNC_RUN"
ENV_NAME = "LUTE_ASYNC_NAME"
ENV_FD = "LUTE_ASYNC_FD"
ENV_SOCKET = "LUTE_ASYNC_SOCKET"
ENV_TCP = "LUTE_ASYNC_TCP"
ENV_SECRET = "LUTE_ASYNC_SECRET"
ENV_PARAMS = "LUTE_ASYNC_PARAMS"
ENV_PARAMS_FILE = "LUTE_ASYNC_PARAMS_FILE"
ENV_EXECUTOR_PID = "LUTE_ASYNC_EXECUTOR_PID"
#: The directory a batch job's reporters spool to while no executor listens, and the bytes
#: one process's spool may hold (:mod:`lute_async.task.spool`).
ENV_SPOOL = "LUTE_ASYNC_SPOOL"
ENV_SPOOL_MAX = "LUTE_ASYNC_SPOOL_MAX"

#: Rank variables, most specific first: Open MPI, PMIx, MPICH's PMI, then SLURM.
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")
