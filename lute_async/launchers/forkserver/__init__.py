"""The fork-server launcher: many small ``@task`` runs forked from one warm interpreter."""

from lute_async.launchers.forkserver.launcher import Forkserver, ForkserverProcess
from lute_async.launchers.forkserver.server import close_servers
from lute_async.launchers.forkserver.waiting import ServerDied

__all__ = ["Forkserver", "ForkserverProcess", "ServerDied", "close_servers"]
