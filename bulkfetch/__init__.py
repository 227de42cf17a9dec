"""bulkfetch: EOS "Download visual" images in bulk, at the API's rate limit, resumably.

The package is the data flow (docs/architecture.md draws it, module by module):

    manifest/  (jobs in: read, validate, key)
      -> scheduler  (pure: what to create, which task to poll next, when; with records,
                     a job's state and transitions, policy, processing)
      -> client     (the EOS task API: create, status/result; over session)
      -> sink/      (bytes out: streamed, checked, then put in place: a folder or a bucket)
    ledger     beside them (each job's state, crash-safe, over durable)
    limiter/   each lane's pace, shared with other processes on the key
    engine     the shell whose lanes carry the decisions out; api and cli/ on top
    scene_search/ and colormaps/ before a run; report/ and stac/ after it
    simulator/ apart: a local EOS for the demo, the tests and users' own tests.
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
