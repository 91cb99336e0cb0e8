"""Deterministic seeded data for a simulated hospital.

The same ``seed`` and ``today`` always give the same records (ids, names, fees, reports),
whatever the wall clock says.
"""

# Chinese vendor texts use full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from tools.his_sim._idcard import make_id_card
from tools.his_sim._model import (
    CST,
    Bill,
    Department,
    Doctor,
    FeeLine,
    ImagingContent,
    LabContent,
    Observation,
    Patient,
    Report,
    Schedule,
    Slot,
)

__all__ = ["SeedData", "generate", "make_bill"]

# (code, name, parent, standard subject code, bookable)
_DEPARTMENTS = (
    ("0100", "内科", "", "03", False),
    ("0101", "心血管内科", "0100", "03.04", True),
    ("0102", "消化内科", "0100", "03.02", True),
    ("0103", "呼吸内科", "0100", "03.01", True),
    ("0104", "内分泌科", "0100", "03.09", True),
    ("0200", "外科", "", "04", False),
    ("0201", "普通外科", "0200", "04.01", True),
    ("0202", "骨科", "0200", "04.03", True),
    ("0300", "儿科", "", "07", True),
    ("0400", "妇产科", "", "05", False),
    ("0401", "妇科", "0400", "05.01", True),
    ("0402", "产科", "0400", "05.02", True),
    ("0500", "眼科", "", "10", True),
    ("0600", "耳鼻咽喉科", "", "11", True),
    ("0700", "皮肤科", "", "13", True),
    ("0800", "中医科", "", "50", True),
)
_SPECIALTIES = {
    "0101": "高血压、冠心病、心律失常",
    "0102": "胃炎、消化性溃疡、肝病",
    "0103": "慢性阻塞性肺病、哮喘、肺部感染",
    "0104": "糖尿病、甲状腺疾病",
    "0201": "甲状腺、乳腺、疝气手术",
    "0202": "骨折、关节置换、脊柱疾病",
    "0300": "小儿呼吸道感染、发热、生长发育",
    "0401": "子宫肌瘤、妇科炎症",
    "0402": "产前检查、高危妊娠",
    "0500": "白内障、青光眼、屈光不正",
    "0600": "鼻炎、中耳炎、咽喉疾病",
    "0700": "湿疹、痤疮、银屑病",
    "0800": "中医内科调理、针灸",
}
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志文博宇浩然欣怡"
# title, title text, registration fee, diagnosis fee (fen)
_TITLES = (
    ("CHIEF", "主任医师", 100, 4900),
    ("ASSOCIATE_CHIEF", "副主任医师", 100, 2900),
    ("ATTENDING", "主治医师", 100, 1400),
    ("RESIDENT", "住院医师", 100, 900),
)
_ETHNICITIES = ("汉族", "汉族", "汉族", "汉族", "回族", "满族", "壮族")
_STREETS = ("人民路", "解放路", "中山路", "建设路", "和平街", "长江路", "青年路")

# code, name, abbreviation, unit, low, high, decimals
_CBC = (
    ("6690-2", "白细胞计数", "WBC", "10^9/L", 3.5, 9.5, 2),
    ("789-8", "红细胞计数", "RBC", "10^12/L", 4.3, 5.8, 2),
    ("718-7", "血红蛋白", "HGB", "g/L", 130.0, 175.0, 0),
    ("777-3", "血小板计数", "PLT", "10^9/L", 125.0, 350.0, 0),
    ("770-8", "中性粒细胞百分比", "NEUT%", "%", 40.0, 75.0, 1),
)
_CHEM = (
    ("1742-6", "丙氨酸氨基转移酶", "ALT", "U/L", 9.0, 50.0, 0),
    ("2160-0", "肌酐", "CREA", "umol/L", 57.0, 111.0, 0),
    ("2345-7", "葡萄糖", "GLU", "mmol/L", 3.9, 6.1, 2),
    ("2093-3", "总胆固醇", "TC", "mmol/L", 0.0, 5.2, 2),
)
_IMAGING = (
    (
        "CT",
        "胸部",
        "平扫",
        "胸部CT平扫",
        "双肺纹理清晰，未见明确实质性病变。纵隔居中，心影大小正常。",
        "胸部CT平扫未见明显异常。",
    ),
    (
        "DX",
        "胸部",
        "正位",
        "胸部正位片",
        "双肺野清晰，肺门不大，心膈未见异常。",
        "心肺膈未见明显异常。",
    ),
    (
        "US",
        "腹部",
        "常规",
        "腹部彩超",
        "肝脏形态大小正常，回声均匀；胆囊壁毛糙。",
        "胆囊壁毛糙，请结合临床。",
    ),
)


@dataclass
class SeedData:
    """Everything a simulated hospital starts with."""

    departments: list[Department] = field(default_factory=list)
    doctors: list[Doctor] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    patients: list[Patient] = field(default_factory=list)
    bills: list[Bill] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)


def _name(rng: random.Random) -> str:
    given = rng.choice(_GIVEN) + (rng.choice(_GIVEN) if rng.random() < 0.7 else "")
    return rng.choice(_SURNAMES) + given


def _phone(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


def make_bill(
    rng: random.Random, bill_id: str, patient_id: str, dept_id: str, doctor_id: str, at: dt.datetime
) -> Bill:
    """Makes one unpaid bill (a prescription or a lab order) with plausible lines.

    Args:
        rng: Seeded randomness.
        bill_id: Id to give the bill.
        patient_id: Owner of the bill.
        dept_id: Ordering department.
        doctor_id: Ordering doctor.
        at: Order time.

    Returns:
        The bill.
    """
    if rng.random() < 0.5:
        drugs = (
            ("Y0001", "阿莫西林胶囊", "盒", 1850),
            ("Y0002", "布洛芬缓释胶囊", "盒", 2360),
            ("Y0003", "复方甘草片", "瓶", 850),
            ("Y0004", "奥美拉唑肠溶胶囊", "盒", 3120),
        )
        lines = []
        for code, name, unit, price in rng.sample(drugs, 2):
            qty = rng.randint(1, 3)
            lines.append(FeeLine(code, name, "西药费", str(qty), unit, price, qty * price))
        title = "西药处方"
    else:
        tests = (
            ("J0001", "血常规", 2000),
            ("J0002", "肝功能", 6500),
            ("J0003", "血糖", 800),
            ("J0004", "尿常规", 1500),
        )
        picked = rng.sample(tests, 2)
        lines = [FeeLine(c, n, "化验费", "1", "项", p, p) for c, n, p in picked]
        title = "检验申请: " + ", ".join(n for _, n, _ in picked)
    return Bill(bill_id, patient_id, "", dept_id, doctor_id, title, at, lines)


def _observation(
    rng: random.Random, spec: tuple[str, str, str, str, float, float, int], order: int
) -> Observation:
    code, name, abbr, unit, low, high, decimals = spec
    span = high - low
    roll = rng.random()
    if roll < 0.15:
        value, flag = low - span * rng.uniform(0.05, 0.3), "L"
    elif roll < 0.3:
        value, flag = high + span * rng.uniform(0.05, 0.3), "H"
    else:
        value, flag = rng.uniform(low, high), "N"
    value = max(value, 0.0)
    fmt = f"{{:.{decimals}f}}"
    low_s, high_s = fmt.format(low), fmt.format(high)
    text = f"<{high_s}" if low == 0.0 else f"{low_s}-{high_s}"
    return Observation(
        code, name, abbr, fmt.format(value), True, unit, low_s, high_s, text, flag, order
    )


def generate(seed: int, today: dt.date, *, days: int = 7) -> SeedData:
    """Generates the seeded data of one hospital.

    Args:
        seed: Seed of the random generator; the same seed gives the same data.
        today: First day of the schedule horizon (hospital local date).
        days: Number of days of schedules from ``today``.

    Returns:
        The data.
    """
    rng = random.Random(seed)
    base = dt.datetime.combine(today, dt.time(0, 0), CST)
    data = SeedData()
    for order, (code, name, parent, subject, bookable) in enumerate(_DEPARTMENTS, 1):
        floor = rng.randint(1, 5)
        data.departments.append(
            Department(
                code,
                name,
                parent,
                subject,
                f"门诊楼{floor}楼{'ABC'[order % 3]}区" if bookable else "",
                f"{name}是我院重点专科之一。",
                bookable,
                order,
                1,
                base,
            )
        )
    leaf = [d for d in data.departments if d.bookable]
    doc_no = 0
    for dept in leaf:
        for _ in range(rng.randint(2, 4)):
            doc_no += 1
            title, text, _, _ = rng.choice(_TITLES)
            female = rng.random() < 0.5 or dept.dept_id in ("0401", "0402")
            data.doctors.append(
                Doctor(
                    f"D{doc_no:04d}",
                    _name(rng),
                    title,
                    text,
                    [dept.dept_id],
                    "F" if female else "M",
                    _SPECIALTIES.get(dept.dept_id, ""),
                    f"{text}，从事{dept.name}临床工作{rng.randint(5, 30)}年。",
                    f"https://his-sim.example/photos/D{doc_no:04d}.jpg",
                    rng.random() > 0.1,
                    1,
                    base,
                )
            )
    fees = {t[0]: (t[2], t[3]) for t in _TITLES}
    sched_no = 0
    slot_no = 0
    for day in range(days):
        date = today + dt.timedelta(days=day)
        for dept in leaf:
            gender = "F" if dept.dept_id in ("0401", "0402") else ""
            max_age = 14 if dept.dept_id == "0300" else 0
            min_age = 14 if dept.dept_id in ("0101", "0104") else 0
            sessions: list[tuple[str, str]] = [("", "AM"), ("", "PM")]
            for doc in data.doctors:
                if dept.dept_id in doc.dept_ids and rng.random() < 0.45:
                    sessions.append((doc.doctor_id, rng.choice(("AM", "PM"))))
            for doctor_id, period in sessions:
                sched_no += 1
                if period == "AM":
                    start, end = dt.time(8, 0), dt.time(12, 0)
                else:
                    start, end = dt.time(13, 30), dt.time(17, 30)
                if doctor_id:
                    doc = next(d for d in data.doctors if d.doctor_id == doctor_id)
                    reg, diag = fees[doc.title]
                    clinic = "RENOWNED" if doc.title == "CHIEF" else "EXPERT"
                    mode = "NUMBERED" if rng.random() < 0.6 else "TIMED"
                    capacity = rng.choice((8, 10, 12)) if mode == "NUMBERED" else 3
                else:
                    reg, diag, clinic = 100, 900, "GENERAL"
                    mode = rng.choice(("SESSION", "SESSION", "UNLIMITED"))
                    capacity = 30 if mode == "SESSION" else 0
                sched = Schedule(
                    f"S{sched_no:06d}",
                    dept.dept_id,
                    doctor_id,
                    clinic,
                    date,
                    period,
                    start,
                    end,
                    f"{dept.location} {rng.randint(1, 20)}诊室",
                    reg,
                    diag,
                    mode,
                    capacity,
                    False,
                    "",
                    min_age,
                    max_age,
                    gender,
                    1,
                    base,
                )
                data.schedules.append(sched)
                begin = sched.start_at
                if mode in ("SESSION", "UNLIMITED"):
                    slot_no += 1
                    data.slots.append(
                        Slot(
                            f"H{slot_no:07d}",
                            sched.schedule_id,
                            begin,
                            sched.end_at,
                            capacity,
                            0,
                            1,
                            base,
                        )
                    )
                elif mode == "NUMBERED":
                    step = (sched.end_at - begin) / capacity
                    for number in range(1, capacity + 1):
                        slot_no += 1
                        at = begin + step * (number - 1)
                        data.slots.append(
                            Slot(
                                f"H{slot_no:07d}",
                                sched.schedule_id,
                                at,
                                at + step,
                                1,
                                number,
                                1,
                                base,
                            )
                        )
                else:
                    at = begin
                    while at < sched.end_at:
                        slot_no += 1
                        data.slots.append(
                            Slot(
                                f"H{slot_no:07d}",
                                sched.schedule_id,
                                at,
                                at + dt.timedelta(minutes=30),
                                capacity,
                                0,
                                1,
                                base,
                            )
                        )
                        at += dt.timedelta(minutes=30)
    bill_no = 0
    report_no = 0
    for number in range(1, 31):
        male = rng.random() < 0.5
        birth = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 65))
        if number <= 3:
            birth = today - dt.timedelta(days=365 * rng.randint(2, 10))
        patient = Patient(
            f"P{number:08d}",
            _name(rng),
            "M" if male else "F",
            birth,
            "RESIDENT",
            make_id_card(rng, birth, male),
            _phone(rng),
            f"{rng.choice(('北京市', '上海市', '广州市', '杭州市'))}"
            f"{rng.choice(_STREETS)}{rng.randint(1, 300)}号",
            rng.choice(_ETHNICITIES),
            f"JZK{rng.randrange(10**9):09d}",
            rng.choice(("SELF", "SELF", "EMPLOYEE", "RESIDENT")),
            "",
            base - dt.timedelta(days=rng.randint(30, 2000)),
            base - dt.timedelta(days=rng.randint(0, 29)),
        )
        if patient.payer != "SELF":
            patient.insurance_number = f"YB{rng.randrange(10**10):010d}"
        data.patients.append(patient)
        for _ in range(2):
            bill_no += 1
            dept = rng.choice(leaf)
            doc_ids = [d.doctor_id for d in data.doctors if dept.dept_id in d.dept_ids]
            at = base - dt.timedelta(hours=rng.randint(1, 48))
            data.bills.append(
                make_bill(
                    rng,
                    f"CF{bill_no:08d}",
                    patient.patient_id,
                    dept.dept_id,
                    rng.choice(doc_ids),
                    at,
                )
            )
        for index in range(rng.randint(1, 3)):
            report_no += 1
            dept = rng.choice(leaf)
            issued = base - dt.timedelta(days=rng.randint(0, 60), hours=rng.randint(0, 12))
            ready = index > 0 or rng.random() < 0.85
            report_id = f"R{report_no:08d}"
            if rng.random() < 0.65:
                specs = _CBC if rng.random() < 0.6 else _CHEM
                title = "血常规" if specs is _CBC else "生化全项"
                obs = [_observation(rng, spec, i) for i, spec in enumerate(specs, 1)]
                report = Report(
                    report_id,
                    patient.patient_id,
                    "LAB",
                    title,
                    "FINAL" if ready else "REGISTERED",
                    dept.dept_id,
                    "",
                    issued if ready else None,
                    None if ready else base + dt.timedelta(days=1, hours=16),
                    _name(rng),
                    _name(rng),
                    "上呼吸道感染",
                    False,
                    lab=LabContent(
                        "静脉血",
                        issued - dt.timedelta(hours=3),
                        issued - dt.timedelta(hours=2),
                        obs,
                        "",
                    )
                    if ready
                    else None,
                )
            else:
                modality, site, method, title, findings, conclusion = rng.choice(_IMAGING)
                report = Report(
                    report_id,
                    patient.patient_id,
                    "IMAGING",
                    title,
                    "FINAL" if ready else "REGISTERED",
                    dept.dept_id,
                    "",
                    issued if ready else None,
                    None if ready else base + dt.timedelta(days=1, hours=16),
                    _name(rng),
                    _name(rng),
                    "体检",
                    False,
                    imaging=ImagingContent(
                        modality,
                        site,
                        method,
                        findings,
                        conclusion,
                        issued - dt.timedelta(hours=1),
                        f"1.2.840.113619.2.{seed % 1000}.{report_no}.{rng.randrange(10**6)}",
                    )
                    if ready
                    else None,
                )
            # Reports older than 45 days sit in the HIS archive from the start.
            report.archived = ready and (base - issued) > dt.timedelta(days=45)
            data.reports.append(report)
    return data
