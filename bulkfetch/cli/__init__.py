"""The ``bulkfetch`` command: a thin layer over :mod:`bulkfetch.api`; nothing else imports it.

- ``main``: the command group and the run commands (``run``, ``status``, ``plan``...).
- ``search``, ``stac``, ``colormaps``, ``demo``: the other commands; ``progress`` and
  ``summary``: what a run shows while it goes and when it ends; ``_util``: what they share.
"""

from bulkfetch.cli.main import main

__all__ = ["main"]
