"""What the server promises on every platform, shown with server.py as a real process.

Run on Linux, macOS and Windows alike (CI runs them on Windows CPython under
Wine too): many scores through several compactions, a kill and a Ctrl-C with
nothing acknowledged lost, a verified run read back, one server per data
directory and per port, an idle keep-alive connection that ends quietly, a
console that cannot show the data path, and a teacher key only its owner can
read. Nothing here skips, except that one check Wine cannot make (see UNDER_WINE).
"""

import http.client
import json
import re
import sys
import time
import urllib.parse
from types import SimpleNamespace

import pytest

from conftest import HOST, ROOT, WINDOWS, Proc, eventually, free_port, run_to_the_end, subprocess_env

import server as dino

CLASS_SIZE = 2500            # scores posted in the big scenario, each a new player
SMALL_COMPACTION = 16 * 1024  # journal bytes that start a compaction in the big scenario (4 MiB by default)
PETR = "\u041f\u0451\u0442\u0440"  # Пётр: not in cp1252, not in ascii
STOPPED = "Stopped. Every score is saved."


def under_wine():
    """True in a Windows python that Wine runs: its ntdll says so."""
    if not WINDOWS:
        return False
    import ctypes  # Windows only
    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


# Wine keeps no Windows access lists on a Unix folder: it turns a new list into
# the file's mode bits and makes up a list from those when asked, so the list
# it shows is not the one the server set.
UNDER_WINE = pytest.mark.skipif(under_wine(), reason="Wine maps a Windows access list to Unix mode bits "
                                                      "and back: it cannot show the one the server set")


# server.py with some of its module constants changed before main() runs:
# python -c TUNED REPO '{"NAME": value}' server arguments...
TUNED = """
import json, sys
sys.path.insert(0, sys.argv[1])
import server
for name, value in json.loads(sys.argv[2]).items():
    assert hasattr(server, name), name
    setattr(server, name, value)
sys.exit(server.main(sys.argv[3:]))
"""


class TunedProc(Proc):
    """server.py as a process, with constants such as COMPACT_MIN_BYTES set first (to see rare things often)."""

    def __init__(self, workdir, data_dir, *args, tuning, **options):
        self.tuning = tuning
        super().__init__(workdir, data_dir, *args, **options)

    def command(self):
        return [sys.executable, "-c", TUNED, str(ROOT), json.dumps(self.tuning), *super().command()[2:]]


def one_error_line(result):
    """The refusal's stderr is one `error: ...` line, with exit code 1 and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def teacher_auth(data_dir):
    key = json.loads((data_dir / "teacher.json").read_text(encoding="utf-8"))["key"]
    return {"Authorization": "Bearer " + key}


def listed_scores(proc):
    reply = proc.call("GET", "/scores", timeout=30)
    assert reply.status == 200, reply
    return {(row["name"], row["score"]) for row in reply.json()}


def leftover_tmp_files(data_dir):
    return sorted(path.name for path in data_dir.rglob("*.tmp"))


def stop_with_ctrl_c(proc):
    """Ctrl-C, then what the user sees: the exit code and the last line printed."""
    proc.ctrl_c()
    code = proc.p.wait(30)
    lines = proc.stdout().strip().splitlines()
    return code, lines[-1] if lines else ""


@pytest.fixture
def servers(tmp_path):
    """servers(data_dir, *args, **options) -> a ready Proc (a TunedProc with tuning=...); all stopped at the end."""
    started = []

    def start(data_dir, *args, tuning=None, **options):
        if tuning:
            proc = TunedProc(tmp_path, data_dir, *args, tuning=tuning, **options)
        else:
            proc = Proc(tmp_path, data_dir, *args, **options)
        started.append(proc)
        return proc.wait_ready(30)

    yield start
    for proc in started:
        proc.stop()


# ---------------------------------------------------------------- a class's worth of scores

@pytest.fixture(scope="module")
def big_class(tmp_path_factory):
    """2,500 scores posted through compactions, then a kill, a restart, a Ctrl-C and another restart.

    Each stage's findings are kept for the tests below, which each check one of them.
    """
    work = tmp_path_factory.mktemp("class")
    data = work / "data"
    seen = SimpleNamespace(acked=[], journal_sizes=[])
    first = TunedProc(work, data, "--client-limits", "off", tuning={"COMPACT_MIN_BYTES": SMALL_COMPACTION})
    try:
        first.wait_ready(30)
        # 2,500 new names in a minute is past the class rate: the teacher lets them in, as the console would.
        assert first.call("POST", "/admin/names/let-in", headers=teacher_auth(data)).status == 200
        conn = http.client.HTTPConnection(HOST, first.port, timeout=30)
        for i in range(CLASS_SIZE):
            name, score = f"pupil{i:04d}", 1000 + i
            conn.request("POST", "/score/" + name, body=json.dumps({"score": score}),
                         headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            body = reply.read()
            assert reply.status == 200, (name, reply.status, body)
            seen.acked.append((name, score))
            if i % 50 == 49:
                journal = data / "journal.jsonl"
                seen.journal_sizes.append(journal.stat().st_size if journal.exists() else 0)
        conn.close()
        seen.listed_while_serving = listed_scores(first)
        # A compaction runs beside the writes; give the last one time to finish before looking for leftovers.
        settled = time.monotonic() + 30
        while leftover_tmp_files(data) and time.monotonic() < settled:
            time.sleep(0.1)
        seen.tmp_after_compactions = leftover_tmp_files(data)
        seen.has_snapshot = (data / "state.json").exists()
    finally:
        first.kill9()
    seen.first_exit = first.p.returncode
    seen.first_stderr = first.stderr()

    after_kill = Proc(work, data).wait_ready(30)
    try:
        seen.listed_after_kill = listed_scores(after_kill)
    finally:
        seen.ctrl_c_exit, seen.ctrl_c_last_line = stop_with_ctrl_c(after_kill)
    journal = data / "journal.jsonl"
    seen.journal_after_ctrl_c = journal.stat().st_size if journal.exists() else 0
    seen.tmp_after_ctrl_c = leftover_tmp_files(data)
    seen.stderr_after_kill = after_kill.stderr()

    restarted = Proc(work, data).wait_ready(30)
    try:
        seen.listed_after_restart = listed_scores(restarted)
    finally:
        restarted.stop()
    return seen


def test_2500_scores_are_each_acknowledged_and_listed(big_class):
    assert len(big_class.acked) == CLASS_SIZE
    assert big_class.listed_while_serving == set(big_class.acked)


def test_compaction_while_serving_shrinks_the_journal_and_leaves_no_tmp_file(big_class):
    sizes = big_class.journal_sizes
    assert len(sizes) == CLASS_SIZE // 50
    shrank = [later for earlier, later in zip(sizes, sizes[1:]) if later < earlier]
    assert shrank, f"the journal only grew: {sizes}"
    assert big_class.has_snapshot
    assert big_class.tmp_after_compactions == []
    assert "Traceback" not in big_class.first_stderr, big_class.first_stderr


def test_a_kill_loses_no_acknowledged_score(big_class):
    assert big_class.first_exit != 0  # it was killed, not stopped
    assert big_class.listed_after_kill == set(big_class.acked)


def test_ctrl_c_exits_0_saying_every_score_is_saved_and_folds_the_journal(big_class):
    assert big_class.ctrl_c_exit == 0
    assert big_class.ctrl_c_last_line == STOPPED
    assert big_class.journal_after_ctrl_c == 0
    assert big_class.tmp_after_ctrl_c == []
    assert "Traceback" not in big_class.stderr_after_kill, big_class.stderr_after_kill


def test_a_restart_after_ctrl_c_loses_no_acknowledged_score(big_class):
    assert big_class.listed_after_restart == set(big_class.acked)


# ---------------------------------------------------------------- verified runs

def test_a_verified_run_is_kept_and_read_back_before_and_after_a_restart(servers, tmp_path):
    data = tmp_path / "data"
    proc = servers(data)
    reply = proc.call("POST", "/runs")
    assert reply.status == 201, reply
    ticket, taken = reply.json(), time.monotonic()
    config = dino.read_sim_config()
    played = dino.replay_run(config, ticket["seed"], 600, [], 10 ** 6)
    assert played["crashed"]
    run = {"score": played["score"], "run": ticket["run"], "width": 600, "inputs": []}
    # The server takes a run no sooner than it could have been played (with RUN_SLACK_S of slack).
    play_s = played["ticks"] / config["ticksPerSecond"]
    time.sleep(max(0.0, taken + play_s - dino.RUN_SLACK_S + 0.5 - time.monotonic()))
    for attempt in ("first", "again"):  # a retried post answers the same, and stores nothing twice
        reply = proc.call("POST", "/score/" + urllib.parse.quote(PETR), run)
        assert (reply.status, reply.json()) == (200, {"status": "success", "verified": True}), (attempt, reply)

    assert_run_read_back(proc, ticket, run)
    proc.stop()
    assert_run_read_back(servers(data), ticket, run)


def assert_run_read_back(proc, ticket, run):
    """GET /runs/<id> and GET /players/<name> show the kept run (both read it back from runs.jsonl)."""
    watched = proc.call("GET", "/runs/" + ticket["run"])
    assert watched.status == 200, watched
    assert {k: watched.json()[k] for k in ("name", "score", "seed", "inputs", "verified")} == {
        "name": PETR, "score": run["score"], "seed": ticket["seed"], "inputs": [], "verified": True}
    player = proc.call("GET", "/players/" + urllib.parse.quote(PETR))
    assert player.status == 200, player
    assert [(s["score"], s["verified"], s["run"]) for s in player.json()["scores"]] == [
        (run["score"], True, ticket["run"])]


# ---------------------------------------------------------------- one server per data directory and port

def test_a_second_server_on_the_same_data_directory_is_refused_in_one_line(servers, tmp_path):
    data = tmp_path / "data"
    first = servers(data)
    result = run_to_the_end(tmp_path, "--host", HOST, "--port", free_port(), "--data", data, "--quiet")
    line = one_error_line(result)
    assert "another Dino Server is already using" in line, line
    assert first.call("POST", "/score/still-here", {"score": 3}).status == 200
    assert ("still-here", 3) in listed_scores(first)


def test_a_second_server_on_the_same_port_is_refused_in_one_line(servers, tmp_path):
    first = servers(tmp_path / "first")
    result = run_to_the_end(tmp_path, "--host", HOST, "--port", first.port, "--data", tmp_path / "second", "--quiet")
    line = one_error_line(result)
    assert f"port {first.port}" in line and "already in use" in line, line
    assert first.call("GET", "/health-check").status == 200


# ---------------------------------------------------------------- the console

def test_an_idle_keep_alive_connection_is_closed_without_a_traceback(servers, tmp_path):
    proc = servers(tmp_path / "data", quiet=False, tuning={"SOCKET_TIMEOUT_S": 1})
    conn = http.client.HTTPConnection(HOST, proc.port, timeout=10)
    conn.request("GET", "/health-check")
    assert conn.getresponse().read() == b'{"status": "ok"}'
    sock = conn.sock
    sock.settimeout(10)
    assert sock.recv(1) == b"", "the server did not close the idle connection"  # it closed it, saying nothing
    conn.close()
    assert proc.call("GET", "/health-check").status == 200
    eventually(lambda: "/health-check" in proc.stderr(), 10, "an access log line")  # tracebacks go there too
    assert "Traceback" not in proc.output(), proc.output()
    assert "timeout" not in proc.stderr().lower(), proc.stderr()


@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_a_data_path_the_console_cannot_show_is_escaped_not_fatal(servers, tmp_path, encoding):
    data = tmp_path / f"{PETR} data"
    env = dict(subprocess_env(), PYTHONIOENCODING=encoding)
    proc = servers(data, quiet=None, env=env)
    assert proc.call("POST", "/score/" + urllib.parse.quote(PETR), {"score": 7}).status == 200
    shown = PETR.encode("ascii", "backslashreplace")  # \u041f\u0451\u0442\u0440
    banner = proc.out_path.read_bytes()
    assert shown + b" data" in banner, banner  # the data directory, as the console can show it
    # The event line for the new player is on stderr, escaped the same way.
    eventually(lambda: shown in proc.err_path.read_bytes(), 10, "the new player's event line")
    code, last = stop_with_ctrl_c(proc)
    assert (code, last) == (0, STOPPED), proc.output()
    assert "Traceback" not in proc.output(), proc.output()
    assert (data / "state.json").exists()


# ---------------------------------------------------------------- the teacher key

def windows_access_list(path):
    """The file's owner and its access entries (type, rights, trustee), read as SDDL text from Windows."""
    import ctypes  # Windows only
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    owner_and_dacl, file_object = 0x1 | 0x4, 1
    descriptor, text = ctypes.c_void_p(), ctypes.c_wchar_p()
    status = advapi32.GetNamedSecurityInfoW(str(path), file_object, owner_and_dacl, None, None, None, None,
                                            ctypes.byref(descriptor))
    assert status == 0, f"GetNamedSecurityInfoW: WinError {status}"
    try:
        assert advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW(
            descriptor, 1, owner_and_dacl, ctypes.byref(text), None), ctypes.get_last_error()
        sddl = text.value
        kernel32.LocalFree(text)
    finally:
        kernel32.LocalFree(descriptor)
    owner = re.search(r"O:([^:()]+?)(?=D:|$)", sddl).group(1)
    entries = [tuple(ace.split(";")[i] for i in (0, 2, 5)) for ace in re.findall(r"\(([^)]*)\)", sddl)]
    return owner, entries


@UNDER_WINE
def test_the_teacher_key_file_is_readable_by_its_owner_alone(servers, tmp_path):
    data = tmp_path / "data"
    servers(data)
    path = data / "teacher.json"
    assert "key" in json.loads(path.read_text(encoding="utf-8"))
    if WINDOWS:  # mode bits mean nothing there: the access list is what keeps others out
        owner, entries = windows_access_list(path)
        assert entries, "teacher.json has no access entries"
        trustees = {trustee for _kind, _rights, trustee in entries}
        assert trustees <= {"OW", "SY", owner}, entries  # no Everyone (WD), Users (BU) or others
    else:
        assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
