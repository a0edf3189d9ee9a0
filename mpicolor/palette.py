"""The public API of one frame's palette, where users have always imported it.

``from mpicolor.palette import decode_frame, extract_palette, palette_from_bytes, BadFrame``; the code
lives in :mod:`mpicolor.engine` (`mpicolor.engine.palette`, `mpicolor.engine.decode`).
"""

from mpicolor.engine.decode import decode_frame
from mpicolor.engine.palette import (
                                     METHODS,
                                     BadFrame,
                                     Palette,
                                     default_scale,
                                     extract_palette,
                                     palette_from_bytes,
                                     smooth_chroma,
)

__all__ = ["METHODS", "BadFrame", "Palette", "decode_frame", "default_scale", "extract_palette",
           "palette_from_bytes", "smooth_chroma"]
