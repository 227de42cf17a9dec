"""The release number, in a module of its own: reading it must not import the whole package."""

__version__ = "0.1.0"
