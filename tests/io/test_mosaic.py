"""Reading one or many rasters as one mosaic on one target grid (rayvit.io.mosaic)."""

import numpy as np
import pytest
from conftest import RES, UTM, X0, Y0, cut_into_four, seeded_image, write_raster
from rasterio.transform import from_origin

from rayvit.errors import InputError, RasterOpenError
from rayvit.io.mosaic import open_mosaic

def test_mosaic_of_four_files_reads_like_the_single_file(tmp_path):
    data = seeded_image((3, 90, 130))
    single = open_mosaic([write_raster(tmp_path / "all.tif", data)])
    parts = open_mosaic(cut_into_four(tmp_path, data))
    assert parts.grid == single.grid
    for window in [(0, 0, 90, 130), (30, 50, 20, 30), (-10, -10, 64, 64), (80, 120, 32, 32)]:
        a, va = single.read(*window)
        b, vb = parts.read(*window)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(va, vb)
    d, v = parts.read(0, 0, 90, 130)
    np.testing.assert_array_equal(d, data)
    assert v.all()


def test_glob_inputs_and_band_order(tmp_path):
    data = seeded_image((5, 60, 90))  # 5 bands: a 4-band uint8 GTiff reads band 4 as alpha
    cut_into_four(tmp_path, data)
    m = open_mosaic([str(tmp_path / "part_*.tif")], bands=(4, 1))
    assert len(m.sources) == 4
    d, _ = m.read(0, 0, 60, 90)
    np.testing.assert_array_equal(d, data[[3, 0]])


def test_nodata_and_padding_are_invalid(tmp_path):
    data = seeded_image((2, 20, 20))
    data[:, 5, 5] = 255
    m = open_mosaic([write_raster(tmp_path / "n.tif", data, nodata=255)])
    d, v = m.read(-2, -2, 24, 24)
    assert not v[7, 7] and v[2, 2] and not v[0].any() and not v[:, 0].any()
    assert v.sum() == 20 * 20 - 1


def test_other_crs_is_warped_onto_the_first_files_grid(tmp_path):
    from rasterio.warp import transform as warp_points
    data = seeded_image((1, 60, 60))
    first = write_raster(tmp_path / "utm.tif", data)
    # the same place in EPSG:4326, at roughly the same resolution
    (lon,), (lat,) = warp_points(UTM, "EPSG:4326", [X0 + 600], [Y0 - 300])
    other = write_raster(tmp_path / "geo.tif", np.full((1, 50, 50), 7, np.uint8),
                         from_origin(lon, lat, 0.0001, 0.0001), crs="EPSG:4326")
    m = open_mosaic([first, other])
    assert m.grid.res == (10.0, 10.0) and "UTM zone 33N" in m.grid.crs
    d, v = m.read(0, 0, m.grid.height, m.grid.width)
    assert v.sum() > 60 * 60                       # the warped file adds pixels east of the first
    np.testing.assert_array_equal(d[:, :60, :60][:, v[:60, :60]], data[:, v[:60, :60]])  # first wins
    assert (d[0, 30:, 60:][v[30:, 60:]] == 7).all()


def test_extent_is_snapped_outward_to_the_grid(tmp_path):
    m = open_mosaic([write_raster(tmp_path / "a.tif", seeded_image((1, 100, 100)))],
                    extent=(X0 + 105, Y0 - 503, X0 + 311, Y0 - 201))
    assert m.grid.bounds == (X0 + 100, Y0 - 510, X0 + 320, Y0 - 200)
    assert (m.grid.width, m.grid.height) == (22, 31)


def test_bad_inputs_name_the_file_and_the_fix(tmp_path):
    good = write_raster(tmp_path / "ok.tif", seeded_image((3, 10, 10)))
    with pytest.raises(RasterOpenError, match="missing.tif.*does not exist"):
        open_mosaic([str(tmp_path / "missing.tif")])
    with pytest.raises(RasterOpenError, match="matches no file"):
        open_mosaic([str(tmp_path / "nothing_*.tif")])
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(RasterOpenError, match="corrupt.tif.*not a readable raster"):
        open_mosaic([str(corrupt)])
    nocrs = write_raster(tmp_path / "nocrs.tif", seeded_image((1, 10, 10)), crs=None)
    with pytest.raises(InputError, match="nocrs.tif.*has no CRS"):
        open_mosaic([nocrs])
    with pytest.raises(InputError, match="band 4 is out of range.*valid: 1..3"):
        open_mosaic([good], bands=(1, 4))
    with pytest.raises(InputError, match="lies outside the data"):
        open_mosaic([good], extent=(0, 0, 10, 10))


def test_crs_and_res_override_the_target_grid(tmp_path):
    from rasterio.crs import CRS
    path = write_raster(tmp_path / "a.tif", seeded_image((1, 100, 100)))
    coarse = open_mosaic([path], res=20.0)
    assert coarse.grid.res == (20.0, 20.0) and (coarse.grid.width, coarse.grid.height) == (50, 50)
    d, v = coarse.read(0, 0, 50, 50)
    assert v.all()
    geo = open_mosaic([path], crs="EPSG:4326")
    assert CRS.from_wkt(geo.grid.crs) == CRS.from_epsg(4326)
    x0, y0, x1, y1 = geo.grid.bounds
    assert 14.9 < x0 < 15.1 and 36.0 < y0 < 36.2  # UTM 33N (500 km E, 4000 km N) is near 15 E, 36 N
    d, v = geo.read(0, 0, geo.grid.height, geo.grid.width)
    assert v.mean() > 0.9  # warped, not empty


def test_warnings_the_user_can_act_on_are_printed_once_in_plain_words(tmp_path, capsys):
    import warnings

    # the user's own RGBA raster (GDAL's default for 4 bands of uint8) with a nodata value
    rgba = write_raster(tmp_path / "rgba.tif", seeded_image((4, 32, 32), high=250), nodata=0)
    # and a second file 20 m in another UTM zone: warped onto the first one's grid
    other = write_raster(tmp_path / "other.tif", seeded_image((4, 16, 16)), crs="EPSG:32632",
                         transform=from_origin(850000.0, Y0, 20.0, 20.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # rasterio's own NodataShadowWarning stays quiet
        for _ in range(2):
            mosaic = open_mosaic([rgba, other])
            mosaic.read(0, 0, 32, 32)
    err = capsys.readouterr().err.splitlines()
    shadow = [line for line in err if "nodata value (0) and an alpha band" in line]
    warped = [line for line in err if "not on the target grid" in line]
    assert len(shadow) == 1 and rgba in shadow[0] and "gdal_edit.py -unsetnodata" in shadow[0]
    assert len(warped) == 1 and "1 of 2 input rasters" in warped[0] and other in warped[0]
    assert "EPSG:32632, 20 x 20" in warped[0] and "nearest-neighbour" in warped[0]
    assert len(err) == 2


def test_tile_chunks_cut_a_window_along_the_files_tiles_only_when_they_do_not_fit():
    from rasterio.windows import Window

    from rayvit.io.mosaic import tile_chunks

    window = Window(100, 40, 416, 300)                        # cols 100..516, rows 40..340
    assert tile_chunks(window, (256, 256), 10, 2**20) == [window]          # 6 small tiles fit
    chunks = tile_chunks(window, (256, 256), 100 * 2**20, 256 * 2**20)    # 6 x 100 MB do not
    assert len(chunks) == 6
    covered = np.zeros((340, 516), int)
    for w in chunks:
        r, c, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
        assert r // 256 == (r + h - 1) // 256 and c // 256 == (c + wd - 1) // 256   # inside one tile
        covered[r:r + h, c:c + wd] += 1
    assert (covered[40:, 100:] == 1).all() and covered.sum() == 416 * 300
    assert tile_chunks(Window(0, 0, 256, 256), (256, 256), 10**12, 1) == [Window(0, 0, 256, 256)]


def test_a_window_read_tile_by_tile_equals_one_read(tmp_path, monkeypatch):
    """With a cache too small for the window's tiles the mosaic reads tile by tile: same
    pixels and mask as one read."""
    import rasterio

    data = np.random.default_rng(0).normal(size=(40, 70, 90)).astype("float32")
    data[:, 5:9, 60:70] = np.nan
    path = write_raster(tmp_path / "f.tif", data, nodata=np.nan, tiled=True, blockxsize=16, blockysize=16)
    m = open_mosaic([path])
    whole = m.read(-3, 7, 60, 80)
    monkeypatch.setenv("GDAL_CACHEMAX", "0")                  # every window is cut along its tiles
    cut = m.read(-3, 7, 60, 80)
    np.testing.assert_array_equal(whole[0], cut[0])
    np.testing.assert_array_equal(whole[1], cut[1])
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(cut[0][:, 3:, :], np.nan_to_num(ds.read(window=((0, 57), (7, 87))), nan=0.0))
    assert not cut[1][3 + 5, 60 - 7] and cut[1][3, 0]


@pytest.mark.parametrize("dtype, nodata", [("uint16", 0), ("uint8", 255), ("int16", -9999), ("float32", np.nan),
                                           ("float32", -3.4e38), ("float64", 1e-3),
                                           ("uint16", 2.5), ("float32", None)])
def test_validity_equals_gdals_masked_read(tmp_path, dtype, nodata):
    """The plain read + one comparison (:func:`read_valid`) gives GDAL's masked read's
    pixels and validity, for every kind of nodata value (NaN, one rounded to float32, one an
    fraction in an integer type, none)."""
    import rasterio
    from rasterio.windows import Window

    from rayvit.io.mosaic import read_valid

    rng = np.random.default_rng(3)
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    data = rng.uniform(max(info.min, -100), min(info.max, 100), (3, 40, 50)).astype(dtype)
    holds = nodata is not None and (np.dtype(dtype).kind == "f" or info.min <= nodata <= info.max)
    if holds:
        data[1, 3:7, 4:9] = nodata       # one band only: the pixel is invalid (float32: rounded)
        data[:, 20, 20] = nodata
    path = write_raster(tmp_path / "n.tif", data, nodata=nodata, tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path) as ds:
        masked = ds.read((1, 2, 3), window=Window(2, 1, 45, 37), masked=True)
        pixels, valid = read_valid(ds, (1, 2, 3), Window(2, 1, 45, 37))
    np.testing.assert_array_equal(pixels, np.ma.getdata(masked))
    np.testing.assert_array_equal(valid, ~np.ma.getmaskarray(masked).any(axis=0))
    if holds:
        assert not valid[20 - 1, 20 - 2] and not valid[4 - 1, 5 - 2]      # the test did set nodata


def test_validity_from_an_alpha_band_or_an_internal_mask(tmp_path):
    """Rasters whose validity is not a nodata value keep GDAL's masked read."""
    import rasterio

    data = seeded_image((4, 30, 40))
    data[3] = 255
    data[3, 5:9, 10:20] = 0
    alpha = write_raster(tmp_path / "alpha.tif", data, photometric="rgb", alpha="yes")
    m = open_mosaic([alpha], bands=(1, 2, 3))
    _, valid = m.read(0, 0, 30, 40)
    assert not valid[5:9, 10:20].any() and valid.sum() == 30 * 40 - 40
    path = write_raster(tmp_path / "mask.tif", data[:3])
    with rasterio.open(path, "r+") as ds:
        mask = np.full((30, 40), 255, np.uint8)
        mask[0, :7] = 0
        ds.write_mask(mask)
    _, valid = open_mosaic([path]).read(0, 0, 30, 40)
    assert not valid[0, :7].any() and valid.sum() == 30 * 40 - 7


def test_the_first_bad_input_in_the_given_order_is_the_one_named(tmp_path):
    """Headers are read in parallel; the error is still the first bad file's, as listed."""
    good = write_raster(tmp_path / "ok.tif", seeded_image((3, 10, 10)))
    nocrs = write_raster(tmp_path / "nocrs.tif", seeded_image((3, 10, 10)), crs=None)
    missing = str(tmp_path / "missing.tif")
    with pytest.raises(RasterOpenError, match="missing.tif"):
        open_mosaic([good, missing, nocrs])
    with pytest.raises(InputError, match="nocrs.tif.*has no CRS"):
        open_mosaic([good, nocrs, missing])


def test_a_window_finds_its_sources_through_an_r_tree_and_a_task_carries_only_those(tmp_path):
    import pickle

    from rayvit.io import mosaic as mosaic_io
    # 5 x 5 files of 20 x 30 px, every other one shifted by 7 px so that neighbours overlap
    # with other values: the first file listed must still win where they do
    rng = np.random.default_rng(3)
    paths = []
    for i in range(5):
        for j in range(5):
            dx = 7 * RES if (i + j) % 2 else 0.0
            paths.append(write_raster(tmp_path / f"f{i}{j}.tif", rng.integers(1, 250, (2, 20, 30), dtype=np.uint8),
                                      from_origin(X0 + j * 30 * RES + dx, Y0 - i * 20 * RES, RES, RES)))
    mosaic = open_mosaic(paths)
    assert len(mosaic.sources) > mosaic_io.INDEX_FROM

    def scan(bounds):       # every source, as before the index
        x0, y0, x1, y1 = bounds
        return [s for s in mosaic.sources if (b := mosaic_io._bounds_in(s, mosaic.grid.crs))[0] < x1
                and b[2] > x0 and b[1] < y1 and b[3] > y0]

    windows = [(r, c, h, w) for r in range(-10, 100, 17) for c in range(-10, 160, 23) for h, w in ((8, 8), (25, 40))]
    for window in windows:
        expected = scan(mosaic.grid.window_bounds(*window))
        assert mosaic._sources_in(mosaic.grid.window_bounds(*window)) == expected
        part = mosaic.subset(*window)
        assert part.sources == tuple(expected) and part.grid == mosaic.grid
        a, va = mosaic.read(*window)
        b, vb = pickle.loads(pickle.dumps(part)).read(*window)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(va, vb)
    assert "_index" in mosaic.__dict__ and "_index" not in pickle.loads(pickle.dumps(mosaic)).__dict__
    assert max(len(mosaic.subset(*w).sources) for w in windows) <= 9 < len(mosaic.sources) == 25


def test_a_crs_without_an_epsg_code_is_named_and_warped(tmp_path, capsys):
    """A WKT-only UTM raster (a custom datum: no EPSG code) with a second file at 20 m, which
    is warped onto it: the warning names both CRSs in words, and the read works."""
    from rayvit.io.mosaic import crs_name
    wkt = ('PROJCS["UTM 33N on a local datum",GEOGCS["local",DATUM["local datum",SPHEROID["GRS 1980",6378137,'
           '298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
           'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],'
           'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1]]')
    a = write_raster(tmp_path / "a.tif", seeded_image((3, 40, 40), seed=1), crs=wkt)
    b = write_raster(tmp_path / "b.tif", seeded_image((3, 20, 20), seed=2), crs=wkt,
                     transform=from_origin(X0 + 400, Y0, 20.0, 20.0))
    assert crs_name(wkt) == "'UTM 33N on a local datum' (no EPSG code)" and crs_name(UTM) == UTM
    mosaic = open_mosaic([a, b])
    data, valid = mosaic.read(0, 0, 40, 80)
    assert valid[:, :40].all() and valid[:, 40:].all()
    coarse = seeded_image((3, 20, 20), seed=2)          # nearest neighbour: each 20-m pixel is 2 x 2 here
    np.testing.assert_array_equal(data[:, :, 40:], coarse.repeat(2, axis=1).repeat(2, axis=2))
    np.testing.assert_array_equal(data[:, :, :40], seeded_image((3, 40, 40), seed=1))
    err = capsys.readouterr().err
    assert "1 of 2 input rasters are not on the target grid ('UTM 33N on a local datum' (no EPSG code), 10 x 10)" in err
    assert "'UTM 33N on a local datum' (no EPSG code), 20 x 20" in err


@pytest.mark.parametrize("nodata", [None, 0])
def test_many_files_in_a_window_are_read_as_one_vrt_with_the_same_pixels_and_validity(tmp_path, monkeypatch, nodata):
    """From VRT_FROM files in a window, GDAL reads them as one VRT (it opens them in C): the
    pixels and validity equal the file-by-file read exactly, with nodata pixels, a missing
    file and windows past the edge; overlapping files are still read file by file."""
    from rayvit.io import mosaic as mosaic_io

    rng = np.random.default_rng(5)
    data = rng.integers(1, 60000, (2, 66, 78)).astype(np.uint16)
    if nodata is not None:
        data[:, rng.random((66, 78)) < 0.05] = nodata
    paths = [write_raster(tmp_path / f"f{i}{j}.tif", data[:, i * 11:(i + 1) * 11, j * 13:(j + 1) * 13],
                          from_origin(X0 + j * 13 * RES, Y0 - i * 11 * RES, RES, RES), nodata=nodata)
             for i in range(6) for j in range(6) if (i, j) != (2, 3)]
    mosaic = open_mosaic(paths)
    windows = [(0, 0, 66, 78), (-5, -7, 80, 90), (3, 4, 50, 60)]

    def many(m, window):
        return m._read_many(m._sources_in(m.grid.window_bounds(*window)), *window)

    assert all(many(mosaic, w) is not None for w in windows)
    fast = [mosaic.read(*w) for w in windows]
    overlapping = open_mosaic(paths + [write_raster(tmp_path / "over.tif", data[:, :20, :20],
                                                    from_origin(X0 + 5 * RES, Y0 - 5 * RES, RES, RES), nodata=nodata)])
    assert many(overlapping, windows[0]) is None
    monkeypatch.setattr(mosaic_io, "VRT_FROM", 10**9)
    for window, (d, v) in zip(windows, fast):
        d2, v2 = mosaic.read(*window)
        np.testing.assert_array_equal(d, d2)
        np.testing.assert_array_equal(v, v2)
    d, v = fast[0]
    expected = np.ones((66, 78), bool)
    expected[22:33, 39:52] = False                                         # the missing file
    if nodata is not None:
        expected &= (data != nodata).all(axis=0)
    np.testing.assert_array_equal(v, expected)
    assert (d[:, ~v] == 0).all()


def test_gdal_looks_for_sidecar_files_only_in_folders_that_hold_some(tmp_path):
    """A folder holding a sidecar of an input (here ``a.tif.aux.xml`` setting a nodata value)
    is read as GDAL reads it; in a folder holding none GDAL is spared its probes (it listed the
    folder on every open), with the same pixels."""
    from rayvit.io.mosaic import survey_folders

    data = seeded_image((2, 16, 16), seed=3)
    data[:, 2, 3] = 7
    (tmp_path / "side").mkdir()
    (tmp_path / "bare").mkdir()
    side = write_raster(tmp_path / "side" / "a.tif", data)
    bare = write_raster(tmp_path / "bare" / "a.tif", data)
    (tmp_path / "bare" / "notes.txt").write_text("not a sidecar: another name")
    (tmp_path / "side" / "a.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><NoDataValue>7</NoDataValue></PAMRasterBand>'
        '<PAMRasterBand band="2"><NoDataValue>7</NoDataValue></PAMRasterBand></PAMDataset>')
    assert survey_folders([side, bare], None) == ({str(tmp_path / "bare")}, {})    # no versions: files
    a, b = open_mosaic([side]), open_mosaic([bare])
    assert a.sources[0].sidecars and a.sources[0].nodata == 7
    assert not b.sources[0].sidecars and b.sources[0].nodata is None
    (da, va), (db, vb) = a.read(0, 0, 16, 16), b.read(0, 0, 16, 16)
    np.testing.assert_array_equal(va, ~(data == 7).any(axis=0))
    assert not va[2, 3] and vb.all()
    np.testing.assert_array_equal(db, data)
