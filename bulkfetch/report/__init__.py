"""What a run did, for people and programs.

- ``data``: ``report.json``; ``contents``: what the HTML page shows; ``page``: the page
  (its CSS in ``report.css``); ``thumbnails``: its pictures; ``failures``: failures by reason.
"""
