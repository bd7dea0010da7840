"""An actor whose init raises."""
import bulkhead


class Bad(bulkhead.GenServer):
    def init(self):
        raise KeyError("no config")
