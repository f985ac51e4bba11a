"""genre-edge device package: front-end, bundle, inference, smoothing, MQTT, CLI.

Light dependencies only (numpy, scipy, a TFLite interpreter, sounddevice, paho-mqtt);
never TensorFlow.
"""

import os as _os

# numpy's OpenBLAS would spread the front-end's small (frames x 257) @ (257 x 64) product
# over every core and keep its worker threads spinning: twice the CPU time and ~4 ms
# latency spikes on a Raspberry Pi that also captures audio. One thread is faster here.
# Only a default: set OPENBLAS_NUM_THREADS yourself to override; it takes effect when
# this package is imported before numpy (the genre-edge command always is).
# (Not OMP_NUM_THREADS: TensorFlow's oneDNN kernels use OpenMP for training.)
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
