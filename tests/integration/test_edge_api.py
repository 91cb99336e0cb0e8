"""EdgeService on a real node with a real edge and HIS simulator: report lookups through the
edge's queue, business probes (archive rotation, a changed answer), health with HIS state."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cloud.db import create_engine
from cloud.edgeconfig import ProbeCase, ProbesConfig
from cloud.monitoring import Prober, migrate_monitoring, read_availability, read_health
from cloud.reports import decode_report_id
from frontend_server.tasks import TaskState
from hplus.cloud.v1 import account_pb2, edge_pb2, patient_pb2
from hplus.hospital.v1 import admin_pb2
from mesh import errors
from tests.integration.hospital_env import hospital
from tests.integration.test_accounts import App, connect, rid
from tests.support.waiting import until
from tools.his_sim import Outage


def _final(his: object, *, readable: bool = True) -> list:  # type: ignore[type-arg]
    core = his.core  # type: ignore[attr-defined]
    return [
        r
        for r in core.reports.values()
        if r.status == "FINAL" and r.issue_time is not None and (not readable or not r.archived)
    ]


async def test_a_report_lookup_goes_pending_then_is_answered_through_the_queue(
    tmp_path: Path,
) -> None:
    async with hospital("rest", tmp_path) as env:
        node = env.node
        assert node.reports is not None
        assert node.accounts is not None
        core = env.his.core
        report = next(
            r for r in _final(env.his) if core.patients[r.patient_id].id_type == "RESIDENT"
        )
        known = core.patients[report.patient_id]
        who = patient_pb2.PatientIdentity(
            name=known.name,
            id_card_type=patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
            id_card_number=known.id_number,
        )
        channel, key = await connect(node)
        async with channel:
            app = App(node, channel, key)
            await app.sign_in("+8613800138011")
            await app.stub.BindPatient(
                account_pb2.BindPatientRequest(
                    request_id=rid(), hospital_id=env.hospital_id, patient=who
                ),
                metadata=app.md(),
                timeout=20,
            )
            caller = await node.accounts.auth.authenticate_account(app.md())
            request = patient_pb2.ListReportsRequest(hospital_id=env.hospital_id, patient=who)

            first = await node.reports.list_reports(request, caller)
            assert first.lookup_pending
            assert first.retry_after.ToNanoseconds() == round(node.config.reports.retry_after * 1e9)
            assert list(first.reports) == []
            # Asking again while pending queues nothing more.
            await node.reports.list_reports(request, caller)
            lookups = [t for _, t in await env.app.queue.list_tasks(kinds=["list_reports"])]
            assert len(lookups) == 1

            answered: list[patient_pb2.ListReportsResponse] = []

            async def listed() -> bool:
                got = await node.reports.list_reports(request, caller)
                if not got.lookup_pending:
                    answered.append(got)
                return not got.lookup_pending

            await until(listed, limit=30)
            reply = answered[-1]
            assert reply.HasField("as_of")
            want = {r.report_id for r in core.patient_reports(known.patient_id)}
            got_ids = set()
            for s in reply.reports:
                decoded = decode_report_id(s.report_id)
                assert decoded is not None
                assert decoded[0] == env.hospital_id
                got_ids.add(decoded[2])
            assert got_ids == want
            # The edge dropped the delivered result only after the cloud acknowledged it.
            task = await env.app.queue.get(lookups[0].task_id)
            assert task is not None
            assert task.state is TaskState.SUCCEEDED
            assert task.delivered_time is not None
            assert task.result is None

            mine = next(
                s for s in reply.reports if decode_report_id(s.report_id)[2] == report.report_id
            )  # type: ignore[index]
            get = patient_pb2.GetReportRequest(report_id=mine.report_id)
            with pytest.raises(errors.Unavailable) as pending:
                await node.reports.get_report(get, caller)
            assert pending.value.reason == "REPORT_LOOKUP_PENDING"
            assert pending.value.retry_delay == node.config.reports.retry_after
            read: list[patient_pb2.GetReportResponse] = []

            async def fetched() -> bool:
                try:
                    read.append(await node.reports.get_report(get, caller))
                except errors.Unavailable:
                    return False
                return True

            await until(fetched, limit=30)
            full = read[-1].report
            assert full.summary.report_id == mine.report_id
            assert full.summary.title == report.title
            if report.lab is not None:
                assert [i.name for i in full.items] == [
                    o.name for o in sorted(report.lab.observations, key=lambda o: o.order)
                ]
            else:
                assert report.imaging is not None
                assert full.findings == report.imaging.findings
            # Another account cannot read it by id.
            other = App(node, channel, key)
            await other.sign_in("+8613800138012")
            stranger = await node.accounts.auth.authenticate_account(other.md())
            with pytest.raises(errors.NotFound):
                await node.reports.get_report(get, stranger)


async def test_probes_rotate_an_archived_case_and_flag_a_changed_answer(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path) as env:
        core = env.his.core
        by_patient: dict[str, list] = {}  # type: ignore[type-arg]
        for r in _final(env.his):
            by_patient.setdefault(r.patient_id, []).append(r)
        patient_id = next(p for p, rs in by_patient.items() if len(rs) >= 2)
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'probes.db'}")
        try:
            await migrate_monitoring(engine)
            assert env.node.router is not None

            async def hospitals() -> list[str]:
                return [env.hospital_id]

            prober = Prober(
                engine,
                ProbesConfig(hospitals={env.hospital_id: ProbeCase(patient_id=patient_id)}),
                hospitals=hospitals,
                channel_for=env.node.router.channel_for,
            )
            first = {r.interface: r for r in await prober.run_round()}
            assert set(first) == {"departments", "reports", "bills"}
            assert all(r.available for r in first.values()), first
            case = first["reports"].case_id
            assert core.reports[case].patient_id == patient_id
            second = {r.interface: r for r in await prober.run_round()}
            assert [second[i].outcome for i in ("departments", "reports", "bills")] == ["OK"] * 3
            assert second["reports"].fingerprint == first["reports"].fingerprint

            core.archive_report(case)  # the HIS archives the known report: not an alarm
            third = {r.interface: r for r in await prober.run_round()}
            assert third["reports"].outcome == "ROTATED"
            assert third["reports"].available
            fresh = third["reports"].case_id
            assert fresh != case
            assert not core.reports[fresh].archived

            # The HIS starts answering the same read differently.
            changed = core.reports[fresh]
            if changed.lab is not None:
                changed.lab.observations[0].value = "999.9"
            else:
                assert changed.imaging is not None
                changed.imaging.findings += "补充说明"
            fourth = {r.interface: r for r in await prober.run_round()}
            assert fourth["reports"].outcome == "CHANGED"
            assert not fourth["reports"].available
            assert fourth["departments"].outcome == "OK"

            seen = await read_availability(engine, window=3600)
            pair = seen.pairs[(env.hospital_id, "reports")]
            assert pair["probes"] == 4
            assert pair["available"] == 3
            assert seen.share == pytest.approx(2 / 3)
            assert seen.as_dict()["available_share"] == pytest.approx(2 / 3)
        finally:
            await engine.dispose()


async def test_health_reports_reach_the_node_and_an_his_outage_raises_an_alert(
    tmp_path: Path,
) -> None:
    async with hospital("rest", tmp_path) as env:
        node = env.node
        uplink = env.app.uplink
        assert uplink is not None
        assert node.health is not None

        async def reported() -> bool:
            # The first report may precede the tunnel; its coming up is reported at once.
            latest = await node.health.latest(env.hospital_id)
            return bool(latest) and all(t.connected for t in latest[0].report.tunnels)

        await until(reported, limit=20)
        [edge] = await node.health.latest(env.hospital_id)
        assert edge.edge_id == env.app.edge_id
        assert edge.report.software_version
        assert [t.connected for t in edge.report.tunnels] == [True]
        assert edge.report.resources.disk_total_bytes > 0
        assert not [a for a in edge.alerts if a.kind == "HIS_UNREACHABLE"]

        await env.his.inject(Outage(mode="refuse"))
        assert uplink.his is not None
        await uplink.his.check()
        await uplink.report_health()
        [edge] = await node.health.latest(env.hospital_id)
        assert edge.report.state == edge_pb2.EDGE_HEALTH_STATE_UNHEALTHY
        assert [a.kind for a in edge.alerts] == ["HIS_UNREACHABLE"]
        info = await env.admin.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), timeout=10)
        his = next(c for c in info.components if c.name == "his")
        assert his.state == admin_pb2.COMPONENT_STATE_NOT_SERVING

        await env.his.clear_faults()
        await uplink.his.check()
        await uplink.report_health()
        assert await node.health.alerts(env.hospital_id) == []
        seen = await read_health(
            node.health._engine,  # the CLI reads the same tables
            node.config.health,
            env.hospital_id,
            now=dt.datetime.now(dt.UTC),
        )
        assert [e.alerts for e in seen] == [()]
