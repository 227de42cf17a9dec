"""Pacing the API's lanes: each lane's limiter, its pure decisions, and the rate runs share.

- ``lane``: the limiter of one lane (creations, status calls), learning the limit from 429s.
- ``pacing``, ``retry_after``, ``shared_pace``: the pure decisions behind it.
- ``share``: a run's session with the shared rate store; ``store`` (a file, one host) and
  ``redis_store`` (Redis, across hosts) keep the state that runs on one key share.
"""
