"""The audit's one exception type."""

__all__ = ["AuditError"]


class AuditError(Exception):
    """Bad input to the audit (a file, an argument, data that does not fit the model).

    ``sklrp audit`` prints it as one line and exits with code 2, having written nothing.
    """
