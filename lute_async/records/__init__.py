"""Run records (being split into one module per concern; see store.py for now)."""

from lute_async.records.store import *  # noqa: F403
from lute_async.records.store import RunFilter as RunFilter
from lute_async.records.store import __all__ as __all__
from lute_async.records.store import _migrate_to_v1 as _migrate_to_v1
