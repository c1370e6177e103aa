"""memory."""

__all__: list = []
