"""What a run did, for people and programs.

- ``data``: ``report.json``; ``page``: the HTML page; ``thumbnails``: its pictures;
  ``failures``: failures grouped by reason.
"""
