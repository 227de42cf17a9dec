"""The ``bulkfetch`` command: a thin layer over :mod:`bulkfetch.api`; nothing else imports it.

- ``main``: the command group (the other commands imported when used) and how it exits.
- ``run``, ``plan`` (and ``validate``), ``status``: the run's commands; ``options``: the
  run's options and their merge with bulkfetch.toml.
- ``search``, ``stac``, ``report``, ``colormaps``, ``demo``: the other commands; ``progress``
  and ``summary``: what a run shows while it goes and when it ends; ``_util``: what they share.
"""

from bulkfetch.cli.main import main

__all__ = ["main"]
