"""``python -m coldharbour.sim.broker``: binds port 0, says where, serves, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests

from coldharbour.sim.broker import main

START_TIMEOUT_S = 30.0


def test_broker_process_announces_port_serves_accounts_and_exits_zero_on_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coldharbour.sim.broker",
            "--port",
            "0",
            "--seed",
            "3",
            "--account",
            "ops:ops-key:ops-secret",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # blocks until the broker is bound
        port = int(line.removeprefix("listening port="))
        headers = {"APCA-API-KEY-ID": "ops-key", "APCA-API-SECRET-KEY": "ops-secret"}
        account = requests.get(f"http://127.0.0.1:{port}/v2/account", headers=headers, timeout=START_TIMEOUT_S)
        demo = requests.get(
            f"http://127.0.0.1:{port}/v2/account",
            headers={"APCA-API-KEY-ID": "demo-key", "APCA-API-SECRET-KEY": "demo-secret"},
            timeout=START_TIMEOUT_S,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(START_TIMEOUT_S)

    assert line.startswith("listening port=")
    assert (account.status_code, account.json()["cash"]) == (200, "100000")
    assert demo.status_code == 403  # only the accounts given on the command line exist
    assert exit_code == 0


def test_bad_account_argument_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as usage:
        main(["--port", "0", "--account", "missing-parts"])

    assert usage.value.code == 2
