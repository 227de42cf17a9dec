"""``python -m bulkfetch.cli``: the ``bulkfetch`` command, where no console script is installed."""

from bulkfetch.cli.main import main

main()
