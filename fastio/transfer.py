"""Zero-copy transfer: sendfile, copy_file_range, splice, reflink."""

__all__: list = []
