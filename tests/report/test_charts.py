"""SVG charts: what they draw is the data they were given."""

import re
import xml.etree.ElementTree as ET

import numpy as np

from rayvit.report import charts

NS = "{http://www.w3.org/2000/svg}"


def rects(svg):
    root = ET.fromstring(svg)
    return [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]


def test_bars_heights_are_proportional_to_the_values():
    svg = charts.bars([1.0, 0.5, 0.25], ["a", "b", "c"], "t", "y", colours=["red", "green", "blue"])
    bars = rects(svg)
    heights = [float(r.get("height")) for r in bars]
    assert np.allclose(np.array(heights) / heights[0], [1, 0.5, 0.25])
    assert [r.get("fill") for r in bars] == ["red", "green", "blue"]


def test_histogram_counts_every_finite_value_once():
    values = np.array([0.1, 0.1, 0.5, np.nan, -0.9])
    bars = rects(charts.histogram(values, "t", "x", bins=4, value_range=(-1, 1)))
    counts = [int(re.search(r": (\d+)$", r.find(f"{NS}title").text).group(1)) for r in bars]
    assert counts == [1, 0, 2, 1]


def test_matrix_shows_each_count_in_its_cell():
    svg = charts.matrix([[5, 1], [0, 7]], ["water", "forest"], "Confusion")
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert [t for t in texts if t.isdigit()] == ["5", "1", "0", "7"]
    assert texts.count("water") == 2 and texts.count("forest") == 2
