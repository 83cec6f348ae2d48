"""Load: 8 volumes at once from threads (all correct), then a bounded soak of 200 volumes
at concurrency 8 with no errors and no growth of the client's memory."""

from __future__ import annotations

import gzip
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aspects_client import contract
from aspects_client.client import AspectsClient
from aspects_client.geometry import geometry_of
from aspects_client.rasterize import rasterize_document
from aspects_client.storage import S3Settings
from aspects_synth import reorder

from .oracle_cases import expected_classes, painted_phantom

pytestmark = pytest.mark.integration


def oracle_case(seed: int, order: str, n_slices: int = 3):
    """A 512x512 painted phantom at the ganglionic level, in a given voxel order."""
    return reorder(painted_phantom(seed=seed, n_slices=n_slices, centre_z_mm=5.0), order)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_eight_volumes_in_parallel_from_threads(triton_oracle, s3_server, s3_client) -> None:
    s3_client.create_bucket(Bucket="load")
    orders = ("RAS", "LPS", "PIR", "LAS", "ASL", "RPI", "ILP", "SLA")
    cases = {}
    for i, order in enumerate(orders):
        variant = oracle_case(seed=20 + i, order=order)
        key = f"v{i}_{order}.nii.gz"
        s3_client.put_object(
            Bucket="load", Key=key, Body=gzip.compress(variant.image.to_bytes(), compresslevel=1)
        )
        cases[f"s3://load/{key}"] = variant
    settings = S3Settings(
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    )
    with (
        AspectsClient(triton_oracle.server.grpc_url, s3=settings, overlay=False) as client,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        results = dict(zip(cases, pool.map(client.segment, cases), strict=True))
    for url, variant in cases.items():
        result = results[url]
        classes, hemis = rasterize_document(result.document)
        geometry = geometry_of(variant.image.affine, variant.image.shape)
        want = expected_classes(variant.classes, geometry)
        assert np.count_nonzero(want) > 1000, url
        np.testing.assert_array_equal(classes, want, err_msg=url)
        labelled = (want > 0) & (variant.classes > 0)  # the truth has hemispheres there
        assert np.array_equal(hemis[labelled], variant.hemispheres[labelled]), url
        assert result.provenance["model"] == contract.ENSEMBLE_MODEL
        steps = result.provenance["steps"]
        assert set(steps) == set(contract.STEP_MODELS)
        assert all(step["runtime"] == "python" for step in steps.values())  # the CPU runtime
        assert set(result.timings_s) >= {"download", "decode_validate", "inference"}


def truth_voxel_counts(expected: np.ndarray) -> dict[str, int]:
    """Voxels of each region (both hemispheres together) in the oracle's known answer."""
    counts = np.bincount(expected.ravel(), minlength=contract.NUM_CLASSES)
    return {r.key: int(counts[r.index]) for r in contract.REGIONS}


def summary_voxel_counts(summary: dict) -> dict[str, int]:
    return {
        key: sum(int(e["voxels"]) for e in by_hemi.values()) for key, by_hemi in summary.items()
    }


@pytest.mark.timeout(900)
def test_soak_200_volumes_no_errors_no_memory_growth(triton_oracle) -> None:
    variant = oracle_case(seed=40, order="LPS", n_slices=3)
    raw = gzip.compress(variant.image.to_bytes(), compresslevel=1)
    # the independent answer: the oracle's known labels of the painted truth
    want = expected_classes(variant.classes, geometry_of(variant.image.affine, variant.image.shape))
    want_counts = truth_voxel_counts(want)
    assert sum(c > 0 for c in want_counts.values()) >= 5 and sum(want_counts.values()) > 10_000
    with AspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
        first = client.segment(raw)
        # the reference every later volume is compared with is itself checked against truth
        classes, hemis = rasterize_document(first.document)
        np.testing.assert_array_equal(classes, want)
        labelled = (want > 0) & (variant.classes > 0)
        assert np.array_equal(hemis[labelled], variant.hemispheres[labelled]), "wrong hemisphere"
        np.testing.assert_array_equal(np.asanyarray(first.label_image.dataobj), want)
        assert summary_voxel_counts(first.document["summary"]) == want_counts
        reference = first.document["summary"]
        with ThreadPoolExecutor(max_workers=8) as pool:

            def run(n: int) -> int:
                summaries = [client.segment(raw).document["summary"] for _ in range(n)]
                return sum(
                    s == reference and summary_voxel_counts(s) == want_counts for s in summaries
                )

            warm = sum(pool.map(run, [5] * 8))  # 40 volumes
            rss_after_warm_up = rss_mib()
            soak = sum(pool.map(run, [20] * 8))  # 160 volumes
            rss_after_soak = rss_mib()
    assert warm + soak == 200, "every volume must come back with the known answer"
    growth = rss_after_soak - rss_after_warm_up
    assert growth < 64, f"client RSS grew {growth:.0f} MiB over 160 volumes"
