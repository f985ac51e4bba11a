"""genre-edge device package: front-end, bundle, inference, smoothing, MQTT, CLI.

Light dependencies only (numpy, scipy, a TFLite interpreter, sounddevice, paho-mqtt);
never TensorFlow.
"""

__version__ = "0.1.0"
