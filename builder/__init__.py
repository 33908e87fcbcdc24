"""builder: reproducible, checked model-serving images."""

__version__ = "0.1.0"
