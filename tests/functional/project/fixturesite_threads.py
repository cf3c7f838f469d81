"""A metrics exporter of the kind projects start at import, thread and all."""

import threading
import time


def flush_forever():
    while True:
        time.sleep(0.1)


def start():
    exporter = threading.Thread(target=flush_forever, name="metrics-flusher", daemon=True)
    exporter.start()  # THREAD-START-LINE
