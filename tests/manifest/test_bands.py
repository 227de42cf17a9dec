"""bm_type against the view_id's sensor: the band and alias tables, and the warnings."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.manifest._bands import bm_type_warning, parse_tables, sensor_for, tables

S2 = "S2/13/R/EL/2023/7/19/0"
S2L2A = "S2L2A/13/R/EL/2023/7/19/0"
L8 = "L8/LC80110312016028LGN00"
MODIS = "MODIS/12/04/2017204/2017213034223"
S1 = "S1/IW/2023/7/19/x"


def test_the_table_names_its_sources_and_each_prefix_once() -> None:
    raw = (resources.files("bulkfetch") / "data" / "bands.toml").read_text(encoding="utf-8")
    doc = tomllib.loads(raw)
    for entry in [*doc["sensors"].values(), doc["aliases"], doc["generic_bands"]]:
        assert entry["source"].strip()
    prefixes = [p for entry in doc["sensors"].values() for p in entry["view_id_prefixes"]]
    assert len(prefixes) == len(set(prefixes))
    assert "doc.eos.com" in raw and "USGS" in raw and "ESA" in raw
    t = tables()
    assert {"NDVI", "NDWI", "EVI", "MSAVI", "NDRE", "NATURAL"} <= set(t.aliases)


def test_sensor_from_the_view_id() -> None:
    s2 = sensor_for(S2)
    assert s2 is not None and s2.name == "Sentinel-2" and "B8A" in s2.bands
    l2a = sensor_for(S2L2A)
    assert l2a is not None and "B10" not in l2a.bands
    l8 = sensor_for(L8)
    assert l8 is not None and l8.bands == {f"B{n}" for n in range(1, 12)}
    assert sensor_for("L9/LC90110312022028LGN00") == l8
    assert sensor_for("XX/1/2") is None


@pytest.mark.parametrize(
    ("bm_type", "view"),
    [
        ("NDVI", S2),
        ("NDVI", L8),
        ("NATURAL", S2),
        ("B04,B03,B02", S2),
        ("B8A", S2),
        ("B4,B3,B2", L8),
        ("(B08-B04)/(B08+B04)", S2),
        ("(B5-B4)/(B5+B4),(B3-B5)/(B3+B5)", L8),
        ("B5-1", L8),
        ("sqrt(B04)*2.5e-3+max(B03, B02)", S2),
        ("(NIR-RED)/(NIR+RED)", S2),
        ("NDVI*2", S2),
        ("VV,VH", S1),
        ("B1,B2", MODIS),
        ("B01/B02", MODIS),
        ("B99,B04", "XX/1/2"),  # a sensor bulkfetch does not know: bands not judged
    ],
)
def test_what_eos_takes_passes(bm_type: str, view: str) -> None:
    assert bm_type_warning(bm_type, view) is None


@pytest.mark.parametrize(
    ("bm_type", "view", "text"),
    [
        ("NDVX", S2, "'NDVX' is not an alias bulkfetch knows; did you mean 'NDVI'?"),
        ("ndvi", S2, "did you mean 'NDVI'?"),
        (
            "B04,B03,B02",
            L8,
            "Landsat 8/9 has no bands B04, B03, B02 (its bands: B1 to B11); "
            "did you mean B4, B3, B2?",
        ),
        ("(B8-B4)/(B8+B4)", S2, "Sentinel-2 has no bands B8, B4 (its bands: B01 to B12 and B8A)"),
        ("B13", S2, "Sentinel-2 has no band B13 (its bands: B01 to B12 and B8A) ("),
        ("B10", S2L2A, "Sentinel-2 L2A has no band B10"),
        ("B8A", L8, "Landsat 8/9 has no band B8A"),
        ("VV", S2, "Sentinel-2 has no band VV"),
        (
            "(BO8-B04)/(B08+B04)",
            S2,
            "'BO8' in the band math is no band or alias; did you mean 'B08'?",
        ),
        ("NDVI+NDWX", L8, "'NDWX' in the band math is no band or alias; did you mean 'NDWI'?"),
    ],
)
def test_likely_mistakes_are_named(bm_type: str, view: str, text: str) -> None:
    message = bm_type_warning(bm_type, view)
    assert message is not None and text in message
    assert message.endswith("(sent as written: EOS may know more)")


def test_a_table_of_ones_own() -> None:
    doc = {
        "aliases": {"source": "x", "names": ["IDX"], "more": {"source": "y", "names": ["IDY"]}},
        "generic_bands": {"source": "z", "names": ["NIR"]},
        "px_size": {"min": 1, "max": 2, "oversample": 3},
        "sensors": {
            "a": {
                "name": "A",
                "view_id_prefixes": ["A1", "A2"],
                "bands": ["Q"],
                "shown": "Q",
                "finest_m": 5,
                "source": "s",
            },
        },
    }
    t = parse_tables(doc)
    assert t.aliases == ("IDX", "IDY") and t.every_band == {"Q"}
    assert t.by_prefix["A1"] is t.by_prefix["A2"] and t.by_prefix["A1"].finest_m == 5.0


SENSOR_VIEWS = [S2, S2L2A, L8, MODIS, S1]


@given(st.sampled_from(SENSOR_VIEWS), st.data())
def test_any_list_or_sum_of_a_sensors_own_bands_passes(view: str, data: st.DataObject) -> None:
    sensor = sensor_for(view)
    assert sensor is not None
    bands = data.draw(st.lists(st.sampled_from(sorted(sensor.bands)), min_size=1, max_size=4))
    ops = data.draw(st.lists(st.sampled_from("+-*/"), min_size=len(bands), max_size=len(bands)))
    assert bm_type_warning(",".join(bands), view) is None
    math_ = "".join(f"{b}{op}" for b, op in zip(bands, ops, strict=True)) + "1"
    assert bm_type_warning(f"({math_})/(2.5e-1)", view) is None


@given(st.sampled_from(SENSOR_VIEWS), st.sampled_from(sorted(tables().aliases)))
def test_any_known_alias_passes_on_any_sensor(view: str, alias: str) -> None:
    assert bm_type_warning(alias, view) is None
