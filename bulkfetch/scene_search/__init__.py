"""Before a run: fields and dates to a manifest, through EOS's Search API.

- ``fields``: the user's named areas (farm fields); ``scenes``: pure decisions over scenes.
- ``finder``: the search itself; ``searcher``: one field's scenes; ``client``: the Search
  API on the wire; ``plan``: a field's requests; ``cache``: what earlier searches found.
"""
