"""STAC catalogues as mosaics: items become sources, assets become bands.

A source is read from (:func:`load_items`):
- a STAC API (a landing page with a ``search`` link), searched through pystac-client;
- an ItemCollection, an Item, or a static Catalog/Collection (its child and item links are
  followed), as JSON, local or in object storage;
- a stac-geoparquet file (one row per item).
Static sources are filtered here with the same ``bbox``/``datetime``/``collections``/``query``
an API applies.

Assets are matched to the requested names by their key, or by the name or common name of
their ``eo:bands`` (STAC 1.0) or ``bands`` (1.1), loosely (``B4`` = ``B04``), so
``--assets red,green,blue`` works across collections (:func:`match_assets`). Each matched
band keeps the band's name (``B04``), which the presets' band matching then reads.

Several dates: ``composite`` orders the items, and the mosaic rule (the first item in that
order with a valid pixel wins, per pixel) makes the composite; :func:`by_date` groups them
for one product per date instead.
"""

from __future__ import annotations

import datetime as _dt
import json
import operator
import posixpath
import re
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..errors import InputError, RasterOpenError
from . import storage
from .mosaic import Source, describe

COMPOSITES = ("first", "last", "least-cloudy")
_OPS = {"<=": operator.le, ">=": operator.ge, "!=": operator.ne, "==": operator.eq, "=": operator.eq,
        "<": operator.lt, ">": operator.gt}
_API_OPS = {"<=": "lte", ">=": "gte", "!=": "neq", "==": "eq", "=": "eq", "<": "lt", ">": "gt"}


# --------------------------------------------------------------------------- reading

def resolve(base: str, href: str) -> str:
    """``href`` (absolute, or relative to the document ``base``) as a URL or path."""
    if storage.scheme(href) not in ("", "file") or href.startswith("/"):
        return href
    if storage.is_local(base):
        return posixpath.normpath(posixpath.join(posixpath.dirname(storage.local_path(base)), href))
    proto, rest = base.split("://", 1)
    return f"{proto}://" + posixpath.normpath(posixpath.join(posixpath.dirname(rest), href))


def _read_json(url: str, what: str = "STAC catalogue") -> dict:
    try:
        if storage.is_local(url):
            with open(storage.local_path(url)) as fh:
                return json.load(fh)
        with storage.fs_for(url).open(url, "rb") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        if storage.is_local(url):
            raise InputError(f"{what} {storage.redact(url)!r} does not exist; check the path.") from None
        raise InputError(f"{what} {storage.redact(url)!r} does not exist or cannot be reached; check the URL, "
                         f"the network and the credentials ({storage.credentials_hint(url)}).") from None
    except PermissionError:
        raise InputError(f"{what} {storage.redact(url)!r}: access was denied; check the credentials "
                         f"({storage.credentials_hint(url)}).") from None
    except ValueError as exc:
        raise InputError(f"{what} {storage.redact(url)!r} is not JSON ({exc}).") from None
    except OSError as exc:
        raise InputError(f"{what} {storage.redact(url)!r} cannot be reached ({type(exc).__name__}: {exc}); "
                         "check the URL, the network and the credentials.") from None


def _walk(doc: dict, base: str, seen: set) -> list[tuple[dict, str]]:
    """``(item, the URL it was read from)`` of a STAC document, following catalogue links."""
    kind = doc.get("type")
    if kind == "FeatureCollection":
        return [(f, base) for f in doc.get("features", [])]
    if kind == "Feature":
        return [(doc, base)]
    if kind in ("Catalog", "Collection"):
        out = []
        for link in doc.get("links", []):
            if link.get("rel") in ("child", "item"):
                url = resolve(base, link["href"])
                if url not in seen:
                    seen.add(url)
                    out += _walk(_read_json(url), url, seen)
        return out
    raise InputError(f"{storage.redact(base)!r} is not a STAC Item, ItemCollection, Catalog or Collection "
                     f"(type {kind!r}); give one of those, a stac-geoparquet file or a STAC API.")


def _geoparquet_items(url: str) -> list[tuple[dict, str]]:
    """Items of a stac-geoparquet file: one row each, properties as columns."""
    import pyarrow.parquet as pq

    try:
        fs = None if storage.is_local(url) else storage.fs_for(url)
        rows = pq.read_table(storage.local_path(url) if fs is None else url.split("://", 1)[1],
                             filesystem=fs).to_pylist()
    except (OSError, ValueError) as exc:
        raise InputError(f"STAC geoparquet {storage.redact(url)!r} could not be read ({exc}).") from None
    reserved = {"id", "collection", "assets", "geometry", "bbox", "links", "type", "stac_version",
                "stac_extensions"}
    items = []
    for row in rows:
        props = {k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, _dt.datetime) else v)
                 for k, v in row.items() if k not in reserved and v is not None}
        assets = {k: {f: x for f, x in a.items() if x is not None}
                  for k, a in (row.get("assets") or {}).items() if a}
        bbox = row.get("bbox")
        if isinstance(bbox, dict):
            bbox = [bbox["xmin"], bbox["ymin"], bbox["xmax"], bbox["ymax"]]
        items.append(({"type": "Feature", "id": row["id"], "collection": row.get("collection"),
                       "bbox": bbox, "properties": props, "assets": assets}, url))
    return items


def _is_api(doc: dict) -> bool:
    return any(link.get("rel") == "search" for link in doc.get("links", [])) or "conformsTo" in doc


def _api_query(query: Sequence[str]) -> dict:
    out: dict = {}
    for prop, op, value in map(_parse_query, query):
        out.setdefault(prop, {})[_API_OPS[op]] = value
    return out


def load_items(source: str, bbox: Sequence[float] | None = None, datetime: str | None = None,
               collections: Sequence[str] | None = None, query: Sequence[str] = ()) -> list[tuple[dict, str]]:
    """The items of ``source`` that match the filters, with the URL each was read from."""
    if str(source).lower().endswith((".parquet", ".geoparquet")):
        items = _geoparquet_items(source)
    else:
        doc = _read_json(source)
        if doc.get("type") == "Catalog" and _is_api(doc):
            return _search(source, bbox, datetime, collections, query)
        items = _walk(doc, source, {source})
    return [(item, base) for item, base in items if matches(item, bbox, datetime, collections, query)]


def _search(url, bbox, datetime, collections, query) -> list[tuple[dict, str]]:
    try:
        from pystac_client import Client
    except ImportError:
        from ..errors import MissingDependencyError
        raise MissingDependencyError(f"searching the STAC API {url!r} needs pystac-client: "
                                     "pip install 'rayvit[stac]'.") from None
    from pystac_client.conformance import ConformanceClasses

    try:
        client = Client.open(url)
        # an API without the query extension answers a query with nothing (or an error):
        # then --query is applied here, to what the rest of the search returns
        server_side = bool(query) and client.conforms_to(ConformanceClasses.QUERY)
        search = client.search(bbox=bbox, datetime=datetime, collections=collections,
                               query=_api_query(query) if server_side else None)
        found = search.item_collection_as_dict()
    except Exception as exc:   # pystac-client raises APIError, requests' and pystac's own errors
        raise InputError(f"STAC API search at {storage.redact(url)!r} failed ({type(exc).__name__}: "
                         f"{str(exc)[:300]}); check the URL, --collection and --query.") from None
    features = found.get("features", [])
    if query and not server_side:
        features = [f for f in features if matches(f, query=query)]
    return [(f, url) for f in features]


# --------------------------------------------------------------------------- filtering

def _parse_query(text: str) -> tuple[str, str, object]:
    m = re.fullmatch(r"\s*([\w:.\-]+)\s*(<=|>=|!=|==|=|<|>)\s*(.+?)\s*", text)
    if not m:
        raise InputError(f"--query {text!r}: write PROPERTY OP VALUE, e.g. 'eo:cloud_cover<20' "
                         f"(OP one of {' '.join(_OPS)}).")
    prop, op, raw = m.groups()
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw.strip("'\"")
    return prop, op, value


def _interval(text: str) -> tuple[_dt.datetime | None, _dt.datetime | None]:
    def parse(part: str, end: bool):
        if part in ("", ".."):
            return None
        try:
            t = _dt.datetime.fromisoformat(part.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"--datetime {text!r}: use RFC 3339 dates or date-times, a single one or "
                             "START/END with .. for an open end (e.g. 2023-06-01/2023-08-31).") from None
        if len(part) == 10 and end:          # a whole day
            t += _dt.timedelta(days=1) - _dt.timedelta(microseconds=1)
        return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)

    start, _, end = text.partition("/")
    return parse(start, False), parse(end if "/" in text else start, True)


def item_datetime(item: dict) -> _dt.datetime | None:
    p = item.get("properties", {})
    text = p.get("datetime") or p.get("start_datetime")
    if not text:
        return None
    t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def matches(item: dict, bbox=None, datetime=None, collections=None, query=()) -> bool:
    """Whether ``item`` passes the filters a STAC API search would apply."""
    if collections and item.get("collection") not in collections:
        return False
    if bbox is not None and item.get("bbox"):
        b = item["bbox"]
        x0, y0, x1, y1 = (b[0], b[1], b[3], b[4]) if len(b) == 6 else b
        if x1 < bbox[0] or x0 > bbox[2] or y1 < bbox[1] or y0 > bbox[3]:
            return False
    if datetime:
        lo, hi = _interval(datetime)
        t = item_datetime(item)
        if t is None or (lo and t < lo) or (hi and t > hi):
            return False
    for prop, op, value in map(_parse_query, query):
        have = item.get("properties", {}).get(prop)
        try:
            if have is None or not _OPS[op](have, value):
                return False
        except TypeError:
            return False
    return True


# --------------------------------------------------------------------------- assets -> bands

def _bands_of(asset: dict) -> list[dict]:
    return asset.get("eo:bands") or asset.get("bands") or []


def _band_names(band: dict) -> tuple[str, ...]:
    """A band's name, then its common name (STAC 1.0 ``common_name``, 1.1 ``eo:common_name``)."""
    return tuple(n for n in (band.get("name"), band.get("common_name"), band.get("eo:common_name")) if n)


def _find(assets: dict, name: str) -> tuple[str, int, str] | None:
    from .mosaic import canonical

    key = canonical(name)
    for akey, asset in assets.items():           # an asset key first ...
        if canonical(akey) == key:
            bands = _bands_of(asset)
            names = _band_names(bands[0]) if len(bands) == 1 else ()
            return akey, 1, (names or (akey,))[0]
    for akey, asset in assets.items():           # ... then a band's name or common name
        for i, band in enumerate(_bands_of(asset)):
            names = _band_names(band)
            if any(canonical(n) == key for n in names):
                return akey, i + 1, names[0]
    return None


def match_assets(item: dict, wanted: Sequence[str]) -> list[tuple[str, int, str]]:
    """``(asset key, 1-based band in its file, band name)`` for each requested name: an asset
    key, else the name/common name of one of an asset's bands (loosely: ``B4`` = ``B04``). A
    name no asset has is an error naming the item and listing its assets and their bands."""
    assets = item.get("assets", {})
    out = []
    for name in wanted:
        found = _find(assets, name)
        if found is None:
            listing = ", ".join(
                key + (f" ({', '.join(_band_names(b)[0] for b in _bands_of(a) if _band_names(b))})"
                       if _bands_of(a) else "") for key, a in assets.items())
            raise InputError(f"STAC item {item.get('id')!r} has no asset {name!r}; its assets: {listing or 'none'}. "
                             "Name assets by key or by band name/common name (--assets).")
        out.append(found)
    return out


def projected(item: dict, asset: dict, href: str) -> Source | None:
    """An asset's header from its STAC metadata, without opening the file: the projection
    extension's CRS (``proj:code``/``proj:epsg``/``proj:wkt2``/``proj:projjson``),
    ``proj:transform`` and ``proj:shape`` (on the asset, else the item), and each band's data
    type, nodata, scale and offset (``raster:bands``, or STAC 1.1 ``bands``). None when any of
    it is missing, or says what describing the file would refuse (a rotated grid), or types the
    bands differently: the file is then opened."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    from .mosaic import GDAL_TYPES

    props = item.get("properties", {})

    def get(key):
        return asset.get(key, props.get(key))

    shape, transform = get("proj:shape"), get("proj:transform")
    crs = (get("proj:wkt2") or get("proj:projjson") or get("proj:code")
           or (f"EPSG:{get('proj:epsg')}" if get("proj:epsg") else None))
    bands = asset.get("raster:bands") or asset.get("bands") or []
    if not (shape and transform and crs and bands) or len(shape) != 2 or len(transform) < 6:
        return None
    dtypes = {b.get("data_type") for b in bands}
    nodata = {repr(b.get("nodata")) for b in bands}
    if len(dtypes) != 1 or next(iter(dtypes)) not in GDAL_TYPES or len(nodata) != 1 or transform[1] or transform[3]:
        return None
    try:
        wkt = CRS.from_user_input(json.dumps(crs) if isinstance(crs, dict) else crs).to_wkt()
    except CRSError:
        return None
    value = bands[0].get("nodata")
    return Source(href, wkt, tuple(float(v) for v in transform[:6]), int(shape[1]), int(shape[0]), len(bands),
                  next(iter(dtypes)), None if value is None else float(value),
                  tuple((_band_names(b) or (None,))[0] for b in bands),
                  tuple(float(b.get("scale", 1.0)) for b in bands), tuple(float(b.get("offset", 0.0)) for b in bands))


def item_source(item: dict, base: str, wanted: Sequence[str], s3_endpoint: str | None = None) -> Source:
    """The mosaic source of a STAC item: one band per requested asset, each read from its own
    file (on its own grid); its grid is the finest asset's."""
    matched = match_assets(item, wanted)
    hrefs = [resolve(base, item["assets"][akey]["href"]) for akey, _, _ in matched]
    parts = []
    for (akey, band, _), href in zip(matched, hrefs):
        try:     # each href's own storage options: assets need not live where the catalogue does
            part = (projected(item, item["assets"][akey], href)
                    or describe(href, storage.storage_options(href, s3_endpoint)))
        except (InputError, RasterOpenError) as exc:
            raise type(exc)(f"STAC item {item.get('id')!r}, asset {akey!r}: {exc}") from None
        if not 1 <= band <= part.count:
            raise InputError(f"STAC item {item.get('id')!r}: asset {akey!r} ({href}) has {part.count} "
                             f"band(s), not the band {band} its metadata names.")
        parts.append(part)
    finest = min(parts, key=lambda p: abs(p.affine.a))
    props = item.get("properties", {})
    meta = (("id", item.get("id")), ("collection", item.get("collection")),
            ("datetime", props.get("datetime") or props.get("start_datetime")),
            ("cloud_cover", props.get("eo:cloud_cover")),
            ("assets", tuple((akey, storage.redact(href)) for (akey, _, _), href in zip(matched, hrefs))))
    dtype = np.result_type(*[np.dtype(p.dtype) for p in parts]).name
    return replace(finest, url=f"stac:{item.get('collection') or ''}/{item.get('id')}", count=len(parts),
                   dtype=dtype, nodata=None, names=tuple(name for _, _, name in matched), scales=(), offsets=(),
                   parts=tuple(parts), part_bands=tuple(band for _, band, _ in matched), item=meta)


def order(sources: Sequence[Source], composite: str) -> list[Source]:
    """Items in composite order (the mosaic takes, per pixel, the first valid one): ``first``
    oldest first, ``last`` newest first, ``least-cloudy`` lowest ``eo:cloud_cover`` first
    (items without one last; ties oldest first)."""
    if composite not in COMPOSITES:
        raise InputError(f"--composite {composite!r} is not valid; choose one of: {', '.join(COMPOSITES)}.")

    def when(s: Source) -> str:
        return dict(s.item).get("datetime") or ""

    if composite == "first":
        return sorted(sources, key=when)
    if composite == "last":
        return sorted(sources, key=when, reverse=True)
    return sorted(sources, key=lambda s: (dict(s.item).get("cloud_cover") is None,
                                         dict(s.item).get("cloud_cover") or 0, when(s)))


def by_date(sources: Sequence[Source]) -> dict[str, list[Source]]:
    """Items grouped by UTC date (``YYYY-MM-DD``), dates in order."""
    groups: dict[str, list[Source]] = {}
    for s in order(sources, "first"):
        groups.setdefault((dict(s.item).get("datetime") or "undated")[:10], []).append(s)
    return groups


def record(sources: Sequence[Source], grid) -> list[dict]:
    """What the sidecar says of the items used: id, collection, datetime, cloud cover, and
    each asset's href, resolution and whether it was warped onto the target grid."""
    from .mosaic import _aligned

    out = []
    for s in sources:
        meta = dict(s.item)
        out.append({"id": meta["id"], "collection": meta["collection"], "datetime": meta["datetime"],
                    "cloud_cover": meta["cloud_cover"],
                    "assets": [{"key": key, "href": href, "band": band, "name": name, "res": abs(p.affine.a),
                                "warped": not _aligned(p, grid)}
                               for (key, href), p, band, name in zip(meta["assets"], s.parts, s.part_bands,
                                                                     s.names)]})
    return out
