"""One root exception; the CLI turns each kind into one clear line and an exit code."""


class RetailEtlError(Exception):
    """Base of every error the tool reports to the user without a traceback."""

    exit_code = 1


class ConfigError(RetailEtlError):
    """The configuration is missing, malformed or inconsistent."""

    exit_code = 2


class SecretError(ConfigError):
    """An `enc:` value cannot be decrypted, or the master key is unusable."""


class StorageError(RetailEtlError):
    """The object store cannot be reached or refused an operation."""

    exit_code = 3


class ObjectMissingError(StorageError):
    """A move's source is gone and nothing is at its destination: someone removed the object."""


class ObjectReplacedError(StorageError):
    """A move's source is no longer the object the run read: someone put another in its place."""


class ObjectConflictError(StorageError):
    """A move would overwrite a different object at its destination: that object's problem
    (someone wrote there by hand), not the store's."""


class WarehouseError(RetailEtlError):
    """The warehouse cannot be reached or a statement failed."""

    exit_code = 4

    def __init__(self, message: str, data_error: bool = False) -> None:
        super().__init__(message)
        # the values were at fault (out of range, too long), not the warehouse itself
        self.data_error = data_error


class LockedError(RetailEtlError):
    """Another run holds the run lock."""

    exit_code = 5


class LockLostError(LockedError):
    """Another run took the lock over while this one was frozen; this one stops."""


class EngineError(RetailEtlError):
    """The processing engine failed on a batch."""

    exit_code = 6

    def __init__(self, message: str, input_error: bool = False) -> None:
        super().__init__(message)
        self.input_error = input_error  # the input is at fault (not the disk, the memory...)


class WorkFolderError(RetailEtlError):
    """The local work folder cannot be written (disk full, read-only, permissions)."""

    exit_code = 7


class UnstorableError(RetailEtlError):
    """A file's rows cannot be stored: a mart total would leave DECIMAL(18, 2). The run sets
    the file aside; the message names the mart row."""

    exit_code = 4


class UnexpectedError(RetailEtlError):
    """Anything else: a defect of the tool, reported as such rather than as a raw Python error,
    so a scheduler can tell it from the failures above (the run raises it when it cannot pin
    such an error on one file)."""

    exit_code = 8


class LedgerError(UnexpectedError):
    """A ledger transition its state machine does not allow: a defect (run/ledger.py)."""


class StrictError(RetailEtlError):
    """`run --strict`: the run completed, but a file was quarantined or a row rejected."""

    exit_code = 9
