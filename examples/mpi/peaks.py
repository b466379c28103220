# peaks.py
from mpi4py import MPI

from lute_async.task import Reporter

comm = MPI.COMM_WORLD
with Reporter.connect() as report:
    report.started()                      # rank 0 only (by default)
    mine = sum(1 for i in range(comm.rank, 1000, comm.size) if i % 7 == 0)
    report.log(f"rank {comm.rank} found {mine} peaks")   # every rank, tagged with its rank
    total = comm.reduce(mine)
    if comm.rank == 0:
        report.result({"peaks": total}, summary=f"{total} peaks")
