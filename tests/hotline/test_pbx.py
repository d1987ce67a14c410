"""The shipped PBX configuration renders completely, and the `intake asterisk` commands behave."""

from __future__ import annotations

import re
import shutil
import subprocess
import wave
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.cli import main
from hotline.pbx import PLACEHOLDER, PbxError, PbxParams, generate_prompts, render_config, seat_password

PARAMS = PbxParams(seat_secret="seat-secret-for-tests", ami_secret="ami-secret-for-tests")


def test_every_file_renders_without_leftover_placeholders() -> None:
    files = render_config(PARAMS)
    assert {"pjsip.conf", "pjsip_seats.conf", "pjsip_trunk.conf", "extensions.conf", "queues.conf", "manager.conf",
            "modules.conf", "rtp.conf"} <= set(files)
    for name, text in files.items():
        assert not PLACEHOLDER.search(text), name


def test_seats_trunk_and_dids() -> None:
    files = render_config(PARAMS)
    seats = files["pjsip_seats.conf"]
    extensions = re.findall(r"^\[(\d+)\]\(seat-endpoint\)$", seats, re.M)
    assert extensions == [str(8001 + i) for i in range(20)]
    assert f"password={seat_password('seat-secret-for-tests', '8001')}" in seats
    assert seat_password("seat-secret-for-tests", "8001") != seat_password("seat-secret-for-tests", "8002")
    assert "device_state_busy_at=1" in seats and "direct_media=no" in seats
    assert "match=198.51.100.10" in files["pjsip_trunk.conf"] and "send_connected_line=no" in files["pjsip_trunk.conf"]
    dialplan = files["extensions.conf"]
    for did in ("12319", "12345"):
        assert f"exten => {did},1,Goto(hotline,{did},1)" in dialplan
        assert f"[hotline-{did}](hotline-tpl)" in files["queues.conf"]
    assert "Set(__DID=${EXTEN})" in dialplan and "MixMonitor(${RECFILE},b)" in dialplan
    assert "GotoIfTime(${HOTLINE_HOURS},*,*,*,${HOTLINE_TZ}?open)" in dialplan and "HOTLINE_HOURS=08:00-20:00" in dialplan
    assert "Read(SCORE,custom/survey-question" in dialplan and "UserEvent(SurveyResult" in dialplan
    queues = files["queues.conf"]
    assert "ringinuse = no" in queues and "joinempty = unavailable,invalid,unknown" in queues
    assert "leavewhenempty = unavailable,invalid,unknown" in queues and "persistentmembers = yes" in queues


def test_ami_user_is_least_privilege() -> None:
    manager = render_config(PARAMS)["manager.conf"]
    assert "[intake]" in manager and "secret = ami-secret-for-tests" in manager
    assert "channelvars = DID,RECFILE,JOB_ID" in manager and "bindaddr = 127.0.0.1" in manager
    assert "read = call,agent,user,system" in manager and "write = call,agent,originate,reporting" in manager
    assert "deny = 0.0.0.0/0.0.0.0" in manager and "permit = 127.0.0.1/255.255.255.255" in manager
    assert not re.search(r"^(read|write) = .*\b(command|config|dialplan|all)\b", manager, re.M)
    included = re.findall(r"^eventfilter\(action\(include\),name\((\w+)\)\) =$", manager, re.M)
    assert {"AgentCalled", "AgentConnect", "Hangup", "UserEvent", "QueueMemberPause"} <= set(included)
    assert "VarSet" not in included and "Newexten" not in included


def test_missing_secrets_are_refused() -> None:
    with pytest.raises(PbxError):
        render_config(PbxParams())


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng/sox")
def test_prompts_are_spoken_in_mandarin_at_8khz(tmp_path: Path) -> None:
    params = PbxParams(dids=("12319", "96310"))
    files = generate_prompts(tmp_path / "sounds", params, cache_dir=tmp_path / "cache")
    names = {str(f.relative_to(tmp_path / "sounds" / "zh")) for f in files}
    assert {"custom/welcome-12319.wav", "custom/welcome-96310.wav", "custom/after-hours.wav",
            "custom/survey-question.wav", "digits/2.wav"} <= names
    with wave.open(str(tmp_path / "sounds/zh/custom/survey-question.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() > 8000 * 3  # seconds of speech, not an empty file
    again = generate_prompts(tmp_path / "sounds", params, cache_dir=tmp_path / "cache")
    assert len(again) == len(files)  # cached: nothing is spoken twice


def test_cli_status_install_and_seat_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("INTAKE_HOTLINE_PBX_DIR", str(tmp_path / "pbx"))
    monkeypatch.setenv("INTAKE_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        status = runner.invoke(main, ["asterisk", "status"])
        assert status.exit_code == 1 and "not running" in status.output
        installed = runner.invoke(main, ["asterisk", "install-config", "--dest", str(tmp_path / "etc"),
                                         "--ami-permit", "10.0.0.5/255.255.255.255", "--nat-address", "203.0.113.7",
                                         "--local-net", "10.0.0.0/8"])
        assert installed.exit_code == 0, installed.output
        assert "permit = 10.0.0.5/255.255.255.255" in (tmp_path / "etc/manager.conf").read_text()
        assert "external_media_address=203.0.113.7" in (tmp_path / "etc/pjsip.conf").read_text()
        assert (tmp_path / "etc/manager.conf").stat().st_mode & 0o777 == 0o640
        password = runner.invoke(main, ["asterisk", "seat-password", "8003"])
        assert password.exit_code == 0 and password.output.strip() == seat_password("intake-dev-sip", "8003")
        assert runner.invoke(main, ["asterisk", "seat-password", "9999"]).exit_code != 0
        monkeypatch.setenv("INTAKE_ENV", "prod")
        monkeypatch.setenv("INTAKE_SECRET_KEY", "x" * 20)
        monkeypatch.setenv("INTAKE_WORKFLOW_API_KEY", "x" * 20)
        monkeypatch.setenv("INTAKE_WORKFLOW_WEBHOOK_SECRET", "x" * 20)
        monkeypatch.setenv("INTAKE_DEPARTMENT_API_TOKEN", "x" * 20)
        get_settings.cache_clear()
        refused = runner.invoke(main, ["asterisk", "install-config", "--dest", str(tmp_path / "etc2")])
        assert refused.exit_code != 0 and "INTAKE_AMI_SECRET" in refused.output
    finally:
        get_settings.cache_clear()


def test_intake_asterisk_is_a_registered_command() -> None:
    result = subprocess.run([str(Path(__import__("sys").executable).with_name("intake")), "asterisk", "--help"],
                            capture_output=True, text=True, check=True)
    for command in ("up", "down", "status", "install-config", "seat-password"):
        assert command in result.stdout
