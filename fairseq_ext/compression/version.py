"""Version of the compression library and of its file format, both written into every packed file."""

__version__ = "0.1.0"
FORMAT_VERSION = 1
