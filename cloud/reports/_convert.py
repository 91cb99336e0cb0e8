"""The hospital contract's reports → the patient API's reports."""

from __future__ import annotations

from hplus.cloud.v1 import patient_pb2
from hplus.hospital.v1 import report_pb2

__all__ = ["report", "summary"]

_KINDS = {
    report_pb2.REPORT_TYPE_LAB: patient_pb2.REPORT_KIND_LABORATORY,
    report_pb2.REPORT_TYPE_IMAGING: patient_pb2.REPORT_KIND_IMAGING,
    report_pb2.REPORT_TYPE_PATHOLOGY: patient_pb2.REPORT_KIND_PATHOLOGY,
}
_STATUS = {
    report_pb2.REPORT_STATUS_REGISTERED: patient_pb2.REPORT_STATUS_PENDING,
    report_pb2.REPORT_STATUS_PARTIAL: patient_pb2.REPORT_STATUS_PARTIAL,
    report_pb2.REPORT_STATUS_PRELIMINARY: patient_pb2.REPORT_STATUS_PARTIAL,
    report_pb2.REPORT_STATUS_FINAL: patient_pb2.REPORT_STATUS_FINAL,
    report_pb2.REPORT_STATUS_AMENDED: patient_pb2.REPORT_STATUS_AMENDED,
    report_pb2.REPORT_STATUS_CANCELLED: patient_pb2.REPORT_STATUS_CANCELLED,
}
_FLAGS = {
    report_pb2.INTERPRETATION_NORMAL: patient_pb2.RESULT_FLAG_NORMAL,
    report_pb2.INTERPRETATION_LOW: patient_pb2.RESULT_FLAG_LOW,
    report_pb2.INTERPRETATION_HIGH: patient_pb2.RESULT_FLAG_HIGH,
    report_pb2.INTERPRETATION_CRITICAL_LOW: patient_pb2.RESULT_FLAG_CRITICAL,
    report_pb2.INTERPRETATION_CRITICAL_HIGH: patient_pb2.RESULT_FLAG_CRITICAL,
    report_pb2.INTERPRETATION_CRITICAL_ABNORMAL: patient_pb2.RESULT_FLAG_CRITICAL,
    report_pb2.INTERPRETATION_ABNORMAL: patient_pb2.RESULT_FLAG_ABNORMAL,
    report_pb2.INTERPRETATION_POSITIVE: patient_pb2.RESULT_FLAG_ABNORMAL,
    report_pb2.INTERPRETATION_NEGATIVE: patient_pb2.RESULT_FLAG_NORMAL,
}


def kind_of(value: report_pb2.ReportSummary) -> int:
    """The patient API's kind of a hospital report type."""
    return _KINDS.get(value.type, patient_pb2.REPORT_KIND_OTHER)


def summary(
    value: report_pb2.ReportSummary, *, report_id: str, hospital_id: str
) -> patient_pb2.ReportSummary:
    """A list entry, under the cloud's opaque ``report_id``."""
    out = patient_pb2.ReportSummary(
        report_id=report_id,
        hospital_id=hospital_id,
        kind=kind_of(value),  # type: ignore[arg-type]
        title=value.title,
        status=_STATUS.get(value.status, patient_pb2.REPORT_STATUS_UNSPECIFIED),
    )
    if value.HasField("issue_time"):
        out.report_time.CopyFrom(value.issue_time)
        out.examination_time.CopyFrom(value.issue_time)
    return out


def report(value: report_pb2.Report, *, report_id: str, hospital_id: str) -> patient_pb2.Report:
    """A full report, under the cloud's opaque ``report_id``."""
    out = patient_pb2.Report(
        summary=summary(value.summary, report_id=report_id, hospital_id=hospital_id),
        patient_name=value.patient_name,
        signed_by=value.verifier_name or value.reporter_name,
    )
    content = value.WhichOneof("content")
    if content == "lab":
        if value.lab.HasField("collect_time"):
            out.summary.examination_time.CopyFrom(value.lab.collect_time)
        for item in sorted(value.lab.observations, key=lambda o: o.display_order):
            shown = item.quantity.value if item.WhichOneof("value") == "quantity" else item.text
            out.items.append(
                patient_pb2.ResultItem(
                    code=item.code,
                    name=item.name,
                    value=shown,
                    unit=item.unit,
                    reference_range=item.reference_range.text,
                    flag=_FLAGS.get(item.interpretation, patient_pb2.RESULT_FLAG_UNSPECIFIED),
                )
            )
    elif content == "imaging":
        if value.imaging.HasField("study_time"):
            out.summary.examination_time.CopyFrom(value.imaging.study_time)
        out.findings = value.imaging.findings
        out.conclusion = value.imaging.conclusion
    return out
