"""What a run did, for people and programs.

- ``data``: ``report.json``; ``failures``: failures grouped by reason.
- ``contents``: what the HTML page shows, read from the ledger and the files; ``page``: the
  page rendered (its style in ``report.css``); ``thumbnails``: its pictures.
"""
