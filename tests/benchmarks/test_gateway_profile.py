"""benchmarks/gateway_profile.py's own logic: reading strace's summary."""

from __future__ import annotations

from pathlib import Path

from benchmarks.gateway_profile import syscall_counts

# The shape of ``strace -c -f -U name,calls,errors`` (strace 6.1, Debian 12).
# Its rows are padded with spaces where a syscall had no errors.
SUMMARY = "\n".join(
    [
        "syscall              calls    errors",
        "---------------- --------- ---------",
        "futex                22709      2467",
        "epoll_wait            8800          ",
        "write                40640          ",
        "rseq                     1          ",
        "---------------- --------- ---------",
        "total               158503      6285",
    ]
)


def test_syscall_counts_reads_calls_per_syscall_and_skips_the_total(tmp_path: Path) -> None:
    path = tmp_path / "x.strace"
    path.write_text(SUMMARY)
    assert syscall_counts(path) == {"futex": 22709, "epoll_wait": 8800, "write": 40640, "rseq": 1}


def test_syscall_counts_of_an_empty_summary_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "x.strace"
    path.write_text("")
    assert syscall_counts(path) == {}
