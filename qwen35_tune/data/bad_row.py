"""The one exception a row that cannot be used raises; its message is the reason the quarantine file records."""


class BadRow(ValueError):
    """A row that cannot be used; the message is the quarantine reason."""
