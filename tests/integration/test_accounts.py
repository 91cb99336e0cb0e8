"""Accounts on a real node over TLS: a real hospital through its tunnel, a real gRPC client
nobody here wrote (``buf curl`` over reflection), and a split while the node serves."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud.accounts import Channel, Rate
from cloud.node import CloudNode
from cloud.partitions import NORTH, SOUTH
from hplus.cloud.v1 import account_pb2, account_pb2_grpc, patient_pb2
from mesh import errors
from tests.integration.hospital_env import cloud_node, hospital
from tests.support.databases import sqlite_databases

REPO = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).with_name("buf")


def rid() -> str:
    return str(uuid.uuid4())


def code_for(node: CloudNode, challenge_id: str) -> str:
    """The code the embedded sender wrote for a challenge (what a person reads there)."""
    lines = (node.config.data_dir / "sign-in-codes.log").read_text().splitlines()
    return next(
        json.loads(x)["code"] for x in lines if json.loads(x)["challenge_id"] == challenge_id
    )


class App:
    """An app signed in to a node over TLS."""

    def __init__(self, node: CloudNode, channel: grpc.aio.Channel, key: str) -> None:
        self.node = node
        self.stub = errors.wrap(account_pb2_grpc.AccountServiceStub(channel))
        self.key = key
        self.token = ""

    def md(self) -> tuple[tuple[str, str], ...]:
        out = [("x-hplus-app-key", self.key)]
        if self.token:
            out.append(("authorization", f"Bearer {self.token}"))
        return tuple(out)

    async def sign_in(self, phone: str) -> account_pb2.CompleteSignInResponse:
        started = await self.stub.StartSignIn(
            account_pb2.StartSignInRequest(request_id=rid(), phone=phone),
            metadata=self.md(),
            timeout=10,
        )
        done = await self.stub.CompleteSignIn(
            account_pb2.CompleteSignInRequest(
                request_id=rid(),
                challenge_id=started.challenge_id,
                code=code_for(self.node, started.challenge_id),
            ),
            metadata=self.md(),
            timeout=10,
        )
        self.token = done.access_token
        return done


async def connect(node: CloudNode) -> tuple[grpc.aio.Channel, str]:
    assert node.tls is not None
    assert node.accounts is not None
    issued = await node.accounts.apps.issue(
        f"test-{uuid.uuid4().hex[:6]}", Channel.WEB, Rate(500, 1.0)
    )
    creds = grpc.ssl_channel_credentials(root_certificates=node.tls.ca_cert.read_bytes())
    return grpc.aio.secure_channel(f"localhost:{node.port}", creds), issued.key


async def test_a_patient_is_bound_through_the_hospitals_tunnel(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path) as env:
        node = env.node
        channel, key = await connect(node)
        async with channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="hplus.cloud.v1.AccountService"), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            app = App(node, channel, key)
            await app.sign_in("+8613800138000")
            known = next(p for p in env.his.core.patients.values() if p.id_type == "RESIDENT")
            who = patient_pb2.PatientIdentity(
                name=known.name,
                id_card_type=patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
                id_card_number=known.id_number,
            )
            bound = await app.stub.BindPatient(
                account_pb2.BindPatientRequest(
                    request_id=rid(), hospital_id=env.hospital_id, patient=who
                ),
                metadata=app.md(),
                timeout=20,
            )
            assert [(h.hospital_id, h.hospital_patient_id) for h in bound.patient.hospitals] == [
                (env.hospital_id, known.patient_id)
            ]
            assert bound.patient.region_code == known.id_number[:2]
            # A new patient, registered by the hospital once however often the bind is sent.
            new = patient_pb2.PatientIdentity(
                name="赵六",
                id_card_type=patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
                id_card_number=_resident("44030519880808001"),
                phone="+8613700000000",
            )
            before = len(env.his.core.patients)
            request = account_pb2.BindPatientRequest(
                request_id=rid(),
                hospital_id=env.hospital_id,
                patient=new,
                register_if_not_found=True,
            )
            first = await app.stub.BindPatient(request, metadata=app.md(), timeout=20)
            again = await app.stub.BindPatient(request, metadata=app.md(), timeout=20)
            assert first == again
            assert first.registered_at_hospital
            assert len(env.his.core.patients) == before + 1
            # The hospital knows this document under another name: its refusal, passed on.
            other = patient_pb2.PatientIdentity(
                name="钱七", id_card_type=new.id_card_type, id_card_number=new.id_card_number
            )
            with pytest.raises(errors.FailedPrecondition) as mismatch:
                await app.stub.BindPatient(
                    account_pb2.BindPatientRequest(
                        request_id=rid(),
                        hospital_id=env.hospital_id,
                        patient=other,
                        register_if_not_found=True,
                    ),
                    metadata=app.md(),
                    timeout=20,
                )
            assert mismatch.value.reason == "IDENTITY_MISMATCH"
            # A hospital of the platform whose front-end server is not connected.
            assert node.credentials is not None
            await node.credentials.issue("h-offline")
            with pytest.raises(errors.Unavailable) as offline:
                await app.stub.BindPatient(
                    account_pb2.BindPatientRequest(
                        request_id=rid(), hospital_id="h-offline", patient=who
                    ),
                    metadata=app.md(),
                    timeout=20,
                )
            assert offline.value.reason == "HOSPITAL_NOT_CONNECTED"
            listed = await app.stub.ListPatients(
                account_pb2.ListPatientsRequest(), metadata=app.md(), timeout=5
            )
            assert [p.name for p in listed.patients] == [known.name, "赵六"]


def _resident(first17: str) -> str:
    from tools.his_sim import id_card_check_digit

    return first17 + id_card_check_digit(first17)


async def _buf_curl(node: CloudNode, method: str, body: str, *headers: str) -> dict[str, object]:
    assert node.tls is not None
    argv = [str(BUF), "curl", "--protocol", "grpc", "--cacert", str(node.tls.ca_cert)]
    for header in headers:
        argv += ["-H", header]
    argv += ["-d", body, f"https://localhost:{node.port}/hplus.cloud.v1.AccountService/{method}"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    reply: dict[str, object] = json.loads(out)
    return reply


@pytest.mark.skipif(not BUF.exists(), reason="buf is not installed in this environment")
async def test_buf_curl_signs_in_and_reads_over_reflection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's "Sign in and read", as a person runs it."""
    phone = "+8613800138000"
    async with cloud_node(tmp_path) as node:
        assert node.accounts is not None
        issued = await node.accounts.apps.issue("buf-curl", Channel.WEB, Rate(100, 1.0))
        app = f"x-hplus-app-key: {issued.key}"
        with caplog.at_level(logging.DEBUG, logger="cloud"):
            started = await _buf_curl(
                node, "StartSignIn", json.dumps({"requestId": rid(), "phone": phone}), app
            )
            challenge = str(started["challengeId"])
            code = code_for(node, challenge)
            done = await _buf_curl(
                node,
                "CompleteSignIn",
                json.dumps({"requestId": rid(), "challengeId": challenge, "code": code}),
                app,
            )
            token = str(done["accessToken"])
            me = await _buf_curl(node, "GetAccount", "{}", app, f"authorization: Bearer {token}")
            patients = await _buf_curl(
                node, "ListPatients", "{}", app, f"authorization: Bearer {token}"
            )
        assert me["account"] == done["account"]
        assert me["sessionId"] == done["sessionId"]
        assert patients == {"maxPatients": 10}
    # Nothing logged a full phone number or a code, but the code sender's own line.
    for record in caplog.records:
        text = record.getMessage()
        assert "13800138000" not in text
        assert token not in text
        if code in text:
            assert record.name == "cloud.accounts._codes"
            assert "138****8000" in text


async def test_a_split_while_the_node_serves_keeps_every_account_and_session(
    tmp_path: Path,
) -> None:
    urls = sqlite_databases(tmp_path / "db")
    (tmp_path / "db").mkdir()
    async with cloud_node(tmp_path / "node") as node:
        channel, key = await connect(node)
        async with channel:
            apps = [App(node, channel, key) for _ in range(6)]
            # Numbers whose regions are 11, 31, 36, 44, 51 and 65: both partitions.
            phones = [f"+86138{hlr:04d}0000" for hlr in (0, 8, 13, 18, 22, 30)]
            before = [await a.sign_in(p) for a, p in zip(apps, phones, strict=True)]
            regions = {b.account.region_code for b in before}
            assert regions & NORTH
            assert regions & SOUTH

            env = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
            env["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
            split = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tools.cli", "partitions", "split", "south",
                "--into", f"east={urls['east']},west={urls['west']}",
                "--data-dir", str(node.config.data_dir),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip
            # Sign-ins go on during the split.
            during = [App(node, channel, key) for _ in range(4)]
            signing = asyncio.gather(
                *(a.sign_in(f"+86150{8 + i:04d}{i:04d}") for i, a in enumerate(during))
            )
            out, _ = await asyncio.wait_for(split.communicate(), 120)
            await signing
            assert split.returncode == 0, out.decode()
            assert "refused writes for" in out.decode()
            assert node.partitions is not None
            await node.partitions.refresh()  # or wait for the poll; the test need not wait
            assert {p.name for p in node.partitions.map.active} == {"east", "west", "north"}
            for a, b in zip(apps + during, before + [None] * len(during), strict=True):
                me = await a.stub.GetAccount(
                    account_pb2.GetAccountRequest(), metadata=a.md(), timeout=5
                )
                if b is not None:
                    assert me.account == b.account
            status = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tools.cli", "partitions", "status",
                "--data-dir", str(node.config.data_dir),
                stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
            )  # fmt: skip
            text = (await status.communicate())[0].decode()
            assert "south        retired" in text
            assert "(redundant: never read)" in text
            assert "writes paused" in text
