"""Plain value types describing a model: no torch, no timm (cheap to import anywhere)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ModelError

RESIZE_MODES = ("none", "model")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the same model in another process (an encoder actor)."""

    name: str
    in_chans: int
    tile_size: tuple[int, int]
    pretrained: bool = True
    weights: str | None = None
    layer: int = -1
    resize: str = "none"
    preset: str | None = None                       # a rayvit preset (``name`` is then its name)
    channels: tuple[int, ...] | None = None         # model input fed by each raster band
    fill: tuple[float, ...] | None = None           # per model input, normalised, when not fed
    wavelengths: tuple[float, ...] | None = None    # micrometres, per raster band (DOFA)

    @property
    def model_chans(self) -> int:
        """Channels the model itself takes (more than ``in_chans`` when bands are filled)."""
        return len(self.fill) if self.fill is not None else self.in_chans

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelInfo:
    """What the plan needs to know about a model, read off a built instance."""

    num_features: int
    reduction: int
    model_input: tuple[int, int]
    layer: int
    n_layers: int
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    weights_sha256: str | None = None

    def footprint(self, spec: ModelSpec) -> tuple[int, int]:
        """Input pixels per feature pixel along (rows, cols); may be fractional -> error."""
        if spec.resize == "none":
            return (self.reduction, self.reduction)
        out = []
        for size, model_px in zip(spec.tile_size, self.model_input):
            grid = model_px // self.reduction
            if size % grid:
                raise ModelError(
                    f"with --resize model, tile size {size} must be a multiple of the model's "
                    f"patch grid ({model_px}/{self.reduction} = {grid} patches); nearest valid "
                    f"sizes: {(size // grid) * grid or grid}, {(size // grid + 1) * grid}."
                )
            out.append(size // grid)
        return tuple(out)
