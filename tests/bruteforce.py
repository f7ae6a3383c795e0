"""The encode's maths by brute force, for the tests to compare with: every tile's features
painted onto the feature grid, then merged, with no blocks, batches or devices."""

import itertools
import math

import numpy as np

from rayvit.encode import merge


def tiled_features(data, valid, size, stride, f, method):
    """Brute force: paint every tile's patch-mean + in-tile position features, then merge."""
    c, h, w = data.shape
    fh, fw = math.ceil(h / f), math.ceil(w / f)
    sy, sx = size
    ty, tx = stride
    ny = 1 + max(0, math.ceil((h - sy) / ty))
    nx = 1 + max(0, math.ceil((w - sx) / tx))
    pad = np.zeros((c, fh * f, fw * f)), np.zeros((fh * f, fw * f), bool)
    pad[0][:, :h, :w] = data * valid
    pad[1][:h, :w] = valid
    pm = pad[0].reshape(c, fh, f, fw, f).mean(axis=(2, 4))
    pv = pad[1].reshape(fh, f, fw, f).any(axis=(1, 3))
    contrib = {}
    my, mx = (sy // f - ty // f) // 2, (sx // f - tx // f) // 2
    for iy, ix in itertools.product(range(ny), range(nx)):
        for a, b in itertools.product(range(sy // f), range(sx // f)):
            gy, gx = iy * ty // f + a, ix * tx // f + b
            if gy >= fh or gx >= fw or not pv[gy, gx]:
                continue
            if method == "center" and not (
                    (iy == 0 or a >= my) and (iy == ny - 1 or a < my + ty // f)
                    and (ix == 0 or b >= mx) and (ix == nx - 1 or b < mx + tx // f)):
                continue
            contrib.setdefault((gy, gx), []).append((iy * nx + ix, a, b))
    out = np.full((c + 2, fh, fw), np.nan)
    for (gy, gx), items in contrib.items():
        items.sort()
        pos = np.array([[a, b] for _, a, b in items], float)
        out[:c, gy, gx] = pm[:, gy, gx]
        if method in ("hann", "gaussian"):       # weighted by the window at each item's place in its tile
            window = getattr(merge, method)
            wy, wx = window(sy // f), window(sx // f)
            values = np.concatenate([np.broadcast_to(pm[:, gy, gx].astype(np.float32), (len(items), c)),
                                     pos.astype(np.float32)], axis=1)
            total, weights = np.zeros(c + 2), 0.0
            for (_, a, b), v in zip(items, values):
                weight = wy[a] * wx[b]
                total += weight * v.astype(np.float64)
                weights += weight
            out[:, gy, gx] = total / weights
            continue
        out[:c, gy, gx] = pm[:, gy, gx]
        out[c:, gy, gx] = {"center": pos[0], "first": pos[0], "last": pos[-1], "mean": pos.mean(0),
                           "min": pos.min(0), "max": pos.max(0)}[method]
    return out.astype(np.float32)
