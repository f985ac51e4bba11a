"""The level of a block of audio in dBFS: a signal measurement, used by the smoother's
silence gate, the pipeline and ``classify``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Levels are floored here (an all-zero block is -120 dBFS rather than -inf).
LEVEL_FLOOR_DBFS = -120.0


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of a block of samples in dBFS, its DC offset removed.

    Full scale is a square wave at +-1.0: its RMS is 1.0 = 0 dBFS, so a full-scale
    sine is -3.01 dBFS (the AES17 convention would call it 0 dBFS; this module does
    not). Non-finite samples count as 0. The block's mean is subtracted first: many
    MEMS/I2S microphones deliver a small DC offset (0.002 of full scale reads -54 dBFS
    with it), which would hold a quiet room above the silence gate for ever.

    Parameters
    ----------
    samples : np.ndarray
        Float samples in [-1, 1], any shape (all values are pooled).

    Returns
    -------
    float
        ``20 * log10(rms)`` in dBFS, at least :data:`LEVEL_FLOOR_DBFS` (-120); empty
        input gives the floor.
    """
    import numpy as np  # here: the configuration reads LEVEL_FLOOR_DBFS without numpy

    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return LEVEL_FLOOR_DBFS
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    mean_square = float(np.mean(np.square(x - x.mean())))
    if mean_square <= 0.0:
        return LEVEL_FLOOR_DBFS
    return max(LEVEL_FLOOR_DBFS, 10.0 * math.log10(mean_square))
