"""Synchronization in shared memory: process-shared locks and semaphores, and Channel."""

__all__: list = []
