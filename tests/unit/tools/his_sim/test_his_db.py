from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import create_async_engine

from tools.his_sim import DbHis, id_card_check_digit

CERT = "11010119900307001" + id_card_check_digit("11010119900307001")


async def _scenario(db) -> None:
    """Every operation of the database dialect, as an adapter would run them."""
    core = db.his.core
    depts = await db.query(f'SELECT * FROM {db.t("V_HIS_DEPT")} ORDER BY "SORT_NO"')
    assert len(depts) == len(core.departments)
    assert depts[0]["DEPT_NAME"] == "内科"
    docs = await db.query(f'SELECT * FROM {db.t("V_HIS_DOCTOR")} WHERE "DEPT_ID" = :d', d="0402")
    assert docs
    assert {d["TITLE_CODE"] for d in docs} <= {"ZR", "FZR", "ZZ", "ZY"}
    day = core.today + dt.timedelta(days=1)
    scheds = await db.query(
        f'SELECT * FROM {db.t("V_HIS_DOCTOR_SCHEDULE")} WHERE "WORK_DATE" = :d', d=day
    )
    assert scheds
    assert {s["NOON_CODE"] for s in scheds} <= {"01", "02"}

    pid = "P00000030"
    slot = core.bookable_slot(patient_id=pid)
    before = await db.query(
        f'SELECT * FROM {db.t("V_HIS_SCHEDULE_SOURCE")} WHERE "SOURCE_ID" = :s', s=slot.slot_id
    )
    lock = await db.ok(
        "P_LOCK_SOURCE", {"SOURCE_ID": slot.slot_id, "PATIENT_ID": pid, "LOCK_MINUTES": 5}
    )
    assert lock["REG_STATUS"] == "L"
    reg = await db.ok(
        "P_REGISTER",
        {
            "LOCK_ID": lock["LOCK_ID"],
            "PATIENT_ID": pid,
            "PAY_MODE": "WX",
            "PAY_TRADE_NO": "wx-db",
            "PAY_AMOUNT_FEN": lock["SELF_FEE_FEN"],
        },
    )
    assert reg["REG_STATUS"] == "R"
    assert reg["SEQ_NO"] >= 1
    rows = await db.query(
        f'SELECT * FROM {db.t("V_HIS_REG_RECORD")} WHERE "PATIENT_ID" = :p', p=pid
    )
    assert [(r["REG_ID"], r["REG_STATUS"]) for r in rows] == [(reg["REG_ID"], "R")]
    after = await db.query(
        f'SELECT * FROM {db.t("V_HIS_SCHEDULE_SOURCE")} WHERE "SOURCE_ID" = :s', s=slot.slot_id
    )
    assert after[0]["MODIFY_TIME"] > before[0]["MODIFY_TIME"]
    assert after[0]["REMAIN_NUM"] == before[0]["REMAIN_NUM"] - 1

    changed = await db.query(
        f'SELECT "SOURCE_ID" FROM {db.t("V_HIS_SCHEDULE_SOURCE")} WHERE "MODIFY_TIME" > :t',
        t=before[0]["MODIFY_TIME"],
    )
    assert [c["SOURCE_ID"] for c in changed] == [slot.slot_id]

    code, _, _ = await db.call("P_CANCEL_REG", {"REG_ID": reg["REG_ID"], "PATIENT_ID": "P00000001"})
    assert code == "E106"
    cancelled = await db.ok("P_CANCEL_REG", {"REG_ID": reg["REG_ID"], "PATIENT_ID": pid})
    assert cancelled["REG_STATUS"] == "C"

    recipes = await db.query(
        f'SELECT * FROM {db.t("V_HIS_UNPAID_RECIPE")} WHERE "PATIENT_ID" = :p', p=pid
    )
    nos = ",".join(r["RECIPE_NO"] for r in recipes)
    items = await db.query(
        f'SELECT * FROM {db.t("V_HIS_RECIPE_ITEM")} WHERE "RECIPE_NO" = :r',
        r=recipes[0]["RECIPE_NO"],
    )
    assert sum(i["AMOUNT_FEN"] for i in items) == recipes[0]["TOTAL_FEN"]
    pre = await db.ok("P_PRE_SETTLE", {"PATIENT_ID": pid, "RECIPE_NOS": nos})
    settle = await db.ok(
        "P_SETTLE",
        {
            "PATIENT_ID": pid,
            "RECIPE_NOS": nos,
            "PAY_MODE": "ZFB",
            "PAY_TRADE_NO": "ali-db",
            "PAY_AMOUNT_FEN": pre["CASH_FEN"],
        },
    )
    assert settle["CASH_FEN"] == pre["CASH_FEN"]
    assert (
        await db.query(
            f'SELECT * FROM {db.t("V_HIS_UNPAID_RECIPE")} WHERE "PATIENT_ID" = :p', p=pid
        )
        == []
    )
    refund = await db.ok("P_REFUND", {"SETTLE_ID": settle["SETTLE_ID"], "REFUND_FEN": 100})
    assert refund["REFUND_FEN"] == 100
    code, _, _ = await db.call("P_REFUND", {"SETTLE_ID": settle["SETTLE_ID"], "REFUND_FEN": 10**7})
    assert code == "E202"
    settles = await db.query(
        f'SELECT * FROM {db.t("V_HIS_SETTLE")} WHERE "SETTLE_ID" = :s', s=settle["SETTLE_ID"]
    )
    assert settles[0]["SETTLE_STATUS"] == "2"
    assert settles[0]["REFUNDED_FEN"] == 100
    ledger = await db.query(
        f'SELECT * FROM {db.t("V_HIS_DAY_LEDGER")} ORDER BY "BIZ_TIME"',
    )
    assert [x["BIZ_TYPE"] for x in ledger] == ["GH", "TH", "SF", "TF"]

    report = next(r for r in core.reports.values() if r.lab and not r.archived)
    heads = await db.query(
        f'SELECT * FROM {db.t("V_HIS_REPORT")} WHERE "PATIENT_ID" = :p', p=report.patient_id
    )
    assert report.report_id in {h["REPORT_ID"] for h in heads}
    content = await db.ok(
        "P_GET_REPORT", {"REPORT_ID": report.report_id, "PATIENT_ID": report.patient_id}
    )
    assert content["RESULTS"][0]["REF_RANGE"]
    assert content["RESULTS"][0]["ABNORMAL_FLAG"]

    made = await db.ok(
        "P_CREATE_PATIENT",
        {
            "PATIENT_NAME": "库测",
            "CERT_TYPE": "SFZ",
            "CERT_NO": CERT,
            "MOBILE": "13900000000",
        },
    )
    assert made["IS_NEW"] == "Y"
    found = await db.query(f'SELECT * FROM {db.t("V_HIS_PATIENT")} WHERE "CERT_NO" = :c', c=CERT)
    assert [f["PATIENT_ID"] for f in found] == [made["PATIENT_ID"]]
    assert found[0]["SEX"] == "男"
    assert str(found[0]["BIRTHDAY"]) == "1990-03-07"


async def test_sqlite_every_operation(db):
    await _scenario(db)


async def test_postgresql_every_operation_in_prefixed_tables(postgres_url, today, db_client):
    prefix = f"T{uuid.uuid4().hex[:8].upper()}_"
    async with DbHis(
        seed=13, today=today, db_url=postgres_url, table_prefix=prefix, drop_on_stop=True
    ) as his:
        engine = create_async_engine(postgres_url)
        try:
            await _scenario(db_client(engine, his))
        finally:
            await engine.dispose()
    engine = create_async_engine(postgres_url)
    try:
        leftovers = await db_client(engine, his).query(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE :p",
            p=prefix + "%",
        )
    finally:
        await engine.dispose()
    assert leftovers == []


async def test_bad_requests_get_error_rows(db):
    code, msg, _ = await db.call("P_NO_SUCH_PROC", {})
    assert code == "E001"
    assert "存储过程" in msg
    code, _, _ = await db.call("P_LOCK_SOURCE", "{broken")
    assert code == "E001"
    code, msg, _ = await db.call("P_LOCK_SOURCE", {"PATIENT_ID": "P00000001"})
    assert code == "E001"
    assert "SOURCE_ID" in msg
    code, _, _ = await db.call("P_LOCK_SOURCE", {"SOURCE_ID": "NOPE", "PATIENT_ID": "P00000001"})
    assert code == "E002"
    code, _, _ = await db.call(
        "P_LOCK_SOURCE", {"SOURCE_ID": "H0000001", "PATIENT_ID": "P00000001", "LOCK_MINUTES": []}
    )
    assert code == "E001"
    status = await db.query(f'SELECT "STATUS" FROM {db.t("T_PROC_REQUEST")}')
    assert {s["STATUS"] for s in status} == {"E"}


async def test_no_query_by_callers_key(db):
    """The DB HIS stores no caller reference: a booking row carries none to match on."""
    pid = "P00000029"
    slot = db.his.core.bookable_slot(patient_id=pid)
    await db.ok("P_REGISTER", {"SOURCE_ID": slot.slot_id, "PATIENT_ID": pid, "ORDER_NO": "k"})
    row = (await db.query(f"SELECT * FROM {db.t('V_HIS_REG_RECORD')}"))[0]
    assert "k" not in {str(v) for v in row.values()}


async def test_deleted_schedules_are_logged_for_incremental_sync(db):
    core = db.his.core
    sched_id = next(iter(core.schedules))
    core.delete_schedule(sched_id)
    # The mirror applies changes on its next cycle; any procedure call waits for one.
    await db.call("P_NO_SUCH_PROC", {})
    log = await db.query(f"SELECT * FROM {db.t('V_HIS_DELETED_LOG')}")
    assert ("SCHEDULE", sched_id) in {(r["ENTITY_TYPE"], r["ENTITY_ID"]) for r in log}
    gone = await db.query(
        f'SELECT * FROM {db.t("V_HIS_DOCTOR_SCHEDULE")} WHERE "SCHEDULE_ID" = :s', s=sched_id
    )
    assert gone == []
