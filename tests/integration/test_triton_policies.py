"""Deployment policies a cluster can trust (issue 15), against real tritonserver 2.51 processes.

Every server here serves a CPU repository generated from the committed configs (the oracle
unet), so what is checked is what the committed configs declare:

- provenance: the served unet config carries the ``checkpoint`` parameter (note + sha256 of
  the unet.onnx served) and every result records it, the priority and the model version
  that answered (read from the responses; a version loaded after connecting is the one
  recorded);
- warm-up: every step ran its warm-up samples before the server said ready;
- priority: requests at both levels succeed through the ensemble, the ensemble hands each
  step the request's priority (the server's own request log), and an urgent request
  overtakes queued batch requests; an invalid priority is a UsageError / exit 2;
- bounded queues: Triton's words for a full queue and for a queue timeout, and how the
  client handles each (retried; a clear ServerUnavailableError when retries run out);
- restricted APIs: ``restricted_api_args`` keeps the model-repository API behind a header
  while a client segments as usual.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from aspects_devkit.local_triton import LocalTriton
from tritonclient.utils import InferenceServerException

from aspects_client import contract
from aspects_client.client import AspectsClient
from aspects_client.errors import ServerUnavailableError, UsageError
from aspects_client.inference import InferenceSettings, TritonSegmenter
from aspects_export import repository as repo

from .conftest import InProcessEnsemble, ServedRepository

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("triton_server_venv")]


def _slices(n: int, h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    """uint8 display slices of a phantom (the oracle answers from intensity)."""
    from aspects_client.display_stack import prepare
    from aspects_client.volume_io import load_volume
    from aspects_synth import make_phantom

    phantom = make_phantom(seed=seed, in_plane=(h, w), n_slices=max(n, contract.MIN_SLICES))
    return prepare(load_volume(phantom.image)).slices[:n]  # a volume has >= MIN_SLICES


def _phantom_image(n: int = 3, seed: int = 1):
    from aspects_synth import make_phantom

    return make_phantom(seed=seed, in_plane=(128, 128), n_slices=n).image


def _copy(repository: Path, out: Path) -> Path:
    shutil.copytree(repository, out, symlinks=True)
    return out


def _edit(path: Path, edit) -> None:
    config = repo.parse_config(path)
    edit(config)
    path.write_text(repo.config_to_text(config), encoding="utf-8")


def _wait_for_log(server: LocalTriton, pattern: str, seconds: float = 10.0) -> list[str]:
    """Lines of the server log matching ``pattern`` (waits for the log to be written)."""
    assert server.log_path is not None
    deadline = time.monotonic() + seconds
    while True:
        text = server.log_path.read_text(errors="replace")
        lines = [line for line in text.splitlines() if re.search(pattern, line)]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


@pytest.fixture(scope="module")
def triton_verbose(
    oracle_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTriton]:
    """The oracle repository, as generated, with Triton's verbose request log."""
    log = tmp_path_factory.mktemp("log_verbose") / "tritonserver.log"
    with LocalTriton(oracle_repository, log_verbose=1, log_path=log) as server:
        yield server


# --- provenance and warm-up ---------------------------------------------------------------------


def test_served_configs_declare_priority_queue_warmup_and_checkpoint(
    triton_verbose: LocalTriton, oracle_onnx_dir: Path
) -> None:
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2 as mc

    client = grpcclient.InferenceServerClient(triton_verbose.grpc_url)
    for step in contract.STEP_MODELS:
        served = client.get_model_config(step, as_json=True)["config"]
        config = json_format.ParseDict(served, mc.ModelConfig(), ignore_unknown_fields=True)
        batching = config.dynamic_batching
        assert batching.priority_levels == contract.PRIORITY_LEVELS, step
        level = contract.TRITON_PRIORITY[contract.DEFAULT_PRIORITY]
        assert batching.default_priority_level == level, step
        policy = batching.default_queue_policy
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT, step
        assert policy.allow_timeout_override, step
        assert policy.max_queue_size == contract.QUEUE_MAX_REQUESTS, step
        assert policy.default_timeout_microseconds == round(repo.CPU_QUEUE_TIMEOUT_S * 1e6)
        sizes = [w.batch_size for w in config.model_warmup]
        assert sizes == list(contract.WARMUP_BATCH_SIZES), step
    unet = client.get_model_config(contract.UNET_MODEL, as_json=True)["config"]
    checkpoint = unet["parameters"]["checkpoint"]["string_value"]
    sha = repo.sha256_file(oracle_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    assert checkpoint.endswith(f"unet.onnx sha256:{sha}"), checkpoint


def test_every_step_warmed_up_before_ready(triton_verbose: LocalTriton) -> None:
    """Ready means warm: Triton ran each step's warm-up samples while loading it."""
    assert triton_verbose.log_path is not None
    text = triton_verbose.log_path.read_text(errors="replace")
    ready_at = text.index("Started GRPCInferenceService")
    for step in contract.STEP_MODELS:
        for size in contract.WARMUP_BATCH_SIZES:
            line = (
                f"model '{step}' instance {step}_0_0 is running warmup sample 'zeros_batch_{size}'"
            )
            assert line in text, f"{step} did not warm up at batch {size}"
            assert text.index(line) < ready_at


def test_results_record_checkpoint_priority_and_the_answering_version(
    triton_oracle: ServedRepository, oracle_onnx_dir: Path
) -> None:
    sha = repo.sha256_file(oracle_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    with AspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
        result = client.segment(_phantom_image(), priority="urgent")
        default = client.segment(_phantom_image())
    provenance = result.provenance
    assert provenance["priority"] == "urgent" and default.provenance["priority"] == "batch"
    assert provenance["model"] == contract.ENSEMBLE_MODEL and provenance["model_version"] == "1"
    assert provenance["steps"]["unet"]["checkpoint"].endswith(f"unet.onnx sha256:{sha}")
    assert result.document["provenance"]["priority"] == "urgent"


@pytest.fixture
def triton_explicit(oracle_repository: Path, tmp_path: Path) -> Iterator[tuple[LocalTriton, Path]]:
    """A copy of the oracle repository under explicit model control (versions can change)."""
    repository = _copy(oracle_repository, tmp_path / "repo")
    with LocalTriton(
        repository,
        model_control_mode="explicit",
        load_models=[*contract.STEP_MODELS, contract.ENSEMBLE_MODEL],
    ) as server:
        yield server, repository


def test_the_version_that_answered_is_recorded_not_the_one_at_connect(
    triton_explicit: tuple[LocalTriton, Path], oracle_in_process: InProcessEnsemble
) -> None:
    """Before: provenance named the version read at connect time, whatever answered."""
    server, repository = triton_explicit
    slices = _slices(3, seed=4)
    with AspectsClient(server.grpc_url, overlay=False) as client:
        assert client.model_info.version == "1"
        assert client.segment(_phantom_image()).provenance["model_version"] == "1"
        # an update on the server: version 2 of the ensemble replaces version 1
        (repository / contract.ENSEMBLE_MODEL / "2").mkdir()
        admin = grpcclient.InferenceServerClient(server.grpc_url)
        admin.load_model(contract.ENSEMBLE_MODEL)
        assert admin.get_model_metadata(contract.ENSEMBLE_MODEL, as_json=True)["versions"] == ["2"]
        result = client.segment(_phantom_image())
        assert result.provenance["model_version"] == "2"
        assert client.model_info.version == "2"  # steps read again for the new version
        answer = client._segmenter.infer(slices)
    assert answer.model_version == "2"
    np.testing.assert_array_equal(answer.labels, oracle_in_process(slices)[0])


# --- priority -------------------------------------------------------------------------------------


def _request(slices: np.ndarray) -> list[grpcclient.InferInput]:
    stacks = np.ascontiguousarray(np.repeat(slices[:, None], 3, axis=1))
    tensor = grpcclient.InferInput(contract.INPUT_SLICES, list(stacks.shape), "UINT8")
    tensor.set_data_from_numpy(stacks)
    return [tensor]


def test_the_ensemble_hands_each_step_the_request_priority(triton_verbose: LocalTriton) -> None:
    """Triton 2.51: an ensemble accepts any level and every step request gets it; a request
    without one gets each step's default level (batch)."""
    client = grpcclient.InferenceServerClient(triton_verbose.grpc_url)
    inputs = _request(_slices(2, 64, 64))
    for rid, priority in (("probe-urgent", 1), ("probe-batch", 2), ("probe-none", 0)):
        client.infer(contract.ENSEMBLE_MODEL, inputs, request_id=rid, priority=priority)
    expected = {"probe-urgent": "1", "probe-batch": "2", "probe-none": "2"}
    for rid, level in expected.items():
        for step in contract.STEP_MODELS:
            pattern = rf"request id: {rid}, model: {step},.* priority: (\d+),"
            lines = _wait_for_log(triton_verbose, pattern)
            assert lines, f"no {step} request for {rid} in the server log"
            assert re.search(pattern, lines[0]).group(1) == level, (rid, step)  # type: ignore[union-attr]


def test_requests_at_both_priorities_give_the_same_answers(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    slices = _slices(20, seed=5)  # two requests: 16 + 4
    reference = oracle_in_process(slices)
    for priority in contract.TRITON_PRIORITY:
        settings = InferenceSettings(priority=priority)
        segmenter = TritonSegmenter(triton_oracle.server.grpc_url, settings)
        try:
            answer = segmenter.infer(slices)
        finally:
            segmenter.close()
        assert answer.priority == priority and answer.model_version == "1"
        np.testing.assert_array_equal(answer.labels, reference[0])
        np.testing.assert_array_equal(answer.confidence, reference[1])


def test_urgent_overtakes_queued_batch_requests(triton_oracle: ServedRepository) -> None:
    """Ten batch requests of a full batch each queue in front of the unet; an urgent one,
    sent once the first of them is done, is served before most of the rest (first in,
    first out would serve it after all nine)."""
    client = grpcclient.InferenceServerClient(triton_oracle.server.grpc_url)
    inputs = _request(_slices(contract.MAX_BATCH_SIZE, 128, 128, seed=6))
    client.infer(contract.ENSEMBLE_MODEL, inputs)  # warm
    n_batch = 10
    done: list[str] = []
    lock = threading.Lock()
    first_done, all_done = threading.Event(), threading.Event()

    def callback(name: str):
        def on_answer(result, error) -> None:
            with lock:
                done.append(name if error is None else f"{name}: {error}")
                first_done.set()
                if len(done) == n_batch + 1:
                    all_done.set()

        return on_answer

    for k in range(n_batch):
        client.async_infer(
            contract.ENSEMBLE_MODEL, inputs, callback(f"batch{k}"), priority=2, client_timeout=120
        )
    assert first_done.wait(60)
    client.async_infer(
        contract.ENSEMBLE_MODEL, inputs, callback("urgent"), priority=1, client_timeout=120
    )
    assert all_done.wait(120), done
    print(f"completion order: {done}")
    assert all(":" not in name for name in done), done
    after = len(done) - 1 - done.index("urgent")
    assert after >= 4, f"only {after} batch requests finished after the urgent one: {done}"


def test_invalid_priority_is_refused_by_the_api_and_the_cli(
    triton_oracle: ServedRepository, tmp_path: Path
) -> None:
    import nibabel as nib

    url = triton_oracle.server.grpc_url
    with AspectsClient(url, overlay=False) as client, pytest.raises(UsageError, match="priority"):
        client.segment(_phantom_image(), priority="stat")
    with pytest.raises(UsageError, match="--priority"):
        InferenceSettings(priority="high")
    source = tmp_path / "phantom.nii.gz"
    nib.save(_phantom_image(n=3), source)
    base = [sys.executable, "-m", "aspects_client.cli", "segment", str(source), "--url", url]
    out = tmp_path / "out.json"
    bad = subprocess.run(
        [*base, "-o", str(out), "--priority", "stat"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "--priority" in bad.stderr, bad.stderr
    assert not out.exists()
    good = subprocess.run(
        [*base, "-o", str(out), "--priority", "urgent", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert good.returncode == 0, good.stderr
    provenance = json.loads(out.read_text())["provenance"]
    assert provenance["priority"] == "urgent" and provenance["model_version"] == "1"
    assert "unet.onnx sha256:" in provenance["steps"]["unet"]["checkpoint"]


# --- bounded queues: Triton's words and the client's answer ---------------------------------------


@pytest.fixture(scope="module")
def triton_queue_timeout(
    oracle_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTriton]:
    """The unet's queue timeout cut to 1 ms: anything that waits for the unet is refused."""
    repository = _copy(oracle_repository, tmp_path_factory.mktemp("repo_timeout") / "repo")

    def one_millisecond(config) -> None:
        config.dynamic_batching.default_queue_policy.default_timeout_microseconds = 1000

    _edit(repository / contract.UNET_MODEL / repo.CONFIG_FILE, one_millisecond)
    with LocalTriton(repository) as server:
        yield server


@pytest.fixture(scope="module")
def triton_queue_full(
    oracle_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTriton]:
    """The unet's queue cut to one request per priority level."""
    repository = _copy(oracle_repository, tmp_path_factory.mktemp("repo_full") / "repo")

    def one_request(config) -> None:
        config.dynamic_batching.default_queue_policy.max_queue_size = 1

    _edit(repository / contract.UNET_MODEL / repo.CONFIG_FILE, one_request)
    with LocalTriton(repository) as server:
        yield server


def _burst(url: str, n: int = 6) -> list[str]:
    """n full-batch requests at once, raw tritonclient; each error as Triton words it."""
    inputs = _request(_slices(contract.MAX_BATCH_SIZE, 128, 128, seed=7))

    def one(k: int) -> str:
        client = grpcclient.InferenceServerClient(url)
        try:
            client.infer(contract.ENSEMBLE_MODEL, inputs, request_id=f"burst{k}")
            return "ok"
        except InferenceServerException as exc:
            return str(exc)

    grpcclient.InferenceServerClient(url).infer(contract.ENSEMBLE_MODEL, inputs)  # warm
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize(
    ("fixture", "words"),
    [
        ("triton_queue_full", "Exceeds maximum queue size"),
        ("triton_queue_timeout", "Request timeout expired"),
    ],
)
def test_triton_words_its_queue_refusals(
    request: pytest.FixtureRequest, fixture: str, words: str
) -> None:
    server: LocalTriton = request.getfixturevalue(fixture)
    for _ in range(5):  # a loaded machine may send one burst too slowly to overlap
        errors = [e for e in _burst(server.grpc_url) if e != "ok"]
        if errors:
            break
    print(f"{fixture}: {errors[:1]}")
    assert errors, "the burst was never refused"
    for error in errors:
        assert error.startswith("[StatusCode.UNAVAILABLE] in ensemble 'aspects', "), error
        assert error.endswith(words), error


def test_each_priority_level_has_its_own_queue(triton_queue_full: LocalTriton) -> None:
    """The unet's batch queue is full (one request, the rest refused); an urgent request sent
    at that moment is accepted: a flood of batch work cannot shut urgent work out."""
    client = grpcclient.InferenceServerClient(triton_queue_full.grpc_url)
    inputs = _request(_slices(contract.MAX_BATCH_SIZE, 128, 128, seed=8))
    client.infer(contract.ENSEMBLE_MODEL, inputs)  # warm
    outcomes: dict[str, str] = {}
    lock = threading.Lock()
    refused = threading.Event()

    def callback(name: str):
        def on_answer(result, error) -> None:
            with lock:
                outcomes[name] = "ok" if error is None else str(error)
            if error is not None and name.startswith("batch"):
                refused.set()

        return on_answer

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 120
        while len(outcomes) < count:
            assert time.monotonic() < deadline, outcomes
            time.sleep(0.05)

    for burst in range(5):  # a loaded machine may send one burst too slowly to overlap
        sent = len(outcomes)
        for k in range(6):
            client.async_infer(
                contract.ENSEMBLE_MODEL, inputs, callback(f"batch{burst}.{k}"), priority=2
            )
        if refused.wait(30):
            client.async_infer(contract.ENSEMBLE_MODEL, inputs, callback("urgent"), priority=1)
            wait_for(sent + 7)
            break
        wait_for(sent + 6)
    print(f"batch queue full, then urgent: {outcomes}")
    assert any("Exceeds maximum queue size" in v for v in outcomes.values()), outcomes
    assert outcomes["urgent"] == "ok", outcomes


def _volumes(n: int = 6) -> list[np.ndarray]:
    return [_slices(8, seed=k) for k in range(n)]


def _concurrently(segmenter: TritonSegmenter, volumes: list[np.ndarray]) -> list:
    def one(slices: np.ndarray):
        try:
            return segmenter.infer(slices)
        except ServerUnavailableError as exc:
            return exc

    with ThreadPoolExecutor(len(volumes)) as pool:
        return list(pool.map(one, volumes))


def test_a_queue_timeout_is_a_clear_server_unavailable_error(
    triton_queue_timeout: LocalTriton,
) -> None:
    volumes = _volumes()
    segmenter = TritonSegmenter(triton_queue_timeout.grpc_url, InferenceSettings(retries=0))
    errors: list[Exception] = []
    try:
        segmenter.infer(volumes[0])
        for _ in range(5):
            errors = [r for r in _concurrently(segmenter, volumes) if isinstance(r, Exception)]
            if errors:
                break
    finally:
        segmenter.close()
    assert errors, "six concurrent volumes never waited 1 ms for the unet"
    print(f"queue timeout, no retries: {errors[0]}")
    for error in errors:
        text = str(error)
        assert "unavailable or overloaded after 1 attempts" in text, text
        assert "Request timeout expired" in text and "UNAVAILABLE" in text, text
        assert "waited in a server queue past its queue timeout" in text, text


def test_a_queue_timeout_is_retried(
    triton_queue_timeout: LocalTriton, oracle_in_process: InProcessEnsemble
) -> None:
    volumes = _volumes()
    settings = InferenceSettings(retries=8, backoff_s=0.2, timeout_s=60, deadline_s=120)
    segmenter = TritonSegmenter(triton_queue_timeout.grpc_url, settings)
    try:
        segmenter.infer(volumes[0])
        retried = 0
        for _ in range(5):
            before = segmenter.retried
            results = _concurrently(segmenter, volumes)
            failed = [r for r in results if isinstance(r, Exception)]
            assert not failed, failed[0]
            for slices, answer in zip(volumes, results, strict=True):
                np.testing.assert_array_equal(answer.labels, oracle_in_process(slices)[0])
            retried = segmenter.retried - before
            if retried:
                break
    finally:
        segmenter.close()
    assert retried > 0, "nothing was refused: the retries were not exercised"


# --- only the ensemble is public: restricted APIs ------------------------------------------


def test_restricted_api_args_keep_repository_control_behind_a_header(
    oracle_repository: Path,
) -> None:
    args = repo.restricted_api_args("aspects-admin-key", "s3cret")
    with LocalTriton(oracle_repository, extra_args=args) as server:
        with AspectsClient(server.grpc_url, overlay=False) as client:  # metadata, config, infer
            result = client.segment(_phantom_image(), priority="urgent")
        assert "checkpoint" in result.provenance["steps"]["unet"]
        admin = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as refused:
            admin.get_model_repository_index()
        print(f"restricted: {refused.value}")
        assert "This protocol is restricted" in str(refused.value)
        header = {repo.GRPC_RESTRICTED_HEADER_PREFIX + "aspects-admin-key": "s3cret"}
        index = admin.get_model_repository_index(headers=header, as_json=True)
        names = {m["name"] for m in index["models"]}
        assert names == {contract.ENSEMBLE_MODEL, *contract.STEP_MODELS}
