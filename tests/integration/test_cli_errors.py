"""`hplus cloud call` against a real node and edge: every refusal says what is wrong.

The node and the edge (REST HIS simulator) run in this event loop; the CLI runs as the
operator runs it, in its own process, through the node's internal endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from hplus.hospital.v1 import admin_pb2
from tests.integration.hospital_env import Env, hospital
from tools.cli._base import EXIT_FAILED
from tools.his_sim import id_card_check_digit

REPO = Path(__file__).resolve().parents[2]


async def cloud_call(env: Env, tmp_path: Path, hospital_id: str, method: str, body: object):  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.cli",
        "cloud",
        "call",
        hospital_id,
        method,
        json.dumps(body),
        "--data-dir",
        str(tmp_path / "cloud"),
        "--node",
        f"127.0.0.1:{env.node.internal_port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'gen'}{os.pathsep}{REPO}"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_cloud_call_prints_the_details_of_every_refusal(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path) as env:
        h = env.hospital_id

        # The HIS refuses the ID number's check digit: the field is named.
        first17 = "11010119900307451"
        wrong = first17 + ("0" if id_card_check_digit(first17) != "0" else "1")
        code, out, err = await cloud_call(
            env,
            tmp_path,
            h,
            "PatientService/RegisterPatient",
            {
                "idempotencyKey": "reg-1",
                "name": "张三",
                "idCardNumber": wrong,
                "idCardType": "ID_CARD_TYPE_RESIDENT_ID_CARD",
            },
        )
        assert (code, out) == (EXIT_FAILED, "")
        lines = err.splitlines()
        assert lines[0].endswith("INVALID_ARGUMENT: the HIS refused a parameter: id_card_number"), (
            err
        )
        assert "  id_card_number: refused by the HIS (vendor code 40001)" in lines
        assert "  reason: HIS_INVALID_ARGUMENT (hospital.hplus)" in lines
        assert wrong not in err  # patient data never comes back in an error

        # The edge's own validation says what is wrong with the field.
        code, _, err = await cloud_call(env, tmp_path, h, "PatientService/FindPatient", {})
        assert code == EXIT_FAILED
        assert "INVALID_ARGUMENT: invalid request: id_card_number: required" in err
        assert "\n  id_card_number: required" in err

        # A hospital rule refuses the second booking: its name and its own text.
        patient = next(iter(env.his.core.patients))
        slot = env.his.core.bookable_slot(patient_id=patient, mode="SESSION")
        book = {"slotId": slot.slot_id, "patient": {"patientId": patient}}
        code, _, err = await cloud_call(
            env,
            tmp_path,
            h,
            "AppointmentService/BookAppointment",
            {"idempotencyKey": "b-1", **book},
        )
        assert code == 0, err
        code, _, err = await cloud_call(
            env,
            tmp_path,
            h,
            "AppointmentService/BookAppointment",
            {"idempotencyKey": "b-2", **book},
        )
        assert code == EXIT_FAILED
        lines = err.splitlines()
        assert lines[0].endswith(
            "FAILED_PRECONDITION: a hospital rule refuses this booking: one booking per "
            "patient per doctor per day (rule real_name)"
        ), err
        assert "  reason: BOOKING_RULE_VIOLATED (hospital.hplus)" in lines
        assert "  rule: real_name" in lines
        assert "  rule_text: one booking per patient per doctor per day" in lines

        # A bad profile value: the config path and the problem.
        profile = await env.admin.GetConfig(admin_pb2.GetConfigRequest(), timeout=10)
        code, _, err = await cloud_call(
            env,
            tmp_path,
            h,
            "EdgeAdminService/ApplyConfig",
            {
                "expectedDigest": profile.profile.info.digest,
                "validateOnly": True,
                "updateMask": "tasks",
                "content": {"tasks": {"drain_rate_per_second": "fast"}},
            },
        )
        assert code == EXIT_FAILED
        assert (
            "  content.tasks.drain_rate_per_second: wrong type: expected number, got string "
            "'fast'" in err.splitlines()
        ), err

        # A hospital with no tunnel anywhere: the node says which, and why.
        code, _, err = await cloud_call(
            env, tmp_path, "h-404", "DirectoryService/ListDepartments", {}
        )
        assert code == EXIT_FAILED
        lines = err.splitlines()
        assert lines[0].endswith(
            "UNAVAILABLE: hospital h-404 is not connected (last seen never)"
        ), err
        assert "  reason: HOSPITAL_NOT_CONNECTED (cloud.hplus)" in lines
        assert "  resource: hospital h-404" in lines
