"""Pure pieces of process management: pool limits, channel messages, peers, systemd."""

import os
import random
import socket

import pytest

from safefcgi.cli import parse_run_arguments
from safefcgi.errors import ConfigError
from safefcgi.process import channel as ch
from safefcgi.process import systemd
from safefcgi.process.pool import PoolLimits, request_limit
from safefcgi.process.reload import Handover, take_handover

# -- pool limits and request budgets ---------------------------------------------------------


def test_ttin_raises_both_spare_limits_within_maxchildren():
    assert PoolLimits(1, 2, 3).grown() == PoolLimits(2, 3, 3)
    assert PoolLimits(2, 3, 3).grown() == PoolLimits(3, 3, 3)


def test_ttou_lowers_both_spare_limits_but_keeps_one_idle_child():
    assert PoolLimits(2, 3, 5).shrunk() == PoolLimits(1, 2, 5)
    assert PoolLimits(0, 1, 5).shrunk() == PoolLimits(0, 1, 5)


def test_request_budget_is_maxrequests_plus_up_to_jitter():
    rng = random.Random(7)
    budgets = {request_limit(100, 10, rng) for _ in range(500)}
    assert budgets == set(range(100, 111))


def test_no_maxrequests_means_unlimited_whatever_the_jitter():
    assert request_limit(0, 50, random.Random(1)) == 0
    assert request_limit(5, 0, random.Random(1)) == 5


# -- the channel -----------------------------------------------------------------------------


def test_a_message_survives_the_channel_with_its_fields():
    master, child = ch.channel_pair()
    with master, child:
        assert ch.send(child, ch.STATUS, full=True)
        assert ch.send(master, ch.REOPEN, targets=[1, 2])
        first, second = ch.receive(master), ch.receive(child)
    assert (first.kind, first.get("full")) == ("status", True)
    assert (second.kind, second.get("targets")) == ("reopen", [1, 2])


def test_messages_keep_their_boundaries():
    master, child = ch.channel_pair()
    with master, child:
        for n in range(5):
            ch.send(child, ch.IDLE, served=n)
        assert [ch.receive(master).get("served") for _ in range(5)] == [0, 1, 2, 3, 4]


def test_a_message_too_large_for_the_channel_is_refused_by_the_sender():
    with pytest.raises(ValueError, match="exceeds"):
        ch.encode(ch.STATUS, padding="x" * ch.MAX_MESSAGE)


def test_unknown_kinds_and_fields_pass_through_for_later_readers():
    message = ch.decode(b'{"kind":"stats","rss":1234}')
    assert (message.kind, message.get("rss")) == ("stats", 1234)


@pytest.mark.parametrize("data", [b"I", b"{}", b"[1]", b'{"kind":7}', b"\xff"])
def test_malformed_messages_are_ignored(data):
    assert ch.decode(data) is None


def test_eof_on_the_channel_says_the_other_side_is_gone():
    master, child = ch.channel_pair()
    with master:
        child.close()
        with pytest.raises(ch.ChannelClosed):
            ch.receive(master)
        assert not ch.send(master, ch.RETIRE)


def test_reading_an_empty_channel_does_not_block():
    master, child = ch.channel_pair()
    with master, child, pytest.raises(BlockingIOError):
        ch.receive(master, socket.MSG_DONTWAIT)


def test_file_descriptors_travel_with_a_reopen_message(tmp_path):
    log = tmp_path / "new.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    master, child = ch.channel_pair()
    with master, child:
        ch.send(master, ch.REOPEN, fds=(fd,), targets=[2])
        os.close(fd)
        message = ch.receive(child)
    assert message.get("targets") == [2] and len(message.fds) == 1
    os.write(message.fds[0], b"through the passed fd\n")
    os.close(message.fds[0])
    assert log.read_text() == "through the passed fd\n"


# -- options ------------------------------------------------------------------------------------


def test_process_options_build_a_config():
    config = parse_run_arguments([
        "mysite.settings", "--host", "::1", "--port", "9000", "--timeout", "30",
        "--maxrequests", "500", "--maxrequests-jitter", "50", "--allowed-clients",
        "127.0.0.1, ::1", "--user", "nobody", "--group", "nogroup", "--allow-root"])
    assert (config.timeout, config.maxrequests_jitter) == (30.0, 50)
    assert config.allowed_clients == ("127.0.0.1", "::1")
    assert (config.user, config.group, config.allow_root) == ("nobody", "nogroup", True)


@pytest.mark.parametrize("argv, message", [
    (["--socket", "/s", "--allowed-clients", "127.0.0.1"], "applies to TCP"),
    (["--host", "h", "--port", "1", "--socket-owner", "nobody"], "--socket-owner applies"),
    (["--socket", "/s", "--socket-mode", "888"], "octal"),
    (["--socket", "/s", "--group", "nogroup"], "--group needs --user"),
    (["--socket", "/s", "--maxrequests-jitter", "5"], "needs --maxrequests"),
    (["--socket", "/s", "--user", "no-such-user-here"], "unknown user 'no-such-user-here'"),
    (["--socket", "/s", "--socket-owner", "nobody:no-such-group"], "unknown group"),
    (["--socket", "/s", "--timeout", "-1"], "must not be negative"),
    (["--socket", "/s", "--method", "threaded", "--timeout", "5"], "--timeout needs --method"),
])
def test_bad_process_options_are_named_in_one_error(argv, message):
    with pytest.raises(ConfigError) as caught:
        parse_run_arguments(["mysite.settings", *argv])
    assert message in str(caught.value)


# -- systemd and reload handover ------------------------------------------------------------------


def test_activation_fds_are_ours_only_when_listen_pid_names_us():
    env = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "a:b"}
    assert systemd.activation_fds(env) == [3, 4]
    assert env == {}  # children and a re-executed master must not adopt them again
    assert systemd.activation_fds({"LISTEN_FDS": "1", "LISTEN_PID": "1"}) == []
    assert systemd.activation_fds({}) == []


def test_notify_sends_state_lines_to_notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert systemd.ready("serving")
        assert receiver.recv(1024) == b"READY=1\nSTATUS=serving"


def test_notify_outside_systemd_is_a_quiet_no(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.stopping() is False


def test_a_handover_round_trips_through_the_environment():
    handover = Handover(listener_fd=5, description="unix:/s", unix_path="/s", unix_inode=9,
                        launch_dir="/srv", children=[(100, 7), (101, None)])
    env = {"SAFEFCGI_HANDOVER": handover.to_json()}
    assert take_handover(env) == handover
    assert env == {}


# -- the master's bookkeeping never ends its loop --------------------------------------------


def bare_master():
    """A master that is only constructed: no socket, no fork, no signal handlers."""
    from safefcgi.process.master import PreforkMaster

    config = parse_run_arguments(["site.settings", "--socket", "/nonexistent/x.sock"])
    return PreforkMaster(config, listener=None, app=None, hooks=None)


def test_every_signal_number_has_a_name_for_the_log():
    import signal

    from safefcgi.process.signals import signal_name

    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(signal.SIGRTMIN + 1) == "SIGRTMIN+1"
    assert signal_name(signal.SIGRTMAX) == "SIGRTMAX"
    assert signal_name(99) == "signal 99"


def test_a_failing_step_is_logged_with_its_traceback_and_the_loop_goes_on(caplog):
    master = bare_master()

    def broken_step():
        raise RuntimeError("bookkeeping bug")

    assert master._run_step(broken_step) is False
    assert master._run_step(lambda: None) is True
    assert not master._stopping
    [record] = [r for r in caplog.records if r.name == "safefcgi.master"]
    assert "broken_step" in record.getMessage() and record.exc_info is not None


def test_a_step_that_fails_tick_after_tick_stops_the_master_with_a_failure_status(caplog):
    from safefcgi.errors import EXIT_FAILURE
    from safefcgi.process.master import STEP_FAILURES_BEFORE_STOPPING

    master = bare_master()

    def broken_step():
        raise OSError(9, "Bad file descriptor")

    for _ in range(STEP_FAILURES_BEFORE_STOPPING - 1):
        master._run_step(broken_step)
    assert not master._stopping
    master._run_step(broken_step)
    assert master._stopping and master._exit_status == EXIT_FAILURE
    assert "failed 50 times in a row" in caplog.text


def test_a_reused_fd_number_left_watched_is_replaced_not_fatal():
    import selectors

    from safefcgi.process.master import Child

    master = bare_master()
    master._selector = selectors.DefaultSelector()
    try:
        first_end, first_peer = ch.channel_pair()
        gone = Child(pid=1, channel=first_end)
        master._watch(gone)
        number = first_end.fileno()
        first_end.close()  # closed while still watched: the bug this guards against
        first_peer.close()
        ends = [ch.channel_pair() for _ in range(2)]
        reused = next(end for pair in ends for end in pair if end.fileno() == number)
        fresh = Child(pid=2, channel=reused)
        master._watch(fresh)
        assert master._selector.get_key(number).data is fresh
        master._close_channel(fresh)
        assert number not in master._selector.get_map()
        for pair in ends:
            for end in pair:
                end.close()
    finally:
        master._selector.close()
