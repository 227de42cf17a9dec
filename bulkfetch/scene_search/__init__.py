"""Before a run: fields and dates to a manifest, through EOS's Search API.

- ``fields``: the user's named areas (farm fields); ``scenes``: pure decisions over scenes.
- ``finder``: the search itself, fields and options to jobs; ``searcher``: one field's
  scenes, from the cache and the lane; ``client``: the Search API on the wire; ``plan``:
  a field's requests; ``cache``: what earlier searches found.
"""
