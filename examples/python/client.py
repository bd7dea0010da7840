"""A plain Python program calling actors of a running tree (no asyncio, no pickling).

    tools/run                                             # terminal 1
    PYTHONPATH=build/main/python /usr/bin/python3 examples/python/client.py SOCKET

SOCKET is the attach socket the supervisor logs at start-up (or the tree's
name, "example-shop", for its default path).
"""
import sys

import bulkhead
from bulkhead import Atom


def main():
    with bulkhead.connect(sys.argv[1] if len(sys.argv) > 1 else "example-shop") as conn:
        start = conn.call("pycounter", Atom("get"))
        for _ in range(3):
            conn.cast("pycounter", Atom("inc"))
        print("pycounter:", conn.call("pycounter", Atom("get")) - start)
        print("pycounter:", conn.call("pycounter", (Atom("add"), 10)) - start)


if __name__ == "__main__":
    main()
