"""Which raster band feeds which model input: pure functions over band names.

A preset lists its input bands by name. The raster's selected bands are matched to them by
name (the file's band descriptions, ``--bands`` names, or a sensor given as ``--bands
sentinel-2``); unnamed bands are taken in order only when their count is the preset's.
Missing inputs are an error unless ``--band-fill`` says how to fill them; a wavelength-
conditioned model (DOFA) takes any bands, with their centre wavelengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..console import warn
from ..errors import InputError
from .presets import SENSORS, Preset, band_keys, canonical

FILLS = ("zero", "mean")


@dataclass(frozen=True)
class Binding:
    bands: tuple[int, ...]                     # raster bands read, in this order
    names: tuple[str | None, ...]              # their names
    channels: tuple[int, ...] | None = None    # model input fed by each band (None: in order)
    fill: tuple[float, ...] | None = None      # per model input, normalised (None: all fed)
    filled: tuple[str, ...] = ()               # preset bands that no raster band feeds
    wavelengths: tuple[float, ...] | None = None

    def record(self, preset: Preset | None, band_fill: str | None = None) -> list[dict]:
        """Sidecar rows: one per model input, naming the raster band that feeds it."""
        rows = []
        for k, (band, name) in enumerate(zip(self.bands, self.names)):
            row = {"input": self.channels[k] if self.channels else k, "raster_band": band,
                   "raster_name": name}
            if preset is not None and preset.bands:
                row["band"] = preset.bands[row["input"]].name
            if self.wavelengths:
                row["wavelength_um"] = self.wavelengths[k]
            rows.append(row)
        if preset is not None:
            rows += [{"input": i, "band": b.name, "fill": band_fill} for i, b in enumerate(preset.bands)
                     if b.name in self.filled]
        return sorted(rows, key=lambda r: r["input"])


def sensor_names(sensor: str, count: int, url: str) -> tuple[str, ...]:
    """``--bands sentinel-2``: the raster's bands are that sensor's, in its usual order."""
    bands = SENSORS[sensor].bands
    if count != len(bands):
        raise InputError(f"--bands {sensor}: {url!r} has {count} bands, but {sensor} has {len(bands)} "
                         f"({', '.join(b.name for b in bands)}); name the bands one by one instead.")
    return tuple(b.name for b in bands)


def wavelength_of(name: str | None, sensor: str | None = None) -> float | None:
    """Centre wavelength of a band name, looked up in the sensor tables (``sensor`` first)."""
    if not name:
        return None
    order = ([SENSORS[sensor]] if sensor in SENSORS else []) + list(SENSORS.values())
    return next((b.wavelength for s in order for b in s.bands if canonical(name) in band_keys(b)), None)


def describe_bands(bands: Sequence[int], names: Sequence[str | None]) -> str:
    return ", ".join(f"{b} {n or 'unnamed'}" for b, n in zip(bands, names))


def bind(preset: Preset, bands: Sequence[int], names: Sequence[str | None], url: str,
         explicit: bool, band_fill: str | None = None, wavelengths: Sequence[float] | None = None,
         sensor: str | None = None) -> Binding:
    """Match the selected raster bands to ``preset``'s inputs (see the module doc).

    ``explicit``: the user chose the bands (then every one must be a preset input); otherwise
    bands the preset does not take (a QA band, say) are left out.
    """
    bands, names = tuple(bands), tuple(names)
    listing = describe_bands(bands, names)
    if preset.wavelengths:
        if wavelengths is not None:
            if len(wavelengths) != len(bands):
                raise InputError(f"--wavelengths gives {len(wavelengths)} values for {len(bands)} bands "
                                 f"({listing}); give one centre wavelength (micrometres) per band.")
            return Binding(bands, names, wavelengths=tuple(map(float, wavelengths)))
        found = [wavelength_of(n, sensor) for n in names]
        if None in found:
            raise InputError(f"preset {preset.name!r} needs each band's centre wavelength, and band "
                             f"{bands[found.index(None)]} of {url!r} ({names[found.index(None)] or 'unnamed'}) "
                             f"is not a band a sensor table knows ({listing}). Give --wavelengths, e.g. "
                             "--wavelengths 0.665,0.56,0.49,0.842 (micrometres, one per band).")
        return Binding(bands, names, wavelengths=tuple(found))
    expected = ", ".join(b.name for b in preset.bands)
    if all(names):
        pairs = []
        for band, name in zip(bands, names):
            channel = next((i for i, b in enumerate(preset.bands) if canonical(name) in band_keys(b)), None)
            if channel is None:
                if explicit:
                    raise InputError(f"band {band} of {url!r} ({name}) is not an input of preset "
                                     f"{preset.name!r}, which takes {expected}; leave it out of --bands.")
                continue
            if any(c == channel for c, _, _ in pairs):
                raise InputError(f"two bands of {url!r} ({listing}) are named like the preset's "
                                 f"{preset.bands[channel].name}; select one with --bands.")
            pairs.append((channel, band, name))
    elif len(bands) == preset.in_chans:
        warn(f"the bands of {url!r} have no names; rayvit assumes they are preset {preset.name!r}'s "
             f"{expected}, in this order. Name them (--bands {preset.sensor} or band names) to be sure.")
        pairs = [(i, band, preset.bands[i].name) for i, band in enumerate(bands)]
    else:
        raise InputError(f"{url!r} has {len(bands)} bands ({listing}) without names, and preset "
                         f"{preset.name!r} takes {preset.in_chans}: {expected}. Say which is which with "
                         f"--bands (names, or a sensor such as --bands {preset.sensor}).")
    pairs.sort()
    fed = {c for c, _, _ in pairs}
    missing = tuple(b.name for i, b in enumerate(preset.bands) if i not in fed)
    if missing and band_fill is None:
        raise InputError(f"preset {preset.name!r} needs band(s) {', '.join(missing)}, which {url!r} does "
                         f"not have (its bands: {', '.join(n or 'unnamed' for n in names)}). Add them, or "
                         "fill them with --band-fill zero|mean (the features then rest on fewer bands).")
    channels = tuple(c for c, _, _ in pairs)
    binding = Binding(tuple(b for _, b, _ in pairs), tuple(n for _, _, n in pairs))
    if not missing:
        return binding
    fill = tuple(0.0 if band_fill == "mean" else
                 -preset.per_band(preset.mean, i) / preset.per_band(preset.std, i)
                 for i in range(preset.in_chans))
    return Binding(binding.bands, binding.names, channels, fill, missing)
