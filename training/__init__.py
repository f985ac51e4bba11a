"""Workstation side: datasets, feature cache, augmentation, architectures, fit, evaluation.

Light to import: TensorFlow is imported only by ``training.models``, ``training.fit`` and
``training.evaluate`` (and only when they are used). Features always come from
``firmware_py.features`` so the model sees exactly what the device computes.

The first import also sets glibc's allocator up for training (:mod:`training.heap`: one
arena, large blocks kept between steps; twice as fast per step on 2 cores).
"""

from .heap import steady_heap

steady_heap()
