"""Keras run -> int8 TFLite model bundle: quantisation, verification, Edge TPU check."""
