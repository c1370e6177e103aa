"""arrays."""

__all__: list = []
