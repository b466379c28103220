"""Run records: what ran, how and how it ended, in a database that outlives the executor: a
sqlite file, or a PostgreSQL database (a ``postgresql://`` URL) for a whole cluster.

One concern per module: :mod:`.model` (AnalysisRecord), :mod:`.schema` (tables, migrations),
:mod:`.dialect` (where the backends' SQL differs), :mod:`.codec` (the stored form),
:mod:`.filters` (RunFilter), :mod:`.journal` (spilled records), :mod:`.liveness` (is the
executor alive), :mod:`.leases` (executor leases: LOST from any host), :mod:`.renewer` (the
executor's lease task), :mod:`.location` (a file or a URL), :mod:`.files` (private database
files), :mod:`.rows` (the row SQL both backends share), :mod:`.database` (sqlite),
:mod:`.postgres` (psycopg), :mod:`.recovery` (journal replay, LOST runs on open), :mod:`.store`
(RecordStore), :mod:`.writer` (concurrent saves in one transaction) and :mod:`.keeper`
(RecordKeeper: a run's messages applied to its record). This package re-exports the names
callers import from ``lute_async.records``.
"""

from lute_async.records.codec import DEFAULT_MAX_RESULT_BYTES
from lute_async.records.filters import RunFilter
from lute_async.records.journal import RecordJournal, spill_record
from lute_async.records.liveness import pid_is_alive
from lute_async.records.model import AnalysisRecord, default_db_path
from lute_async.records.schema import SCHEMA_VERSION
from lute_async.records.schema import _migrate_to_v1 as _migrate_to_v1  # the tests' v1 database
from lute_async.records.store import RecordStore
from lute_async.status import ACTIVE_STATUSES, RUN_STATUSES, TERMINAL_STATUSES

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_MAX_RESULT_BYTES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "AnalysisRecord",
    "RecordJournal",
    "RecordStore",
    "RunFilter",
    "default_db_path",
    "pid_is_alive",
    "spill_record",
]
