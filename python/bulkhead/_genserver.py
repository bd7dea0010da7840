"""GenServer: the OTP gen_server shape for Python actors."""
import traceback as _traceback


class GenServer:
    """Derive from it and list the class in the tree (python = "module:Class").

    The worker makes one instance per incarnation and threads the state
    through the handlers:
      init(self, **args) -> state          args: the tree's `args` table
      handle_call(self, request, from_, state) -> (reply, new_state)
                                           or noreply(new_state), then later
                                           bulkhead.reply(from_, value)
      handle_cast(self, request, state) -> new_state
      handle_info(self, msg, state) -> new_state   (sends, Down, Exit, Atom('usr1'))
      terminate(self, reason, state)       on a graceful stop
    Any handler may be `async def`: it runs to completion on this actor's own
    asyncio loop before the next message.  An exception escaping a handler
    ends the worker (exit reason `exception` with the traceback).
    """

    def init(self, **args):
        return None

    def handle_call(self, request, from_, state):
        raise NotImplementedError("%s does not handle calls (got %r)" %
                                  (type(self).__qualname__, request))

    def handle_cast(self, request, state):
        return state

    def handle_info(self, msg, state):
        return state

    def terminate(self, reason, state):
        pass


def _run_coroutine(actor, coro):
    """Runs an async handler's coroutine on the actor's own event loop."""
    import asyncio
    import asyncio.events as events
    loop = actor.__dict__.get("_bulkhead_loop")
    if loop is None:
        loop = asyncio.new_event_loop()
        actor.__dict__["_bulkhead_loop"] = loop
    # A handler of another actor may be running its loop further up the stack
    # (it is waiting in a call): run ours as if no loop were running.
    outer = events._get_running_loop()
    events._set_running_loop(None)
    try:
        return loop.run_until_complete(coro)
    finally:
        events._set_running_loop(outer)


def _describe_exception(exc, tb=None):
    """(qualified type name, message, formatted traceback) of an exception."""
    if tb is not None and exc.__traceback__ is None:
        exc = exc.with_traceback(tb)
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else t.__module__ + "." + t.__qualname__
    return name, str(exc), "".join(_traceback.format_exception(exc))
