"""faceapp: offline face verification (1:1) and recognition (1:K)."""

__version__ = "0.1.0"
