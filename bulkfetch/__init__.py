"""bulkfetch: EOS "Download visual" images in bulk, at the API's rate limit, resumably.

The package is the data flow, one module per stage, each depending only on those before:

    fields -> scene_search -> search_client, scenes  (before a run, if wanted: fields and
              dates to a manifest via EOS's Search API; search_cache remembers answers)
    manifest  (jobs in: read, validate, key)
        -> scheduler  (pure decisions: what to create, which task to poll next, when;
                       records: a job's state and transitions; policy: retries,
                       outages, quotas, expiry, back-off)
        -> client     (the EOS task API: create, status/result)
        -> sink       (bytes to disk: streamed, checked, renamed into place)
    ledger    beside them (each job's state, crash-safe, via durable)
    limiter   the shared per-lane pacing (shared with other processes on the key through
              rate_share: shared_pace's decisions, rate_store's file or Redis); shard
              splits a manifest; engine wires it all; api/cli on top.
    simulator apart: a local EOS for the demo, the tests and users' own tests.
"""

from bulkfetch._version import __version__
from bulkfetch.api import RunResult, run, run_async
from bulkfetch.config import ApiKey, Rate, RunConfig
from bulkfetch.errors import (
    ApiError,
    AuthError,
    BadRequest,
    BulkfetchError,
    EndpointError,
    FieldsError,
    LedgerCorrupt,
    LedgerError,
    LedgerLocked,
    LedgerVersionError,
    ManifestError,
    Problem,
    RateLimited,
    StorageError,
    TaskGone,
    TransientError,
    UsageError,
)
from bulkfetch.manifest.jobs import Job, Manifest, load_manifest
from bulkfetch.scene_search.fields import Field, load_fields
from bulkfetch.scene_search.finder import SearchResult, search, search_async, write_manifest

__all__ = [
    "ApiError",
    "ApiKey",
    "AuthError",
    "BadRequest",
    "BulkfetchError",
    "EndpointError",
    "Field",
    "FieldsError",
    "Job",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerLocked",
    "LedgerVersionError",
    "Manifest",
    "ManifestError",
    "Problem",
    "Rate",
    "RateLimited",
    "RunConfig",
    "RunResult",
    "SearchResult",
    "StorageError",
    "TaskGone",
    "TransientError",
    "UsageError",
    "__version__",
    "load_fields",
    "load_manifest",
    "run",
    "run_async",
    "search",
    "search_async",
    "write_manifest",
]
