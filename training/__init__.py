"""Workstation side: datasets, feature cache, augmentation, architectures, fit, evaluation.

Light to import: TensorFlow is imported only by ``training.models``, ``training.fit`` and
``training.evaluate`` (and only when they are used). Features always come from
``firmware_py.features`` so the model sees exactly what the device computes.
"""
