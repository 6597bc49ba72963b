"""Errors a user can act on. Each message names the file or setting at fault and, where there is one, the fix."""


class WssegError(Exception):
    """Base of wsseg's user-facing errors; the CLI prints the message without a traceback."""


class DataError(WssegError):
    """A dataset file is missing, unreadable or inconsistent."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        # Rebuilt from (path, problem) so the error survives the trip back from a worker process.
        return type(self), (self.path, self.problem)


class ConfigError(WssegError):
    """A configuration key or value is wrong."""


class StoreError(WssegError):
    """The artifact store could not do what was asked."""
