"""Quicklooks: viewable size by nearest neighbour, colours from the colour table, components."""

import numpy as np
from conftest import write_raster
from PIL import Image

from rayvit.report.quicklook import MIN_SIDE, enlarge, principal_rgb, quicklook


def test_enlarge_repeats_pixels_to_the_minimum_side():
    small = np.arange(80 * 60 * 4, dtype=np.uint8).reshape(80, 60, 4)
    big = enlarge(small)
    factor = -(-MIN_SIDE // 80)
    assert big.shape == (80 * factor, 60 * factor, 4)
    assert np.array_equal(big[::factor, ::factor], small) and np.array_equal(big[factor - 1::factor, ::factor], small)
    assert enlarge(np.zeros((600, 10, 4), np.uint8)).shape == (600, 10, 4)


def test_categorical_quicklook_uses_the_colormap_and_leaves_nodata_clear(tmp_path):
    labels = np.array([[0, 1], [1, 255]], np.uint8)
    path = write_raster(tmp_path / "l.tif", labels, nodata=255)
    colours = {0: (10, 20, 30, 255), 1: (200, 100, 0, 255)}
    quicklook(path, str(tmp_path / "q.png"), categorical=True, colormap=colours)
    img = np.asarray(Image.open(tmp_path / "q.png"))
    f = img.shape[0] // 2
    assert img.shape[0] >= MIN_SIDE
    assert tuple(img[0, 0]) == colours[0] and tuple(img[0, f]) == colours[1] and img[f, f, 3] == 0


def test_principal_components_separate_two_groups_on_the_first_component():
    rng = np.random.default_rng(0)
    data = rng.normal(0, 0.1, size=(16, 10, 10))
    data[:, :, 5:] += np.linspace(1, 2, 16)[:, None, None]       # right half differs along one axis
    rgb = principal_rgb(np.ma.masked_array(data), np.zeros((10, 10), bool))
    left, right = rgb[0, :, :5], rgb[0, :, 5:]
    assert max(left.max(), right.max()) > 0 and (np.sign(left.mean()) != np.sign(right.mean()))
    assert min(abs(left.mean()), abs(right.mean())) > 5 * max(left.std(), right.std())


def test_a_many_band_quicklook_reads_a_bounded_number_of_values(tmp_path, monkeypatch):
    """Feature rasters are read on COMPONENT_BANDS evenly spaced bands, decimated to
    MAX_VALUES values in all (what the driver decodes and holds does not grow with the
    feature width or the area), then enlarged for viewing."""
    from rayvit.report import quicklook as module

    assert module.small_shape(896, 896, 768) == (209, 209) and 209 * 209 * 768 <= module.MAX_VALUES
    assert module.small_shape(896, 896, 3) == (896, 896) and module.small_shape(4096, 2048, 1) == (1024, 512)
    spread = module.spread_bands(768, module.COMPONENT_BANDS)
    assert len(spread) == module.COMPONENT_BANDS and spread[0] == 1 and spread[-1] == 768
    assert module.spread_bands(5, module.COMPONENT_BANDS) == [1, 2, 3, 4, 5]
    monkeypatch.setattr(module, "MAX_VALUES", module.COMPONENT_BANDS * 20 * 20)
    data = np.random.default_rng(0).normal(size=(40, 80, 80)).astype(np.float32)
    quicklook(write_raster(tmp_path / "f.tif", data), str(tmp_path / "q.png"), components=True)
    factor = -(-MIN_SIDE // 20)
    assert np.asarray(Image.open(tmp_path / "q.png")).shape == (20 * factor, 20 * factor, 4)


def test_the_imagery_view_is_not_drawn_from_inputs_too_large_to_decode_at_commit(tmp_path):
    """The report's true-colour view decodes every input pixel in the committing process:
    above IMAGERY_MAX_PIXELS it is left out, and the reason is given."""
    from rayvit.report import quicklook as module

    data = np.random.default_rng(0).integers(0, 255, (3, 40, 40)).astype(np.uint8)
    path = write_raster(tmp_path / "in.tif", data)
    sidecar = {"inputs": [path], "bands": [1, 2, 3], "crs": "EPSG:32633", "width": 10, "height": 10,
               "transform": [40.0, 0.0, 500000.0, 0.0, -40.0, 4000000.0],
               "input_grid": {"width": 40, "height": 40}}
    assert module.imagery_view(sidecar, str(tmp_path / "a.jpg")) == (True, "")
    big = dict(sidecar, input_grid={"width": 2**13, "height": 2**13 + 1})
    shown, why = module.imagery_view(big, str(tmp_path / "b.jpg"))
    assert not shown and "67 Mpx" in why and not (tmp_path / "b.jpg").exists()


def test_the_imagery_view_of_a_mosaic_equals_that_of_the_same_pixels_in_one_file(tmp_path):
    """Each input fills only the part of the view it covers (a window of the view, not the
    whole view once per file); a file in another CRS is warped onto it; the first file wins."""
    from conftest import cut_into_four, seeded_image
    from rasterio.transform import from_origin

    from rayvit.report.quicklook import imagery_view
    data = seeded_image((3, 90, 130), seed=7)
    one = write_raster(tmp_path / "all.tif", data)
    parts = cut_into_four(tmp_path, data)
    # a file wholly outside the view, in another CRS: skipped without being read
    far = write_raster(tmp_path / "far.tif", seeded_image((3, 8, 8), seed=8), crs="EPSG:32632",
                       transform=from_origin(300000.0, 5000000.0, 10.0, 10.0))
    sidecar = {"bands": [1, 2, 3], "crs": "EPSG:32633", "width": 33, "height": 23,
               "transform": [40.0, 0.0, 500000.0, 0.0, -40.0, 4000000.0], "input_grid": {"width": 130, "height": 90}}
    assert imagery_view(dict(sidecar, inputs=[one]), str(tmp_path / "one.jpg")) == (True, "")
    assert imagery_view(dict(sidecar, inputs=[*parts, far]), str(tmp_path / "parts.jpg")) == (True, "")
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.jpg")) for n in ("one", "parts"))
    assert a.shape == b.shape and np.array_equal(a, b)


def test_the_imagery_view_of_many_files_reads_their_sources_index_as_one_mosaic(tmp_path, monkeypatch):
    """Where an encode kept a sources index of its inputs, GDAL reads the view through it (one
    dataset), with the same pixels and the gaps between files left blank."""
    from conftest import seeded_image
    from rasterio.transform import from_origin

    from rayvit.io import sources
    from rayvit.io.mosaic import open_mosaic
    from rayvit.report.quicklook import imagery_view
    monkeypatch.setenv("RAYVIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "INDEX_FILES", 1)          # an index from two files already
    data = seeded_image((3, 40, 120), seed=9)
    left = write_raster(tmp_path / "left.tif", data[:, :, :40])
    right = write_raster(tmp_path / "right.tif", data[:, :, 80:], from_origin(500800.0, 4000000.0, 10.0, 10.0))
    sidecar = {"bands": [1, 2, 3], "crs": "EPSG:32633", "width": 30, "height": 10, "inputs": [left, right],
               "transform": [40.0, 0.0, 500000.0, 0.0, -40.0, 4000000.0], "input_grid": {"width": 120, "height": 40}}
    assert imagery_view(sidecar, str(tmp_path / "files.jpg")) == (True, "")      # no index yet: file by file
    open_mosaic([left, right])                                                   # an encode's planning keeps one
    assert (tmp_path / "cache" / "sources").exists() and len(list((tmp_path / "cache" / "sources").iterdir())) == 1
    assert sources.index_path([left, right]).startswith(str(tmp_path / "cache"))
    assert imagery_view(sidecar, str(tmp_path / "index.jpg")) == (True, "")
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.jpg")) for n in ("files", "index"))
    assert np.array_equal(a, b) and (a[:, a.shape[1] // 2] == 255).all()        # the gap: blank (white)
