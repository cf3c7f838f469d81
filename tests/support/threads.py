"""Calls run in a thread while the test does something else (a signal, a second request)."""

import threading


def in_thread(function, *args):
    """Run function(*args) in a thread; the returned dict gets 'value' or 'error'."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome
