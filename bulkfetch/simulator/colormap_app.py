"""The colormap endpoints EOS's render API offers, as the simulator plays them.

Routes (``app`` registers them; ``COLORMAP`` is ``/api/render/colormap``)::

    GET {COLORMAP}/ALL[?INCLUDE_TYPE=true][&TYPE=continuous|discrete]   the colormaps offered
    GET {COLORMAP}/{id}                                                 one custom colormap

Contract:

- The names are Matplotlib's (EOS's ``colormap`` takes them); the qualitative ones are
  ``discrete``, the rest ``continuous``. A few custom colormaps exist, each by its 32-hex
  id (the one in EOS's documented example among them); they are fetched by id and are not
  in the list, as a user's own colormaps would not be in a public one. How a custom
  colormap is made is not public, so the simulator has no endpoint to make one.
- The list's answer takes the form ``config.colormap_form`` says: ``"list"`` is
  ``{"colormap_list": [...]}``, of names, or of ``{"name", "type"}`` objects when
  ``INCLUDE_TYPE`` is true; ``"map"`` is a name-to-type object. ``TYPE`` filters by type
  (any case); another value is a 400. An unknown id is a 404.
- Every request passes the simulator's ``forbidden`` (403), outage (503) and key (401)
  checks, then ``config.colormap_fault``: when not 0, every colormap request is answered
  with that HTTP status, to play an endpoint that is down or missing. Requests are counted
  in ``colormap_calls``; they have no rate limit (EOS documents none).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

__all__ = ["COLORMAP_PATH", "CUSTOM_COLORMAPS", "DISCRETE", "MATPLOTLIB", "add_routes"]

COLORMAP_PATH = "/api/render/colormap"

#: Matplotlib's qualitative colormaps: EOS's "discrete" type.
DISCRETE = (
    "Pastel1", "Pastel2", "Paired", "Accent", "Dark2", "Set1", "Set2", "Set3",
    "tab10", "tab20", "tab20b", "tab20c",
)  # fmt: skip
#: Matplotlib's colormap names (without the ``_r`` reversals), in its own order.
MATPLOTLIB = (
    "viridis", "plasma", "inferno", "magma", "cividis",
    "Greys", "Purples", "Blues", "Greens", "Oranges", "Reds", "YlOrBr", "YlOrRd", "OrRd",
    "PuRd", "RdPu", "BuPu", "GnBu", "PuBu", "YlGnBu", "PuBuGn", "BuGn", "YlGn",
    "binary", "gist_yarg", "gist_gray", "gray", "bone", "pink", "spring", "summer", "autumn",
    "winter", "cool", "Wistia", "hot", "afmhot", "gist_heat", "copper",
    "PiYG", "PRGn", "BrBG", "PuOr", "RdGy", "RdBu", "RdYlBu", "RdYlGn", "Spectral",
    "coolwarm", "bwr", "seismic", "twilight", "twilight_shifted", "hsv",
    *DISCRETE,
    "flag", "prism", "ocean", "gist_earth", "terrain", "gist_stern", "gnuplot", "gnuplot2",
    "CMRmap", "cubehelix", "brg", "gist_rainbow", "rainbow", "jet", "turbo", "nipy_spectral",
    "gist_ncar",
)  # fmt: skip
#: Custom colormaps by id: the first is the id in EOS's documented Download visual example.
CUSTOM_COLORMAPS: dict[str, dict[str, Any]] = {
    "a9bc6eceeef2a13bb88a7f641dca3aa0": {
        "name": "NDVI contrast",
        "type": "continuous",
        "colors": ["#a50026", "#ffffbf", "#006837"],
    },
    "0123456789abcdef0123456789abcdef": {
        "name": "water classes",
        "type": "discrete",
        "colors": ["#08306b", "#6baed6", "#f7fbff"],
    },
    "fedcba9876543210fedcba9876543210": {
        "name": "burn severity",
        "type": "discrete",
        "colors": ["#1a9850", "#fee08b", "#d73027", "#67001f"],
    },
}


def _type(name: str) -> str:
    return "discrete" if name in DISCRETE else "continuous"


def colormap_list(form: str, *, include_type: bool, kind: str | None) -> Any:
    """The answer to ``GET .../ALL``; ``ValueError`` for a ``TYPE`` that is not known."""
    if kind is not None and kind.lower() not in ("continuous", "discrete"):
        raise ValueError(f"TYPE must be continuous or discrete, got {kind!r}")
    names = [n for n in MATPLOTLIB if kind is None or _type(n) == kind.lower()]
    if form == "map":
        return {name: _type(name) for name in names}
    if include_type:
        return {"colormap_list": [{"name": n, "type": _type(n)} for n in names]}
    return {"colormap_list": names}


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def add_routes(app: web.Application, state_key: web.AppKey[Any]) -> None:
    """Register the colormap routes on ``app``, whose ``state_key`` holds the SimState."""

    def gate(request: web.Request) -> web.Response | None:
        state = request.app[state_key]
        config = state.config
        state.counters.colormap_calls += 1
        if config.forbidden:
            return _json({"error": "forbidden: this key may not use the render API"}, 403)
        if time.monotonic() < config.outage_until:
            return _json({"error": "service unavailable"}, 503)
        keys = {request.headers.get("x-api-key"), request.query.get("api_key")} - {None}
        if config.api_key not in keys:
            return _json({"error": "invalid or missing api key"}, 401)
        if config.colormap_fault:
            if config.colormap_fault >= 500:
                return web.Response(status=config.colormap_fault, text="simulated outage")
            return _json({"error": "simulated colormap fault"}, config.colormap_fault)
        return None

    async def listing(request: web.Request) -> web.Response:
        refused = gate(request)
        if refused is not None:
            return refused
        config = request.app[state_key].config
        try:
            answer = colormap_list(
                config.colormap_form,
                include_type=_truthy(request.query.get("INCLUDE_TYPE")),
                kind=request.query.get("TYPE"),
            )
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(answer)

    async def one(request: web.Request) -> web.Response:
        refused = gate(request)
        if refused is not None:
            return refused
        colormap_id = request.match_info["colormap_id"]
        found = CUSTOM_COLORMAPS.get(colormap_id.lower())
        if found is None:
            return _json({"error": f"colormap {colormap_id[:40]!r} not found"}, 404)
        return _json({"id": colormap_id.lower(), **found})

    app.router.add_get(COLORMAP_PATH + "/ALL", listing)
    app.router.add_get(COLORMAP_PATH + "/{colormap_id}", one)
