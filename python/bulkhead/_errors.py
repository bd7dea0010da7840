"""Exceptions raised by messaging calls."""


class BulkheadError(Exception):
    """Base of every messaging failure."""


class Timeout(BulkheadError):
    """No reply before the call's timeout (a later reply is dropped)."""


class NoProc(BulkheadError):
    """No actor of that name (or reference) is running."""


class ActorDied(BulkheadError):
    """The callee's worker died before replying; `reason` says how."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class CallFailed(BulkheadError):
    """Any other failure: `code` is "overflow", "bad_message", "handler_error", ..."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
