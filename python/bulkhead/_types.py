"""Values and messages that have no built-in Python type."""


class Atom:
    """A symbol (Erlang atom): an interned name such as `ok` or `error`.

    Atom("ok") is Atom("ok"); an Atom never equals a str.  Maps onto the
    schema's Value.symbol.
    """
    __slots__ = ("name",)
    _table = {}

    def __new__(cls, name):
        a = cls._table.get(name)
        if a is None:
            if not isinstance(name, str):
                raise TypeError("Atom name must be a str, not %s" % type(name).__name__)
            a = object.__new__(cls)
            object.__setattr__(a, "name", name)
            cls._table[name] = a
        return a

    def __setattr__(self, k, v):
        raise AttributeError("Atom is immutable")

    def __repr__(self):
        return "Atom(%r)" % self.name

    def __str__(self):
        return self.name

    def __reduce__(self):
        return (Atom, (self.name,))


class NoReply:
    """What handle_call returns to answer later with bulkhead.reply(from_, value)."""
    __slots__ = ("state",)

    def __init__(self, state):
        self.state = state


def noreply(state):
    """handle_call's result when the answer comes later: keeps `state`."""
    return NoReply(state)


class ExitReason:
    """Why an actor's worker ended (schema/exit_reason.capnp).

    kind: "normal", "shutdown", "exception", "signal", "exit_code",
    "start_failure", "ready_timeout", "protocol_violation", "killed_by_limit";
    then, as they apply: type, message, traceback, actor (exception), signal,
    core_dumped, exit_code, text.
    """

    def __init__(self, kind, **fields):
        self.kind = kind
        self.type = fields.get("type", "")
        self.message = fields.get("message", "")
        self.traceback = fields.get("traceback", "")
        self.actor = fields.get("actor", "")
        self.signal = fields.get("signal", 0)
        self.core_dumped = fields.get("core_dumped", False)
        self.exit_code = fields.get("exit_code", 0)
        self.text = fields.get("text", "")

    def __str__(self):
        if self.kind == "exception":
            return "exception %s: %s" % (self.type, self.message)
        if self.kind == "signal":
            return "signal %d" % self.signal
        if self.kind == "exit_code":
            return "exit code %d" % self.exit_code
        return self.kind + (": " + self.text if self.text else "")

    def __repr__(self):
        return "ExitReason(%r)" % str(self)


class Down:
    """A monitored actor's worker ended: handle_info gets Down(target, reason)."""
    __slots__ = ("target", "reason")

    def __init__(self, target, reason):
        self.target = target
        self.reason = reason

    def __repr__(self):
        return "Down(%r, %r)" % (self.target, self.reason)


class Exit(Down):
    """A linked actor's worker ended (with trap_exit(True)): Exit(target, reason)."""
    __slots__ = ()

    def __repr__(self):
        return "Exit(%r, %r)" % (self.target, self.reason)
