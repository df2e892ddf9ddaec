"""Who holds the run lock, and whether that process is certainly gone.

A holder is "host:pid:identity"; on Linux the identity is the pid namespace and the start time
of the process, so a pid reused by another process, or a pid seen from another container that
shares our host name, is never mistaken for the holder. A holder is dead only when it ran on
this host, in this pid namespace, and its process no longer exists (or is a zombie, or the pid
now belongs to a younger process). Anything we cannot prove dead is alive; its lock then waits
for the heartbeat to go stale.
"""

from __future__ import annotations

import os
import socket


def _namespace() -> str | None:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process from /proc, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], fields[19]


def lock_holder() -> str:
    pid = os.getpid()
    namespace, stat = _namespace(), _proc_stat(pid)
    identity = f":{namespace}.{stat[1]}" if namespace and stat else ""
    return f"{socket.gethostname()}:{pid}{identity}"


def holder_is_dead(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid_text, _, identity = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    if identity:
        namespace, _, started = identity.partition(".")
        if namespace != _namespace():
            return False  # another container with our host name: its pids are not ours
        stat = _proc_stat(pid)
        return stat is None or stat[0] in ("Z", "X") or stat[1] != started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
