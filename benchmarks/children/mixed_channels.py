"""The load and soak task: ``mixed_channels.py MESSAGES KIND[,KIND...]``.

Opens one reporter per communicator kind, sends MESSAGES ``tick`` messages spread round-robin
over them (each says which channel it was meant for and its index on that channel), and
reports how many went to each channel as its result.
"""

import sys

from lute_async.task import Reporter


def main() -> None:
    total = int(sys.argv[1])
    kinds = sys.argv[2].split(",")
    reporters = [Reporter.connect(prefer=(kind,), required=True) for kind in kinds]
    sent = dict.fromkeys(kinds, 0)
    for i in range(total):
        kind = kinds[i % len(kinds)]
        reporters[i % len(kinds)].emit("tick", [kind, sent[kind]])
        sent[kind] += 1
    for reporter in reporters[1:]:
        reporter.close()
    reporters[0].result({"sent": sent})
    reporters[0].close()


if __name__ == "__main__":
    main()
