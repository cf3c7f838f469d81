"""Exception types and process exit codes, in one place."""

# Exit codes of the safefcgi command (the parent process).
EXIT_OK = 0
EXIT_FAILURE = 1  # start-up failed: socket taken, hook failed, ...
EXIT_USAGE = 2  # unknown option or bad value (the argparse convention)
EXIT_APP_LOAD = 4  # the Django project could not be imported

# Exit codes of a child process, read by the master.
CHILD_EXIT_OK = 0
CHILD_EXIT_BOOT_FAILED = 3  # an after-fork hook raised: do not count as a crash of a request


class SafeFCGIError(Exception):
    """Base class of every error safefcgi reports to the user as one line."""

    exit_code = EXIT_FAILURE


class ConfigError(SafeFCGIError):
    """An option is unknown, malformed, or conflicts with another."""

    exit_code = EXIT_USAGE


class AppLoadError(SafeFCGIError):
    """The settings module or the Django project failed to import."""

    exit_code = EXIT_APP_LOAD


class SocketError(SafeFCGIError):
    """The listening socket cannot be created (path taken, port in use, ...)."""


class HookError(SafeFCGIError):
    """A before-fork or after-fork hook raised, or cannot be imported."""

    def __init__(self, path: str, cause: BaseException | str):
        self.path = path
        self.cause = cause
        detail = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"hook {path} failed: {detail}")
