"""Shared memory: POSIX (shm_open), System V (shmget/shmat), memfd, and numpy arrays shared across processes."""

__all__: list = []
