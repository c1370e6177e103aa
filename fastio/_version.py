"""fastio's version: the one place it is written (pyproject.toml reads it
from here, fastio.__version__ imports it)."""
__version__ = "0.1.0"
