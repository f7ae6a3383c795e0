"""Remote-sensing encoder presets and sensor band tables: plain data, no torch.

A preset names an architecture, where its weights come from, the bands it was trained on (by
name, with centre wavelengths, in input order), how inputs are scaled and normalised, and the
patch size and feature width it gives. ``rayvit models`` prints this table; ``--model NAME``
selects a preset (any other name is a timm model, as before).

Input scaling: the model sees ``(DN / scale - mean) / std`` per band, with ``scale``, ``mean``
and ``std`` as listed (one value applies to every band).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from ..io.mosaic import canonical


@dataclass(frozen=True)
class Band:
    name: str
    wavelength: float                 # centre wavelength, micrometres
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sensor:
    name: str
    bands: tuple[Band, ...]

    def band(self, name: str) -> Band | None:
        key = canonical(name)
        return next((b for b in self.bands if key in band_keys(b)), None)


def _bands(*rows) -> tuple[Band, ...]:
    return tuple(Band(n, w, tuple(a.split())) for n, w, a in rows)


SENSORS = {s.name: s for s in (
    Sensor("sentinel-2", _bands(
        ("B01", 0.443, "coastal"), ("B02", 0.490, "blue"), ("B03", 0.560, "green"),
        ("B04", 0.665, "red"), ("B05", 0.705, "rededge1"), ("B06", 0.740, "rededge2"),
        ("B07", 0.783, "rededge3"), ("B08", 0.842, "nir"), ("B8A", 0.865, "nir08 narrownir"),
        ("B09", 0.945, "watervapor"), ("B10", 1.375, "cirrus"), ("B11", 1.610, "swir16 swir1"),
        ("B12", 2.190, "swir22 swir2"))),
    Sensor("sentinel-2-l2a", ()),     # filled below: Sentinel-2 without B10 (12 bands)
    Sensor("landsat-oli", _bands(
        ("B1", 0.443, "coastal"), ("B2", 0.482, "blue"), ("B3", 0.561, "green"), ("B4", 0.655, "red"),
        ("B5", 0.865, "nir"), ("B6", 1.609, "swir16 swir1"), ("B7", 2.201, "swir22 swir2"),
        ("B8", 0.590, "pan"), ("B9", 1.373, "cirrus"), ("B10", 10.895, "tirs1 lwir11"),
        ("B11", 12.005, "tirs2 lwir12"))),
    Sensor("landsat-oli-sr", ()),     # filled below: Landsat 8/9 surface reflectance, B1-B7
    Sensor("naip", _bands(("R", 0.635, "red"), ("G", 0.555, "green"), ("B", 0.465, "blue"),
                          ("N", 0.845, "nir"))),
    Sensor("rgb", _bands(("R", 0.665, "red"), ("G", 0.560, "green"), ("B", 0.490, "blue"))),
)}
SENSORS["sentinel-2-l2a"] = Sensor("sentinel-2-l2a", tuple(b for b in SENSORS["sentinel-2"].bands
                                                            if b.name != "B10"))
SENSORS["landsat-oli-sr"] = Sensor("landsat-oli-sr", SENSORS["landsat-oli"].bands[:7])


def band_keys(band: Band) -> set[str]:
    return {canonical(band.name), *map(canonical, band.aliases)}


def sensor_bands(sensor: str, names: tuple[str, ...]) -> tuple[Band, ...]:
    s = SENSORS[sensor]
    return tuple(s.band(n) for n in names)


@dataclass(frozen=True)
class Preset:
    name: str
    sensor: str
    architecture: str                 # "timm:<name>", "torchvision:<name>", "torchgeo:<name>"
    source: str                       # where the weights come from, in words
    url: str | None                   # weights file fetched when pretrained (None: timm's hub)
    bands: tuple[Band, ...]           # model inputs, in order (empty: any bands, wavelengths)
    patch: int                        # input pixels per feature pixel at the default layer
    width: int                        # feature channels at the default layer
    scale: tuple[float, ...] = (1.0,)
    mean: tuple[float, ...] | None = (0.0,)   # None: no preset normalisation (stats)
    std: tuple[float, ...] = (1.0,)
    converter: str = "timm"           # key layout of the published checkpoint
    extra: str | None = None          # optional dependency group needed ("torchgeo")
    wavelengths: bool = False         # wavelength-conditioned: any band subset
    notes: str = ""
    options: dict = field(default_factory=dict, compare=False)

    @property
    def in_chans(self) -> int:
        return len(self.bands)

    def per_band(self, values: tuple[float, ...], index: int) -> float:
        return float(values[index % len(values)])


_S2 = sensor_bands("sentinel-2", ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                  "B09", "B10", "B11", "B12"))
_TG = "https://hf.co/torchgeo"
_SSL4EO = dict(sensor="sentinel-2", architecture="timm:vit_small_patch16_224", bands=_S2, patch=16,
               width=384, scale=(10000.0,), converter="ssl4eo",
               notes="Sentinel-2 L1C, 13 bands, reflectance = DN / 10000 (SSL4EO-S12).")

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("ssl4eo-s2-vit-s16-dino", source="TorchGeo ViTSmall16_Weights.SENTINEL2_ALL_DINO",
           url=f"{_TG}/vit_small_patch16_224_sentinel2_all_dino/resolve/5b41dd418a79de47ac9f5be3e035405a83818a62/"
               "vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth",
           **_SSL4EO),
    Preset("ssl4eo-s2-vit-s16-moco", source="TorchGeo ViTSmall16_Weights.SENTINEL2_ALL_MOCO",
           url=f"{_TG}/vit_small_patch16_224_sentinel2_all_moco/resolve/1cb683f6c14739634cdfaaceb076529adf898c74/"
               "vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth",
           **_SSL4EO),
    Preset("ssl4eo-s2-vit-s16-mae", source="TorchGeo ViTSmall16_Weights.SENTINEL2_ALL_MAE",
           url="https://huggingface.co/wangyi111/SSL4EO-S12/resolve/75c72195d35201dc1fb210818993518c25da566b/"
               "B13_vits16_mae_ep99_enc.pth",
           **_SSL4EO),
    Preset("ssl4eo-l-oli-sr-vit-s16-moco", sensor="landsat-oli-sr",
           architecture="timm:vit_small_patch16_224",
           source="TorchGeo ViTSmall16_Weights.LANDSAT_OLI_SR_MOCO",
           url=f"{_TG}/ssl4eo_landsat/resolve/1c88bb51b6e17a21dde5230738fa38b74bd74f76/"
               "vits16_landsat_oli_sr_moco-c9b8898d.pth",
           bands=SENSORS["landsat-oli-sr"].bands, patch=16, width=384, scale=(255.0,),
           converter="ssl4eo",
           notes="Landsat 8/9 OLI surface reflectance B1-B7 as SSL4EO-L's 8-bit rescaled values "
                 "(0-255); with Collection-2 DN give --scale."),
    Preset("satlas-naip-swinb", sensor="naip", architecture="torchvision:swin_v2_b",
           source="TorchGeo Swin_V2_B_Weights.NAIP_RGB_SI_SATLAS (SatlasPretrain)",
           url=f"{_TG}/satlas/resolve/081d6607431bf36bdb59c223777cbb267131b8f2/aerial_swinb_si-e4169eb1.pth",
           bands=sensor_bands("naip", ("R", "G", "B")), patch=32, width=1024, scale=(255.0,),
           converter="satlas",
           notes="NAIP / aerial RGB, 8-bit. A hierarchical Swin: --layer 0..3 picks a stage "
                 "(patch 4, 8, 16, 32 px; width 128, 256, 512, 1024)."),
    Preset("satlas-s2-swinb", sensor="sentinel-2", architecture="torchvision:swin_v2_b",
           source="TorchGeo Swin_V2_B_Weights.SENTINEL2_SI_MS_SATLAS (SatlasPretrain)",
           url=f"{_TG}/satlas/resolve/081d6607431bf36bdb59c223777cbb267131b8f2/sentinel2_swinb_si_ms-fe22a12c.pth",
           bands=sensor_bands("sentinel-2", ("B04", "B03", "B02", "B05", "B06", "B07", "B08", "B11", "B12")),
           patch=32, width=1024, scale=(255.0, 255.0, 255.0) + (8160.0,) * 6, converter="satlas",
           notes="Sentinel-2 L1C: B04/B03/B02 as the 8-bit true-colour image (TCI), the others "
                 "DN / 8160, as SatlasPretrain. --layer 0..3 picks a Swin stage."),
    Preset("dofa-vit-b16", sensor="any", architecture="torchgeo:dofa_base_patch16_224",
           source="TorchGeo DOFABase16_Weights.DOFA_MAE",
           url=f"{_TG}/dofa/resolve/b8db318b64a90b9e085ec04ba8851233c5893666/dofa_base_patch16_224-a0275954.pth",
           bands=(), patch=16, width=768, mean=None, converter="dofa", extra="torchgeo",
           wavelengths=True,
           notes="Wavelength-conditioned: any bands, with --wavelengths (micrometres) or band "
                 "names a sensor table knows. Normalised with sampled statistics."),
    Preset("dinov3-sat-vit-l16", sensor="rgb", architecture="timm:vit_large_patch16_dinov3.sat493m",
           source="timm vit_large_patch16_dinov3.sat493m (Meta DINOv3, SAT-493M Maxar imagery)",
           url=None, bands=SENSORS["rgb"].bands, patch=16, width=1024, scale=(255.0,),
           mean=(0.430, 0.411, 0.296), std=(0.213, 0.156, 0.143),
           notes="Very-high-resolution RGB, 8-bit."),
)}


def find(name: str) -> Preset | None:
    return PRESETS.get(name)


def close_names(name: str, n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, list(PRESETS), n=n, cutoff=0.4)
