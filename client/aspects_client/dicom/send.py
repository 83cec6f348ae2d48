"""C-STORE of the DICOM outputs (SEG, SR, secondary capture) to a DICOM node (pynetdicom).

One association per call; for each SOP class sent, one presentation context per transfer
syntax (the dataset's own, explicit and implicit VR little endian), so a node that prefers
implicit VR still receives each object in its own encoding when it accepts that. Success
and warning statuses (0x0000, 0xB000, 0xB006, 0xB007) are returned; a failure status, a
rejected or aborted association or an unreachable node raises a ``DicomSendError`` subclass
whose message says what to check. Logs name SOP classes, counts and the node, never a
patient attribute.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import (
    AssociationRejectedError,
    CancelledError,
    DicomNodeUnreachableError,
    StoreFailedError,
    UsageError,
)

log = logging.getLogger(__name__)

DEFAULT_CALLING_AE = "ASPECTS"
DEFAULT_TIMEOUT_S = 30.0
SUCCESS_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})  # PS3.4 B.2.3: success/warning
_DESTINATION = re.compile(
    r"(?P<ae>[^@]+)@(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\[\]]+)):(?P<port>\d+)"
)
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 chars, no backslash/control



@dataclass(frozen=True)
class DicomNode:
    """A DICOM node: its AE title, host name or address, and TCP port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def parse_destination(text: str) -> DicomNode:
    """``"AE@host:port"`` (IPv6 as ``AE@[::1]:104``) -> DicomNode; UsageError if malformed."""
    hint = "use AE@host:port, e.g. PACS@10.0.0.5:104"
    m = _DESTINATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise UsageError(f"DICOM destination {text!r} is not AE@host:port; {hint}")
    ae, port = m["ae"].strip(), int(m["port"])
    check_ae_title(ae, "the destination's AE title")
    if not 1 <= port <= 65535:
        raise UsageError(f"DICOM destination port {port} is outside 1..65535; {hint}")
    return DicomNode(ae, m["v6"] or m["host"], port)


def check_ae_title(title: str, what: str = "AE title") -> str:
    """``title`` if it is a valid AE title (1..16 printable characters, no backslash)."""
    if not isinstance(title, str) or not _AE_TITLE.match(title) or not title.strip():
        raise UsageError(
            f"{what} {title!r} is not a DICOM AE title: use 1-16 printable characters "
            "without a backslash"
        )
    return title


def send_datasets(
    datasets: Sequence[Dataset],
    *,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = DEFAULT_CALLING_AE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cancel: threading.Event | None = None,
) -> list[int]:
    """C-STORE every dataset, in order, over one association; returns their status codes.

    datasets: composite instances with SOPClassUID/SOPInstanceUID (and file_meta, whose
    TransferSyntaxUID is offered first). timeout_s bounds the TCP connect, the association
    and each DIMSE exchange. Raises DicomNodeUnreachableError, AssociationRejectedError,
    StoreFailedError (the first failure stops the rest; the message counts what was stored).
    ``cancel`` (Ctrl-C, SIGTERM) aborts the association at once, even inside a stalled
    exchange: CancelledError.
    """
    from pynetdicom import AE

    check_ae_title(called_ae, "called AE title")
    check_ae_title(calling_ae, "calling AE title")
    if not datasets:
        return []
    if not (isinstance(timeout_s, int | float) and timeout_s > 0):
        raise UsageError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    node = DicomNode(called_ae, host, int(port))
    ae = AE(ae_title=calling_ae)
    _configure_ae(ae, datasets, timeout_s)
    _check_reachable(node, timeout_s)
    assoc = _associate(ae, node, timeout_s)
    statuses = _store_all(assoc, datasets, node, timeout_s, cancel)
    log.info("stored %d DICOM objects at %s", len(statuses), node)
    return statuses


def _configure_ae(ae: Any, datasets: Sequence[Dataset], timeout_s: float) -> None:
    """Set the AE's four timeouts to ``timeout_s`` and request the datasets' contexts."""
    for seconds in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, seconds, float(timeout_s))
    for sop_class, syntaxes in _contexts(datasets).items():
        for syntax in syntaxes:  # one context per syntax: the node cannot pick another first
            ae.add_requested_context(sop_class, syntax)


def _associate(ae: Any, node: DicomNode, timeout_s: float) -> Any:
    """The established association with ``node``; raises why when there is none."""
    started = time.monotonic()
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        _raise_not_associated(assoc, node, timeout_s, time.monotonic() - started)
    return assoc


def _store_all(
    assoc: Any,
    datasets: Sequence[Dataset],
    node: DicomNode,
    timeout_s: float,
    cancel: threading.Event | None,
) -> list[int]:
    """C-STORE each dataset in order over ``assoc``, then release it unless cancelled."""
    statuses: list[int] = []
    done = threading.Event()
    if cancel is not None:  # a stalled C-STORE would hold a cancelled run for timeout_s
        threading.Thread(target=_abort_on, args=(cancel, done, assoc), daemon=True).start()
    try:
        for n, ds in enumerate(datasets):
            statuses.append(_store_one(assoc, ds, node, n, len(datasets), timeout_s, cancel))
    finally:
        done.set()
        if assoc.is_established and not (cancel is not None and cancel.is_set()):
            assoc.release()  # (a cancelled association is being aborted: no release wait)
    return statuses


def _store_one(
    assoc: Any,
    ds: Dataset,
    node: DicomNode,
    n: int,
    of: int,
    timeout_s: float,
    cancel: threading.Event | None,
) -> int:
    """The success or warning status of the C-STORE of dataset ``n`` (0-based) of ``of``."""
    _raise_if_cancelled(cancel, node, n, of)
    what = _describe(ds)
    try:
        status = assoc.send_c_store(ds)
    except RuntimeError:  # aborted by a cancel between the check and the send
        _raise_if_cancelled(cancel, node, n, of)
        raise
    except ValueError as exc:  # no accepted context for this SOP class / syntax
        raise AssociationRejectedError(
            f"{node} accepted no presentation context for {what} ({exc}); configure "
            f"the node to accept this SOP class (stored {n} of {of})"
        ) from None
    _raise_if_cancelled(cancel, node, n, of)  # an abort ends a stall
    return _checked_status(status, what, node, n, of, timeout_s)


def _checked_status(
    status: Dataset, what: str, node: DicomNode, n: int, of: int, timeout_s: float
) -> int:
    """The C-STORE response's status code; StoreFailedError when absent or a failure."""
    code = int(status.Status) if "Status" in status else None
    if code is None:
        raise StoreFailedError(
            f"{node} gave no answer to the C-STORE of {what} (association aborted or "
            f"timed out after {timeout_s:g} s); check the node's log "
            f"(stored {n} of {of})"
        )
    if code not in SUCCESS_STATUSES:
        raise StoreFailedError(
            f"{node} refused {what} with status 0x{code:04X} "
            f"({_status_meaning(code)}); check the node's log and storage "
            f"(stored {n} of {of})"
        )
    return code


def _raise_if_cancelled(cancel: threading.Event | None, node: DicomNode, n: int, of: int) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError(f"sending to {node} cancelled (stored {n} of {of}); run it again")


def _abort_on(cancel: threading.Event, done: threading.Event, assoc: Any) -> None:
    """Abort ``assoc`` when ``cancel`` is set before ``done``."""
    while not done.wait(0.1):
        if cancel.is_set():
            assoc.abort()
            # a C-STORE waiting for its answer waits on the DIMSE queue (up to the DIMSE
            # timeout): wake it with the "no message" item pynetdicom uses for an abort
            assoc.dimse.msg_queue.put((None, None))
            return


def _contexts(datasets: Sequence[Dataset]) -> dict[str, list[str]]:
    """SOP Class UID -> transfer syntaxes to offer (each dataset's own first)."""
    out: dict[str, list[str]] = {}
    for ds in datasets:
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise UsageError("every dataset to send needs a SOPClassUID and a SOPInstanceUID")
        own = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntaxes = out.setdefault(str(ds.SOPClassUID), [])
        for ts in (own, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if ts and str(ts) not in syntaxes:
                syntaxes.append(str(ts))
    return out


def _check_reachable(node: DicomNode, timeout_s: float) -> None:
    """Open (and close) a TCP connection first, so that an unreachable node is named as
    such (pynetdicom reports a refused connection like an aborted association)."""
    try:
        with socket.create_connection((node.host, node.port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DicomNodeUnreachableError(
            f"cannot reach DICOM node {node} ({reason}); check the host, the port and that "
            "the node is running and reachable through the firewall"
        ) from None


def _raise_not_associated(assoc, node: DicomNode, timeout_s: float, waited_s: float) -> None:
    if assoc.is_aborted and waited_s >= 0.9 * timeout_s:  # silence, not an A-ABORT
        raise DicomNodeUnreachableError(
            f"{node} accepted the connection but did not answer the association request "
            f"within {timeout_s:g} s; check that {node.host}:{node.port} is the node's DICOM "
            "port and that the node is not hung"
        )
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        reason = f" (result {rsp.result_str}, reason {rsp.reason_str})" if rsp else ""
        raise AssociationRejectedError(
            f"{node} rejected the association{reason}; check the called AE title "
            f"{node.ae_title!r} and that the node knows this calling AE title"
        )
    if assoc.is_aborted:
        raise AssociationRejectedError(
            f"{node} aborted the association request; check the AE titles and that the "
            "node accepts this client"
        )
    raise DicomNodeUnreachableError(
        f"cannot reach DICOM node {node} within {timeout_s:g} s; check the host, the port "
        "and that the node is running and reachable through the firewall"
    )


def _describe(ds: Dataset) -> str:
    """'a SEG (Segmentation Storage)' style description, without patient data."""
    try:
        name = ds.SOPClassUID.name
    except Exception:
        name = str(ds.SOPClassUID)
    return f"a {ds.get('Modality', 'DICOM')} object ({name})"


def _status_meaning(code: int) -> str:
    try:
        from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

        return STORAGE_SERVICE_CLASS_STATUS.get(code, ("Failure", "unknown"))[1] or "failure"
    except Exception:
        return "failure"
