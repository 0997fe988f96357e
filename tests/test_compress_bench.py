"""The compression micro-benchmark runs (tiny shapes; the real numbers come from the CLI)."""

import pytest

from ditkit.compress import bench

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_linears_and_forward_small():
    rows = bench.bench_linears(batch=1, tokens=8, schemes=("w8a8", "w4a8-cached-rot64"), repeats=1,
                               shapes={"fc": (128, 64)}, group_size=64)
    assert rows[0]["M"] == 8 and rows[0]["w8a8_speedup"] > 0 and rows[0]["w4a8-cached-rot64_bytes"] > 0
    f = bench.bench_forward("shapes-tiny", batch=1, scheme="w4a8-cached", repeats=1)
    assert f["speedup"] > 0 and f["weight_bytes_quantized"] < f["weight_bytes_fp32"]
    assert f["resident_bytes_quantized"] > f["weight_bytes_quantized"]  # the int8 cache is counted
    assert bench.parse_variant("w4a8-cached-rot64") == ("w4a8", {"cache_int8": True, "rotate": 64})
    with pytest.raises(ValueError):
        bench.parse_variant("w8a8-fast")
