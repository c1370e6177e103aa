"""fileio."""

__all__: list = []
