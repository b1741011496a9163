"""The machine description every benchmark records beside its figures (lives in `jobs.machine`)."""

from jobs.machine import describe_machine

__all__ = ["describe_machine"]
